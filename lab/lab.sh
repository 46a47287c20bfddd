#!/usr/bin/env bash
# Local lab machines for kube-hardway: Debian bookworm under systemd-nspawn, systemd as PID 1,
# each with its own address on a private bridge and root SSH by key.
#
#   lab/lab.sh up [N]      boot lab1..labN (default 3) on 10.77.0.11.. (bridge labbr0, 10.77.0.1)
#   lab/lab.sh down        stop every machine; remove overlays, cgroups, mounts and the bridge
#   lab/lab.sh ssh I [CMD] a shell (or CMD) on labI
#   lab/lab.sh status      which machines run
#
# The template (debootstrap) is cached in $LAB_CACHE and reused; each machine is an overlay on it.
# Lab traffic stays on the bridge: nothing is routed (the outer ip_forward stays 0).
# The pitfalls of ../shared/reference/README.md are handled: per-machine cgroups in every v1
# hierarchy, v1 controllers remounted rw inside, the keyring syscalls allowed for runc, an ext4-
# backed /var/lib/containerd, writable API VFS for sysctls, /dev/kmsg for the kubelet. Run lab
# suites one at a time: kernel
# sysctls are shared with the outer machine.
set -euo pipefail

LAB_CACHE=${LAB_CACHE:-/var/cache/kube-hardway-lab}
LAB_STATE=${LAB_STATE:-/var/lib/kube-hardway-lab}
BRIDGE=labbr0
NET=10.77.0
MIRROR_URL=${LAB_DEBIAN_MIRROR:-http://deb.debian.org/debian}
PACKAGES=systemd,systemd-sysv,dbus,libpam-systemd,openssh-server,iproute2,sudo,iputils-ping,procps,kmod,iptables,nftables,ca-certificates,curl
KEY=$LAB_STATE/id_ed25519

log() { printf '[lab] %s\n' "$*" >&2; }
die() { printf '[lab] ERROR: %s\n' "$*" >&2; exit 1; }
ssh_opts() {
  printf '%s\n' -i "$KEY" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR \
    -o ConnectTimeout=2 -o BatchMode=yes
}
addr() { echo "$NET.$((10 + $1))"; }
memcg() { echo "/sys/fs/cgroup/memory$(awk -F: '$2=="memory"{print $3}' /proc/self/cgroup)"; }
cg_dirs() { # a cgroup per machine in every v1 hierarchy, so machines do not share one
  local c
  for c in systemd unified cpu cpuacct cpuset blkio pids freezer devices; do echo "/sys/fs/cgroup/$c/kh-lab$1"; done
  echo "$(memcg)/kh-lab$1"
}

need_tools() {
  local missing=""
  command -v debootstrap >/dev/null || missing="$missing debootstrap"
  command -v systemd-nspawn >/dev/null || missing="$missing systemd-container"
  if [ -n "$missing" ]; then
    log "installing$missing"
    # shellcheck disable=SC2086
    apt-get install -y -q $missing >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q $missing >/dev/null; }
  fi
}

