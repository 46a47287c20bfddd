# shellcheck shell=bash
# Teardown of step "lb-packages": the packages this step installed (none it found there).
if [ -f /var/lib/kube-hardway/lb-packages ]; then
  # shellcheck disable=SC2046
  if command -v apt-get >/dev/null; then DEBIAN_FRONTEND=noninteractive apt-get purge -y -q $(cat /var/lib/kube-hardway/lb-packages) >/dev/null 2>&1
  elif command -v dnf >/dev/null; then dnf remove -y -q $(cat /var/lib/kube-hardway/lb-packages)
  fi
  rm -f /var/lib/kube-hardway/lb-packages; rmdir /var/lib/kube-hardway 2>/dev/null
fi
