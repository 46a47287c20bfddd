#!/usr/bin/env bash
# Shared helpers, at the top of every remote step (see components/remote.py).
# A step is one SSH round trip. Pulumi shows (and an error quotes) only its command: a header
# naming the step's files by digest, and a runner. The step itself arrives on stdin, which
# Pulumi keeps secret: this library, the step's files (base64 heredocs) and its script, run as
# `bash FILE create|update` (`delete` for teardown).
# Files are written only when their content or mode differs, so a re-run changes nothing
# and services restart only when one of their own files changed.
set -Eeuo pipefail
# an unexpected failure names host, step, line and command instead of ending the step silently
# (file contents are never part of a command: khw_put reads them from a heredoc)
trap 'khw_log "ERROR: exit $? at line $LINENO: $BASH_COMMAND" >&2' ERR
export PATH=/opt/kubernetes/bin:/opt/etcd/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
KHW_MODE=${1:-update}
KHW_STATE=${KHW_STATE:-/var/lib/kube-hardway}
KHW_CHANGED=()

khw_log() { printf '[%s %s] %s\n' "${KHW_HOST:-?}" "${KHW_STEP:-?}" "$*"; }
khw_die() { printf '[%s %s] ERROR: %s\n' "${KHW_HOST:-?}" "${KHW_STEP:-?}" "$*" >&2; exit 1; }

# khw_put PATH MODE <<'KHW_DATA' ... (base64): install a file atomically when its content or
# mode differ. The data comes on stdin so that it is never part of a command line or an error.
khw_put() {
  local path=$1 mode=$2 tmp
  khw_own "$path"
  [ ! -d "$path" ] || [ -L "$path" ] || khw_die "$path is a directory where this step installs a file: move it away and run again"
  mkdir -p "$(dirname "$path")"
  tmp=$(mktemp "$(dirname "$path")/.khw.XXXXXX")
  base64 -d > "$tmp" || { rm -f "$tmp"; khw_die "cannot decode the content of $path"; }
  chmod "$mode" "$tmp"
  if [ -f "$path" ] && cmp -s "$tmp" "$path" && [ "$(stat -c %a "$path")" = "${mode#0}" ]; then
    rm -f "$tmp"; return 0
  fi
  mv -fT "$tmp" "$path"
  khw_note_changed "$path"
  khw_log "wrote $path"
}

# khw_note_changed PATH...: this run changed PATH. Noted on the host too, until a restart or
# reload that it calls for was issued (khw_acted) or the step ends well: a run cut off between
# writing a file and restarting its service (a killed CLI, a lost connection) would leave the
# service on the old file, and the next run, with nothing left to write, would restart nothing.
# It starts from the cut-off run's changes instead (khw_hold).
khw_note_changed() {
  KHW_CHANGED+=("$@")
  mkdir -p "$KHW_STATE/changed"
  printf '%s\n' "$@" >> "$KHW_STATE/changed/$KHW_STEP"
}

# khw_acted [PREFIX...]: the changes under these prefixes have been acted on (a restart or a
# reload was issued): a later cut-off need not repeat it. They stay in KHW_CHANGED for this run.
khw_acted() { _khw_unnote prefix "$@"; }

# khw_forget_changed PATH...: changes this run chose not to act on (api-lb.sh: a leaving peer).
khw_forget_changed() {
  local c p keep=()
  [ "${#KHW_CHANGED[@]}" -gt 0 ] || return 0
  for c in "${KHW_CHANGED[@]}"; do
    for p in "$@"; do [ "$c" != "$p" ] || continue 2; done
    keep+=("$c")
  done
  KHW_CHANGED=()
  [ "${#keep[@]}" -eq 0 ] || KHW_CHANGED=("${keep[@]}")
  _khw_unnote exact "$@"
}

