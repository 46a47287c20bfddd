#!/usr/bin/env bash
# Shared helpers, prepended to every remote step (see components/remote.py).
# A step is one SSH round trip: this library, the step's files (base64) and the step script.
# Files are written only when their content or mode differs, so a re-run changes nothing
# and services restart only when one of their own files changed.
set -Eeuo pipefail
# an unexpected failure names host, step, line and command instead of ending the step silently
trap 'khw_log "ERROR: exit $? at line $LINENO: $BASH_COMMAND" >&2' ERR
export PATH=/opt/kubernetes/bin:/opt/etcd/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

KHW_CHANGED=()

khw_log() { printf '[%s %s] %s\n' "${KHW_HOST:-?}" "${KHW_STEP:-?}" "$*"; }
khw_die() { printf '[%s %s] ERROR: %s\n' "${KHW_HOST:-?}" "${KHW_STEP:-?}" "$*" >&2; exit 1; }

# khw_put PATH MODE BASE64: install a file atomically when its content or mode differ.
khw_put() {
  local path=$1 mode=$2 data=$3 tmp
  mkdir -p "$(dirname "$path")"
  tmp=$(mktemp "$(dirname "$path")/.khw.XXXXXX")
  printf '%s' "$data" | base64 -d > "$tmp"
  chmod "$mode" "$tmp"
  if [ -f "$path" ] && cmp -s "$tmp" "$path" && [ "$(stat -c %a "$path")" = "${mode#0}" ]; then
    rm -f "$tmp"; return 0
  fi
  mv -f "$tmp" "$path"
  KHW_CHANGED+=("$path")
  khw_log "wrote $path"
}

# khw_changed [PREFIX...]: true when any file written by this run starts with a prefix.
khw_changed() {
  local p c
  [ "${#KHW_CHANGED[@]}" -gt 0 ] || return 1
  [ "$#" -gt 0 ] || return 0
  for c in "${KHW_CHANGED[@]}"; do
    for p in "$@"; do case "$c" in "$p"*) return 0 ;; esac; done
  done
  return 1
}

# khw_service UNIT [PREFIX...]: enable the unit; restart it when its files changed, else
# just make sure it runs. --no-block: etcd (Type=notify) only reports ready with quorum.
khw_service() {
  local unit=$1; shift
  if khw_changed "/etc/systemd/system/$unit"; then systemctl daemon-reload; fi
  systemctl enable "$unit" >/dev/null 2>&1 || systemctl enable "$unit"
  if khw_changed "/etc/systemd/system/$unit" "$@"; then
    khw_log "restarting $unit"
    systemctl restart --no-block "$unit"
  elif ! systemctl is-active --quiet "$unit"; then
    khw_log "starting $unit"
    systemctl start --no-block "$unit"
  fi
}

# khw_wait TIMEOUT_S WHAT CMD...: poll CMD until it succeeds; fail with WHAT, the last output
# and, when KHW_UNIT names the service being waited for, its last journal lines.
khw_wait() {
  local timeout=$1 what=$2 out=""; shift 2
  local deadline=$((SECONDS + timeout))
  until out=$("$@" 2>&1); do
    if [ "$SECONDS" -ge "$deadline" ]; then
      [ -z "${KHW_UNIT:-}" ] || khw_unit_log "$KHW_UNIT" >&2
      khw_die "timed out after ${timeout}s waiting for $what: ${out:0:400}"
    fi
    sleep 1
  done
}

# khw_unit_log UNIT: last journal lines, to explain a failed wait.
khw_unit_log() { journalctl -u "$1" -n 20 --no-pager 2>/dev/null || true; }

# khw_remove_unit UNIT: stop, disable and delete a unit file (teardown).
khw_remove_unit() {
  local unit=$1
  systemctl disable --now "$unit" >/dev/null 2>&1 || true
  rm -f "/etc/systemd/system/$unit"
  systemctl daemon-reload || true
  systemctl reset-failed "$unit" >/dev/null 2>&1 || true
}

# Folders the program owns: teardown removes them once empty, and nothing above them
# (/usr/local/bin, /opt, /etc/systemd/system... belong to the system, even when empty).
KHW_OWN_DIRS="/opt/kubernetes /opt/etcd /opt/cni /etc/kube-hardway /etc/containerd /var/lib/kube-hardway /var/cache/kube-hardway"

# khw_remove PATH...: delete files, then their parent folders once empty, up to an owned root.
khw_remove() {
  local p d root owned
  for p in "$@"; do rm -f "$p"; done
  for p in "$@"; do
    d=$(dirname "$p")
    while [ "$d" != / ]; do
      owned=""
      for root in $KHW_OWN_DIRS; do case "$d/" in "$root"/*) owned=1 ;; esac; done
      if [ -z "$owned" ] || ! rmdir "$d" 2>/dev/null; then break; fi
      d=$(dirname "$d")
    done
  done
}

# khw_iptables_cleanup: remove every KUBE-* chain (kubelet's and kube-proxy's) and the rules that
# jump to them, in IPv4 and IPv6, leaving the host's own rules alone (teardown). One
# iptables-restore --noflush per table, which parses iptables-save's quoting itself.
khw_iptables_cleanup() {
  local v t c chains
  for v in iptables ip6tables; do
    command -v "$v-save" >/dev/null || continue
    for t in filter nat mangle raw; do
      chains=$("$v-save" -t "$t" 2>/dev/null | sed -n 's/^:\(KUBE-[^ ]*\) .*/\1/p')
      [ -n "$chains" ] || continue
      {
        echo "*$t"
        "$v-save" -t "$t" | grep -E '^-A [^ ]+ .*-j KUBE-' | grep -vE '^-A KUBE-' | sed 's/^-A /-D /'
        for c in $chains; do echo "-F $c"; done
        for c in $chains; do echo "-X $c"; done
        echo COMMIT
      } | "$v-restore" --noflush || khw_log "WARNING: $v: could not remove all KUBE- chains in table $t"
    done
  done
}
