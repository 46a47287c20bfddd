# shellcheck shell=bash
# Step "api-lb": nginx (stream) + keepalived in front of the apiservers (seed 004), installed
# by step "lb-packages".
# Env: KHW_VRRP_INTERFACE (empty = detect), KHW_IP, KHW_LB_PORT
# The LB hosts' steps run one after another; each ends only when its nginx listens again, so a
# change to every LB host restarts them one at a time and the VIP always has a live host.
# the stream module is dynamic on most distributions
mod=$(find /usr/lib/nginx/modules /usr/lib64/nginx/modules -name ngx_stream_module.so 2>/dev/null | head -1 || true)
want=""; [ -z "$mod" ] || want="load_module $mod;"
if [ "$(cat /etc/kube-hardway/lb/nginx-modules.conf 2>/dev/null)" != "$want" ]; then
  printf '%s\n' "$want" > /etc/kube-hardway/lb/nginx-modules.conf; khw_note_changed /etc/kube-hardway/lb/nginx-modules.conf
fi
# (awk reads all of ip's output: an early exit would kill ip with SIGPIPE under pipefail)
iface=${KHW_VRRP_INTERFACE:-$(ip -o -4 addr show | awk -v ip="$KHW_IP" '{split($4, a, "/")} a[1]==ip && !f {print $2; f=1}')}
[ -n "$iface" ] || khw_die "no interface holds $KHW_IP; set api.vrrpInterface"
conf=$(sed "s/@VRRP_INTERFACE@/$iface/" /etc/kube-hardway/lb/keepalived.conf.in)
old=$(cat /etc/kube-hardway/lb/keepalived.conf 2>/dev/null || true)
if [ "$old" != "$conf" ]; then
  printf '%s\n' "$conf" > /etc/kube-hardway/lb/keepalived.conf
  chmod 600 /etc/kube-hardway/lb/keepalived.conf
  khw_note_changed /etc/kube-hardway/lb/keepalived.conf
  # An LB host leaving keeps its keepalived until its own teardown, which Pulumi runs after
  # every update. Told of the new peer list now, this host would stop advertising to it; the
  # leaver, hearing no master, would take the VIP as well (3.6 s later) and the two would hold
  # it at once, resetting connections. So the running keepalived keeps its list: the leaver
  # stays a backup until it stops; the list on disk applies at the next reload or restart.
  if [ -n "$old" ] && left=$(khw_vrrp_only_left "$old" "$conf"); then
    khw_forget_changed /etc/kube-hardway/lb/keepalived.conf /etc/kube-hardway/lb/keepalived.conf.in
    khw_log "VRRP peer(s) leaving: $left; keepalived keeps advertising to them until they stop (not reloaded)"
  fi
fi
# a changed upstream list (a control plane added or removed) or peer list (an LB host joining)
# is reloaded: nginx finishes its connections, keepalived keeps the VIP
khw_service_reload kube-apiserver-lb.service /etc/kube-hardway/lb/nginx
khw_service_reload kube-apiserver-vip.service /etc/kube-hardway/lb/keepalived /etc/kube-hardway/lb/check-apiserver.sh
KHW_UNIT=kube-apiserver-lb.service khw_wait 60 "nginx listening on port $KHW_LB_PORT" \
  sh -c "ss -Hltn 'sport = :$KHW_LB_PORT' | grep -q ."
KHW_UNIT=kube-apiserver-vip.service khw_wait 60 "keepalived running" systemctl is-active kube-apiserver-vip.service
khw_log "API load balancer running on $iface"