# _khw_unnote exact|prefix PATH...: drop the matching entries from the step's noted changes
_khw_unnote() {
  local how=$1 f="$KHW_STATE/changed/$KHW_STEP" c p keep=(); shift
  [ -s "$f" ] || return 0
  while IFS= read -r c; do
    for p in "$@"; do
      if [ "$how" = prefix ]; then case "$c" in "$p"*) continue 2 ;; esac
      elif [ "$c" = "$p" ]; then continue 2; fi
    done
    keep+=("$c")
  done < "$f"
  if [ "${#keep[@]}" -gt 0 ]; then printf '%s\n' "${keep[@]}" > "$f"; else _khw_unnote_all; fi
}

_khw_unnote_all() { rm -f "$KHW_STATE/changed/$KHW_STEP"; rmdir "$KHW_STATE/changed" 2>/dev/null || true; }

# khw_changed [PREFIX...]: true when any file written by this run (or by a run of this step that
# was cut off: khw_note_changed) starts with a prefix.
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
# KHW_SERVICE_ACTION says what happened: restarted (it was running), started (it was not) or
# nothing (read by step scripts).
# shellcheck disable=SC2034
KHW_SERVICE_ACTION=""
khw_service() {
  local unit=$1; shift
  KHW_SERVICE_ACTION=""
  if khw_changed "/etc/systemd/system/$unit"; then systemctl daemon-reload; fi
  systemctl enable "$unit" >/dev/null 2>&1 || systemctl enable "$unit"
  if khw_changed "/etc/systemd/system/$unit" "$@"; then
    khw_log "restarting $unit"
    # shellcheck disable=SC2034
    if systemctl is-active --quiet "$unit"; then KHW_SERVICE_ACTION=restarted; else KHW_SERVICE_ACTION=started; fi
    local was; was=$(systemctl show -p InvocationID --value "$unit" 2>/dev/null || true)
    # a step may prepare the restart of a running unit (kube-apiserver.sh: the fence)
    if [ "$KHW_SERVICE_ACTION" = restarted ] && declare -F khw_before_restart >/dev/null; then khw_before_restart; fi
    systemctl restart --no-block "$unit"
    khw_acted "/etc/systemd/system/$unit" "$@"
    # --no-block returns before the old process has stopped, and one that is stopping may still
    # answer a health check (etcd does for seconds): the caller's wait would pass at once and the
    # next host restart too. So wait for the new invocation to begin.
    if [ "$KHW_SERVICE_ACTION" = restarted ] && [ -n "$was" ]; then khw_wait_invocation "$unit" "$was"; fi
  elif ! systemctl is-active --quiet "$unit"; then
    khw_log "starting $unit"
    systemctl start --no-block "$unit"
    # shellcheck disable=SC2034
    KHW_SERVICE_ACTION=started
  fi
}

# khw_wait_invocation UNIT OLD_ID: until UNIT runs another invocation than OLD_ID (its old
# process has stopped, the new one is starting), at most as long as systemd gives a stop.
khw_wait_invocation() {
  local unit=$1 was=$2 deadline=$((SECONDS + 120))
  while [ "$(systemctl show -p InvocationID --value "$unit" 2>/dev/null || true)" = "$was" ]; do
    [ "$SECONDS" -lt "$deadline" ] || khw_die "$unit did not stop within 120 s of its restart"
    sleep 0.2
  done
}

# khw_service_reload UNIT PREFIX...: as khw_service, but a running service whose unit file did
# not change is reloaded instead of restarted (nginx and keepalived: connections and the VIP stay).
khw_service_reload() {
  local unit=$1; shift
  if systemctl is-active --quiet "$unit" && ! khw_changed "/etc/systemd/system/$unit" && khw_changed "$@"; then
    khw_log "reloading $unit"
    systemctl reload "$unit"
    khw_acted "$@"
    # shellcheck disable=SC2034
    KHW_SERVICE_ACTION=reloaded
  else
    khw_service "$unit" "$@"
  fi
}