template() { # the cached, prepared root filesystem every machine overlays
  local t=$LAB_CACHE/template
  [ -f "$t/.kh-ready" ] && [ -f "$t/etc/apt/sources.list" ] && return
  mkdir -p "$LAB_CACHE"
  if [ ! -f "$t/etc/os-release" ]; then
    log "debootstrap bookworm (first run only, about a minute)"
    rm -rf "$t.part"
    debootstrap --variant=minbase --include="$PACKAGES" bookworm "$t.part" "$MIRROR_URL" > "$LAB_CACHE/debootstrap.log" 2>&1 \
      || die "debootstrap failed: see $LAB_CACHE/debootstrap.log"
    mv "$t.part" "$t"
  fi
  : > "$t/etc/machine-id"
  rm -f "$t"/etc/ssh/ssh_host_*
  mkdir -p "$t/etc/systemd/system/ssh.service.d" "$t/root/.ssh"
  # each machine makes its own host keys at first boot
  printf '[Service]\nExecStartPre=\nExecStartPre=/usr/bin/ssh-keygen -A\nExecStartPre=/usr/sbin/sshd -t\n' \
    > "$t/etc/systemd/system/ssh.service.d/keys.conf"
  # systemd-networkd waits for udev forever in a container: a oneshot sets the address instead
  cat > "$t/etc/systemd/system/lab-net.service" <<'UNIT'
[Unit]
Description=lab address
Before=network-online.target ssh.service
[Service]
Type=oneshot
EnvironmentFile=/etc/lab-net.env
ExecStart=/sbin/ip link set host0 up
ExecStart=/sbin/ip addr replace ${ADDR} dev host0
RemainAfterExit=yes
[Install]
WantedBy=multi-user.target
UNIT
  chroot "$t" systemctl enable lab-net.service ssh.service >/dev/null 2>&1
  chroot "$t" systemctl mask systemd-networkd.service systemd-networkd-wait-online.service >/dev/null 2>&1 || true
  # the machines reach no Debian mirror: packages come from the lab's offline repository
  rm -f "$t"/etc/apt/sources.list.d/*
  echo "deb [trusted=yes] file:/srv/lab-repo ./" > "$t/etc/apt/sources.list"
  touch "$t/.kh-ready"
}

lab_key() {
  mkdir -p "$LAB_STATE"
  [ -f "$KEY" ] || ssh-keygen -q -t ed25519 -N "" -C kube-hardway-lab -f "$KEY"
}

bridge_up() {
  ip link show "$BRIDGE" >/dev/null 2>&1 && return
  ip link add "$BRIDGE" type bridge
  ip addr add "$NET.1/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
}

clean_one() { # a machine that is not running starts from a fresh overlay
  local d=$LAB_STATE/m$1 g
  umount "$d/merged" 2>/dev/null || umount -l "$d/merged" 2>/dev/null || true
  for g in $(cg_dirs "$1"); do [ -d "$g" ] && find "$g" -depth -type d -exec rmdir {} \; 2>/dev/null; done
  rm -rf "$d"
}

# the kubelet reads the kernel log for OOM events (kind links /dev/kmsg for the same reason)
KMSG=""; [ -e /dev/kmsg ] && KMSG="--bind-ro=/dev/kmsg --capability=CAP_SYSLOG"

drop_veth() { # the host side of a machine's veth outlives it until its netns is gone
  local n=0
  while ip link show "vb-lab$1" >/dev/null 2>&1; do
    n=$((n + 1))
    if [ "$n" -gt 50 ]; then ip link delete "vb-lab$1" 2>/dev/null || true; break; fi
    sleep 0.1
  done
}

up_one() {
  local i=$1 d=$LAB_STATE/m$1 g
  clean_one "$i"
  drop_veth "$i"
  mkdir -p "$d/upper" "$d/work" "$d/merged" "$d/containerd" "$LAB_CACHE/repo"
  mountpoint -q "$d/merged" || mount -t overlay overlay \
    -o "lowerdir=$LAB_CACHE/template,upperdir=$d/upper,workdir=$d/work" "$d/merged"
  echo "lab$i" > "$d/merged/etc/hostname"
  printf 'ADDR=%s/24\n' "$(addr "$i")" > "$d/merged/etc/lab-net.env"
  # a default route via the bridge: a host-network client of a Service IP (flannel, kubelet) needs
  # a route before kube-proxy's DNAT; the outer machine does not forward, so nothing leaves
  mkdir -p "$d/merged/etc/systemd/system/lab-net.service.d"
  printf '[Service]\nExecStart=/sbin/ip route replace default via %s.1 dev host0\n' "$NET" \
    > "$d/merged/etc/systemd/system/lab-net.service.d/route.conf"
  install -m 0600 "$KEY.pub" "$d/merged/root/.ssh/authorized_keys"
  for g in $(cg_dirs "$i"); do mkdir -p "$g"; done
  cat /sys/fs/cgroup/cpuset/cpuset.cpus > "/sys/fs/cgroup/cpuset/kh-lab$i/cpuset.cpus"
  cat /sys/fs/cgroup/cpuset/cpuset.mems > "/sys/fs/cgroup/cpuset/kh-lab$i/cpuset.mems"
  # shellcheck disable=SC2016
  SYSTEMD_NSPAWN_API_VFS_WRITABLE=1 setsid bash -c '
    for g in '"$(cg_dirs "$i" | tr '\n' ' ')"'; do echo $$ > "$g/cgroup.procs"; done
    exec systemd-nspawn --boot --register=no --keep-unit --resolv-conf=off -M "lab$0" -D "$1/merged" \
      --network-bridge='"$BRIDGE"' --bind="$1/containerd:/var/lib/containerd" \
      --bind-ro='"$LAB_CACHE"'/repo:/srv/lab-repo \
      --system-call-filter="add_key keyctl request_key" '"$KMSG"'' "$i" "$d" \
    > "$d/console.log" 2>&1 < /dev/null &
  echo $! > "$d/pid"
}

wait_ssh() {
  local i=$1 n=0
  # shellcheck disable=SC2046
  until ssh $(ssh_opts) "root@$(addr "$i")" true 2>/dev/null; do
    kill -0 "$(cat "$LAB_STATE/m$i/pid")" 2>/dev/null || die "lab$i stopped while booting: $(tail -3 "$LAB_STATE/m$i/console.log")"
    n=$((n + 1)); [ "$n" -lt 150 ] || die "lab$i is not SSH-ready after 30s (see $LAB_STATE/m$i/console.log)"
    sleep 0.2
  done
}

post_boot() { # v1 controllers are mounted read-only inside: runc needs them writable
  local init
  init=$(pgrep -P "$(cat "$LAB_STATE/m$1/pid")" | head -1)
  # shellcheck disable=SC2016
  nsenter -t "$init" -m sh -c \
    'for c in cpu cpuacct cpuset blkio pids freezer devices memory; do mount -o remount,bind,rw /sys/fs/cgroup/$c 2>/dev/null; done; true'
}

up() {
  local n=${1:-3} i t0=$SECONDS
  [ "$(id -u)" = 0 ] || die "run as root"
  need_tools; lab_key; template; bridge_up
  for i in $(seq 1 "$n"); do
    if [ -f "$LAB_STATE/m$i/pid" ] && kill -0 "$(cat "$LAB_STATE/m$i/pid")" 2>/dev/null; then continue; fi
    up_one "$i"
  done
  for i in $(seq 1 "$n"); do wait_ssh "$i"; post_boot "$i"; done
  log "$n machines ready in $((SECONDS - t0))s: $(for i in $(seq 1 "$n"); do printf 'lab%s=%s ' "$i" "$(addr "$i")"; done)"
}

down() {
  local d p
  for d in "$LAB_STATE"/m*; do
    [ -d "$d" ] || continue
    p=$(cat "$d/pid" 2>/dev/null || true)
    [ -z "$p" ] || kill -TERM "$p" 2>/dev/null || true
  done
  for d in "$LAB_STATE"/m*; do
    [ -d "$d" ] || continue
    p=$(cat "$d/pid" 2>/dev/null || true)
    if [ -n "$p" ]; then
      for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$p" 2>/dev/null || true
    fi
    clean_one "${d##*/m}"
    drop_veth "${d##*/m}"
  done
  ip link show "$BRIDGE" >/dev/null 2>&1 && ip link delete "$BRIDGE"
  log "lab is down"
}

case "${1:-}" in
  up) up "${2:-3}" ;;
  down) down ;;
  ssh) shift; i=$1; shift
       # shellcheck disable=SC2046
       exec ssh $(ssh_opts) "root@$(addr "$i")" "$@" ;;
  status) for d in "$LAB_STATE"/m*; do [ -d "$d" ] && { p=$(cat "$d/pid" 2>/dev/null || true)
            if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then echo "lab${d##*/m} up $(addr "${d##*/m}")"; else echo "lab${d##*/m} down"; fi; }; done; true ;;
  *) sed -n '2,12p' "$0"; exit 2 ;;
esac
