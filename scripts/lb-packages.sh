# shellcheck shell=bash
# Step "lb-packages": nginx (with its stream module) and keepalived from the host's package
# repositories, for the API load balancer (seed 004). A step of its own so that the LB hosts
# install in parallel; `api-lb`, which restarts them one host at a time, only configures.
pkgs=""
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || pkgs="$pkgs nginx"
command -v keepalived >/dev/null || [ -x /usr/sbin/keepalived ] || pkgs="$pkgs keepalived"
if [ -n "$pkgs" ]; then
  khw_log "installing$pkgs from the host's package repositories"
  # shellcheck disable=SC2086
  if command -v apt-get >/dev/null; then
    # package lists may be missing or stale on a fresh host: refresh them once if the install fails
    { DEBIAN_FRONTEND=noninteractive apt-get install -y -q $pkgs >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $pkgs >/dev/null; }; } \
      || khw_die "apt-get install$pkgs failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q libnginx-mod-stream >/dev/null 2>&1 || true
  elif command -v dnf >/dev/null; then dnf install -y -q $pkgs nginx-mod-stream || khw_die "dnf install$pkgs failed"
  elif command -v yum >/dev/null; then yum install -y -q $pkgs nginx-mod-stream || khw_die "yum install$pkgs failed"
  else khw_die "install$pkgs first: no apt-get, dnf or yum here"; fi
  mkdir -p /var/lib/kube-hardway
  # shellcheck disable=SC2086
  printf '%s\n' $pkgs >> /var/lib/kube-hardway/lb-packages
fi
khw_log "nginx and keepalived installed"