# khw_vrrp_only_left OLD NEW: true, printing them, when keepalived configuration NEW differs
# from OLD only by peers gone from its unicast_peer list (an LB host leaving). api-lb.sh then
# leaves the running keepalived as it is: see there.
khw_vrrp_only_left() {
  local left added
  [ "$(_khw_vrrp_rest "$1")" = "$(_khw_vrrp_rest "$2")" ] || return 1
  left=$(comm -23 <(_khw_vrrp_peers "$1") <(_khw_vrrp_peers "$2"))
  added=$(comm -13 <(_khw_vrrp_peers "$1") <(_khw_vrrp_peers "$2"))
  [ -n "$left" ] && [ -z "$added" ] || return 1
  echo "${left//$'\n'/ }"
}
_khw_vrrp_peers() { awk '/unicast_peer[ \t]*\{/ {p=1; next} p && /\}/ {p=0} p && NF {print $1}' <<< "$1" | sort; }
_khw_vrrp_rest() { awk '/unicast_peer[ \t]*\{/ {p=1} !p {print} p && /\}/ {p=0}' <<< "$1"; }

# --- fence: while an apiserver restarts (HA), its host answers new connections to ADDR:PORT
# with a TCP reset. nginx then sends them to another apiserver at once (a refused connection
# is its cue), instead of to one that is stopping (a request cut off without an answer) or
# starting (403 and 500 until it is ready). Connections already open finish: the apiserver's
# graceful shutdown. Clients on the host itself use 127.0.0.1, which the fence leaves alone.
# The rule expires by itself (iptables' time match) should the step be cut off before it
# lifts it; the next run of the step lifts any fence left.
KHW_FENCE_TAG=kube-hardway-fence
KHW_FENCED=""
khw_fence() { # ADDR PORT SECONDS; false when the rule could not be set. The caller lifts an
  # old fence first (khw_unfence)
  iptables -w -I INPUT -p tcp -d "$1" --dport "$2" --syn -m comment --comment "$KHW_FENCE_TAG" \
    -m time --datestop "$(date -u -d "+$3 sec" +%Y-%m-%dT%H:%M:%S)" -j REJECT --reject-with tcp-reset || return 1
  KHW_FENCED=1
  khw_log "new connections to $1:$2 refused while it restarts (at most $3 s)"
}

khw_unfence() {
  local rule
  local -a args
  command -v iptables >/dev/null || return 0
  while read -r rule; do
    read -r -a args <<< "$rule"
    args[0]=-D
    iptables -w "${args[@]}" || true
  done < <(iptables -w -S INPUT 2>/dev/null | grep -F -- "--comment $KHW_FENCE_TAG" || true)
  if [ -n "$KHW_FENCED" ]; then KHW_FENCED=""; khw_log "connections accepted again"; fi
}

# khw_wait TIMEOUT_S WHAT CMD...: poll CMD until it succeeds. When KHW_UNIT names the service
# being waited for, a unit that failed or restarts in a loop ends the wait early. A failed wait
# names WHAT and the last output, after the unit's state and journal (khw_unit_log).
khw_wait() {
  local timeout=$1 what=$2 out="" base=0 now state; shift 2
  local deadline=$((SECONDS + timeout))
  [ -z "${KHW_UNIT:-}" ] || base=$(khw_unit_restarts "$KHW_UNIT")
  until out=$("$@" 2>&1); do
    if [ -n "${KHW_UNIT:-}" ]; then
      now=$(khw_unit_restarts "$KHW_UNIT")
      state=$(systemctl show -p ActiveState --value "$KHW_UNIT" 2>/dev/null || true)
      if [ "$state" = failed ] || [ $((now - base)) -ge 3 ]; then
        khw_unit_log "$KHW_UNIT" >&2
        khw_die "$KHW_UNIT is $state after $((now - base)) restarts while waiting for $what: see its journal above"
      fi
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      [ -z "${KHW_UNIT:-}" ] || khw_unit_log "$KHW_UNIT" >&2
      khw_die "timed out after ${timeout}s waiting for $what: ${out:0:400}"
    fi
    sleep 1
  done
}

