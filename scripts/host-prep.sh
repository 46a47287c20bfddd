# shellcheck shell=bash
# Step "prep": preflight checks, then host preparation (seeds 000, 003, 004).
# Env: KHW_ARCH KHW_PORTS ("port:allowed-process,...") KHW_HOSTS_BLOCK KHW_DISABLE_FIREWALL
#      KHW_TIME_SYNC KHW_MODULES KHW_OOM_SCORE_ADJ KHW_SERVICE_IP (workers: the kubernetes Service)
# The sysctl and modules-load files were written above by khw_put.

# --- preflight: fail early with a message that says what is wrong on this host
[ -d /run/systemd/system ] || khw_die "systemd is not running (PID 1 must be systemd)"
# shellcheck disable=SC1091
os=$(. /etc/os-release 2>/dev/null && echo "${PRETTY_NAME:-$ID}") || os=unknown
case "$(uname -m)" in x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; *) arch=$(uname -m) ;; esac
[ "$arch" = "$KHW_ARCH" ] || khw_die "host is $arch but the stack says arch: $KHW_ARCH"
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then cgroup=v2
elif [ -d /sys/fs/cgroup/memory ]; then cgroup=v1
else khw_die "no usable cgroup hierarchy under /sys/fs/cgroup"; fi
missing=""
for t in systemctl tar sha256sum base64 mktemp ip iptables openssl; do command -v "$t" >/dev/null || missing="$missing $t"; done
command -v curl >/dev/null || command -v wget >/dev/null || missing="$missing curl|wget"
[ -z "$missing" ] || khw_die "required tools missing:$missing"
# a port is free, or held by the component we install there (a re-run)
for spec in $KHW_PORTS; do
  port=${spec%%:*}; allowed=${spec#*:}
  holder=$(ss -Hltnp "sport = :$port" 2>/dev/null | sed -n 's/.*users:(("\([^"]*\)".*/\1/p' | sed -n 1p)
  if [ -n "$holder" ] && ! printf ',%s,' "$allowed" | grep -q ",$holder,"; then
    khw_die "port $port is in use by $holder (needed by ${allowed%%,*})"
  fi
done
# runc sets each pod's oom_score_adj, negative for system pods: that needs CAP_SYS_RESOURCE,
# which a system container (systemd-nspawn, LXC) may not have; runc then fails every sandbox
# with "can't get final child's PID from pipe"
if [ "$KHW_OOM_SCORE_ADJ" = true ] && [ $(( 0x$(awk '/^CapBnd:/ {print $2}' /proc/self/status) >> 24 & 1 )) = 0 ]; then
  khw_die "this host cannot lower a process's oom_score_adj (no CAP_SYS_RESOURCE: a container?); set hostPrep.restrictOomScoreAdj: true"
fi
# Service IPs are DNATed by kube-proxy after the kernel routed the packet: without a route to
# them (no default route) a host-network client (flannel, kubelet) gets "network is unreachable"
if [ -n "${KHW_SERVICE_IP:-}" ] && ! ip route get "$KHW_SERVICE_IP" >/dev/null 2>&1; then
  khw_die "no route to the service network ($KHW_SERVICE_IP): Kubernetes needs a default route (or one to network.serviceCidr)"
fi
khw_log "preflight ok: $os, $arch, cgroup $cgroup"

# --- swap off now and at boot (kubelet refuses to run with swap: failSwapOn)
swapoff -a
if grep -Eq '^[^#].*[[:space:]]swap[[:space:]]' /etc/fstab 2>/dev/null; then
  sed -ri 's/^([^#].*[[:space:]]swap[[:space:]].*)$/#khw-swap# \1/' /etc/fstab
  khw_log "commented swap out of /etc/fstab"
fi

# --- SELinux permissive where present (seed 004); containers need relabel support otherwise
if command -v getenforce >/dev/null && [ "$(getenforce)" = Enforcing ]; then
  setenforce 0
  sed -i 's/^SELINUX=enforcing/SELINUX=permissive/' /etc/selinux/config
  khw_log "SELinux set to permissive"
fi

# --- kernel modules: modprobe, or accept a feature that is built into the kernel
builtin() {
  case $1 in
    br_netfilter) [ -d /proc/sys/net/bridge ] ;;
    overlay) grep -qw overlay /proc/filesystems ;;
    nf_conntrack) [ -d /proc/sys/net/netfilter ] ;;
    ip_vs*) [ -d /proc/sys/net/ipv4/vs ] || [ -e /proc/net/ip_vs ] ;;
    *) [ -d "/sys/module/$1" ] ;;
  esac
}
for m in $KHW_MODULES; do
  modprobe "$m" 2>/dev/null || builtin "$m" || khw_die "kernel module $m is neither loadable nor built in"
done

# --- sysctls: apply; in containers some are read-only, so accept values that already match
if ! out=$(sysctl -p /etc/sysctl.d/99-kubernetes.conf 2>&1); then
  while read -r key _ want; do
    case "$key" in ''|'#'*) continue ;; esac
    have=$(sysctl -n "$key" 2>/dev/null) || khw_die "sysctl $key: $out"
    [ "$have" = "$want" ] || khw_die "cannot set $key=$want (is $have): $out"
  done < /etc/sysctl.d/99-kubernetes.conf
fi

# --- hostname and /etc/hosts (every cluster host by name, seed 004)
if [ "$(hostname)" != "$KHW_HOST" ]; then
  hostnamectl set-hostname "$KHW_HOST" 2>/dev/null || { hostname "$KHW_HOST"; echo "$KHW_HOST" > /etc/hostname; }
  khw_log "hostname set to $KHW_HOST"
fi
if [ -n "${KHW_HOSTS_BLOCK:-}" ]; then
  block=$(printf '# BEGIN kube-hardway\n%s\n# END kube-hardway' "$(printf '%s' "$KHW_HOSTS_BLOCK" | base64 -d)")
  current=$(sed -n '/^# BEGIN kube-hardway$/,/^# END kube-hardway$/p' /etc/hosts)
  if [ "$current" != "$block" ]; then
    sed -i '/^# BEGIN kube-hardway$/,/^# END kube-hardway$/d' /etc/hosts
    printf '%s\n' "$block" >> /etc/hosts
    khw_log "updated /etc/hosts"
  fi
fi

# --- time sync: certificates and etcd leases need agreeing clocks
if [ "$KHW_TIME_SYNC" = true ]; then
  synced=""
  for u in chronyd chrony systemd-timesyncd ntpd ntp; do
    if systemctl cat "$u.service" >/dev/null 2>&1; then
      systemctl enable --now "$u.service" >/dev/null 2>&1 && synced=$u && break
    fi
  done
  [ -n "$synced" ] || khw_log "WARNING: no time sync service (chrony, systemd-timesyncd, ntpd) found"
fi

# --- firewall: the cluster needs its ports open between hosts (see README "Firewall")
for fw in firewalld ufw; do
  if systemctl is-active --quiet "$fw" 2>/dev/null; then
    if [ "$KHW_DISABLE_FIREWALL" = true ]; then
      systemctl disable --now "$fw" >/dev/null 2>&1
      khw_log "stopped and disabled $fw (hostPrep.disableFirewall)"
    else
      khw_log "WARNING: $fw is active: open the ports listed in the README or set hostPrep.disableFirewall"
    fi
  fi
done
khw_log "host prepared"
