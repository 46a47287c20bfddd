# shellcheck shell=bash
# Teardown of step "prep": undo what it changed (files are removed after this by khw_remove).
sed -i '/^# BEGIN kube-hardway$/,/^# END kube-hardway$/d' /etc/hosts
sed -ri 's/^#khw-swap# //' /etc/fstab
rm -rf /var/cache/kube-hardway