# khw_etcdctl ARGS...: etcdctl v3 over TLS with this member's server certificate (etcd members)
# khw_take_staged PATH...: put a binary that the binaries step staged (PATH.next) in place,
# right before this step restarts the service running it.
khw_take_staged() {
  local p
  for p in "$@"; do
    [ -f "$p.next" ] || continue
    mv -f "$p.next" "$p"
    khw_note_changed "$p"
    khw_log "put the new $p in place"
  done
}

khw_etcdctl() {
  ETCDCTL_API=3 etcdctl --cacert=/opt/etcd/ssl/ca.pem --cert=/opt/etcd/ssl/server.pem \
    --key=/opt/etcd/ssl/server-key.pem --dial-timeout=3s --command-timeout=15s "$@"
}

khw_unit_restarts() { local n; n=$(systemctl show -p NRestarts --value "$1" 2>/dev/null || true); echo "${n:-0}"; }

# khw_unit_log UNIT: why a service is not ready: its state, the error lines among the last 300
# lines of its journal, and its last lines.
khw_unit_log() {
  local unit=$1 log
  log=$(journalctl -u "$unit" -n 300 -o cat --no-pager 2>/dev/null || true)
  khw_log "$unit: $(systemctl show -p ActiveState,SubState,Result,NRestarts,ExecMainStatus "$unit" 2>/dev/null | tr '\n' ' ')"
  khw_log "$unit: errors in its journal:"
  grep -E '^[EF][0-9]{4} |level=(error|fatal)|"level":"(error|fatal)"|[Ee]rror|[Ff]atal|[Ff]ailed|[Ii]nvalid' <<<"$log" | tail -n 15 || true
  khw_log "$unit: last lines of its journal:"
  tail -n 10 <<<"$log"
}

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

# khw_iptables_cleanup: remove every chain Kubernetes and the pod network created (KUBE-* of the
# kubelet and kube-proxy, FLANNEL-* of flanneld, CNI-* of the CNI plugins, cali-* of calico) and
# the rules that jump to them, in IPv4 and IPv6, leaving the host's own rules alone (teardown).
# One iptables-restore --noflush per table, which parses iptables-save's quoting itself.
KHW_CHAINS='KUBE-|FLANNEL-|CNI-|cali-'
khw_iptables_cleanup() {
  local v t c chains
  for v in iptables ip6tables; do
    command -v "$v-save" >/dev/null || continue
    for t in filter nat mangle raw; do
      chains=$("$v-save" -t "$t" 2>/dev/null | sed -nE "s/^:(($KHW_CHAINS)[^ ]*) .*/\1/p")
      [ -n "$chains" ] || continue
      {
        echo "*$t"
        "$v-save" -t "$t" | grep -E "^-A [^ ]+ .*-j ($KHW_CHAINS)" | grep -vE "^-A ($KHW_CHAINS)" | sed 's/^-A /-D /'
        for c in $chains; do echo "-F $c"; done
        for c in $chains; do echo "-X $c"; done
        echo COMMIT
      } | "$v-restore" --noflush || khw_log "WARNING: $v: could not remove all of Kubernetes' chains in table $t"
    done
  done
}

# --- what a step installed: $KHW_STATE/owned/STEP lists its files, written when a run succeeds.
# A file the previous run installed and this one did not (a registry mirror's hosts.toml that
# is no longer configured) is removed then; teardown removes every file listed.
# KHW_KEEP_STALE=1 (binaries): keep them until teardown instead. A host that loses a role gets
# its binaries step updated *before* Pulumi tears down that role's services (deletes come last),
# and containerd cannot stop its containers once runc is gone.
KHW_OWNED=()
KHW_KEEP_STALE=${KHW_KEEP_STALE:-0}
khw_own() { KHW_OWNED+=("$@"); }

khw_prune() {
  local f="$KHW_STATE/owned/$KHW_STEP" p q keep stale=()
  if [ -f "$f" ]; then
    while IFS= read -r p; do
      keep=""
      for q in "${KHW_OWNED[@]}"; do [ "$p" != "$q" ] || { keep=1; break; }; done
      [ -z "$p" ] || [ -n "$keep" ] || stale+=("$p")
    done < "$f"
  fi
  if [ "${#stale[@]}" -gt 0 ] && [ "$KHW_KEEP_STALE" = 1 ]; then
    KHW_OWNED+=("${stale[@]}")
  elif [ "${#stale[@]}" -gt 0 ]; then
    khw_remove "${stale[@]}"
    khw_log "removed what this step no longer installs: ${stale[*]}"
  fi
  mkdir -p "${f%/*}"
  printf '%s\n' "${KHW_OWNED[@]}" > "$f.tmp" && mv -f "$f.tmp" "$f"
}

khw_disown() { # teardown
  local f="$KHW_STATE/owned/$KHW_STEP" p
  _khw_unnote_all
  if [ -f "$f" ]; then
    while IFS= read -r p; do [ -z "$p" ] || khw_remove "$p"; done < "$f"
    rm -f "$f"
  fi
  rmdir "${f%/*}" "$KHW_STATE" 2>/dev/null || true
}

# --- holders: the instances of this step that hold what it installed
# Pulumi replaces a resource by creating the new instance before deleting the old one
# (`pulumi up --replace`, a renamed host or component). Each create adds a line to the step's
# holder file and each delete removes one; only the last one out tears down, so the delete of a
# replaced instance never removes what its successor has just installed.
khw_holders() { echo "$KHW_STATE/holders/$KHW_STEP"; }

khw_hold() {
  local f; f=$(khw_holders)
  mkdir -p "${f%/*}"
  if [ "$KHW_MODE" = create ]; then
    # a create cut off before it finished (a killed CLI) is run again by the next `up`: the
    # same instance, so it takes the unfinished one's place
    if [ "$(tail -n 1 "$f" 2>/dev/null)" = pending ]; then sed -i '$d' "$f"; fi
    echo pending >> "$f"
  elif [ ! -s "$f" ]; then
    echo pending > "$f"
  fi
  if [ -s "$KHW_STATE/changed/$KHW_STEP" ]; then
    mapfile -t KHW_CHANGED < "$KHW_STATE/changed/$KHW_STEP"
    khw_log "acting on what a cut-off run changed: ${KHW_CHANGED[*]}"
  fi
  trap khw_finish EXIT
}

khw_finish() { # on exit: a step that succeeded holds for good; a create that failed is
  # forgotten by Pulumi (the next `up` creates it again), so it gives up its line
  local rc=$? f; f=$(khw_holders)
  [ -z "$KHW_FENCED" ] || khw_unfence
  [ "$rc" != 0 ] || _khw_unnote_all
  [ -f "$f" ] || return 0
  if [ "$rc" = 0 ]; then
    sed -i '$s/^pending$/held/' "$f"
    khw_prune || khw_log "WARNING: could not remove what this step no longer installs"
  elif [ "$KHW_MODE" = create ]; then sed -i '${/^pending$/d}' "$f"; fi
}

# khw_release (delete): true when no other instance still holds the step, i.e. tear down.
khw_release() {
  local f; f=$(khw_holders)
  [ -s "$f" ] || return 0
  sed -i '1d' "$f"
  if [ -s "$f" ]; then
    khw_log "teardown skipped: $(wc -l < "$f") newer instance(s) of this step hold what it installed"
    return 1
  fi
  rm -f "$f"; rmdir "${f%/*}" "$KHW_STATE" 2>/dev/null || true
}

if [ "$KHW_MODE" != delete ]; then khw_hold; fi
