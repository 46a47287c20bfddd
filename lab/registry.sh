#!/usr/bin/env bash
# The lab's container registry: Debian's docker-registry (the CNCF distribution registry) on
# the lab bridge only, plain HTTP, its storage cached in $LAB_CACHE/registry. The lab stacks
# point images.registryMirror at it; containerd on the nodes pulls from it over HTTP
# (images.insecureRegistries).
#
#   lab/registry.sh serve     start it on 10.77.0.1:5000 (the bridge must be up: lab/lab.sh up)
#   lab/registry.sh push      push every image lab/images/build.sh built (skopeo)
#   lab/registry.sh stop
set -euo pipefail
LAB_CACHE=${LAB_CACHE:-/var/cache/kube-hardway-lab}
ADDR=10.77.0.1:5000
DIR=$LAB_CACHE/registry
here=$(cd "$(dirname "$0")" && pwd)
log() { printf '[registry] %s\n' "$*" >&2; }

need() {
  local missing=""
  command -v docker-registry >/dev/null || missing="$missing docker-registry"
  command -v skopeo >/dev/null || missing="$missing skopeo"
  if [ -n "$missing" ]; then
    log "installing$missing"
    # shellcheck disable=SC2086
    apt-get install -y -q $missing >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q $missing >/dev/null; }
  fi
}

serve() {
  need
  if [ -f "$DIR/pid" ] && kill -0 "$(cat "$DIR/pid")" 2>/dev/null; then return 0; fi
  mkdir -p "$DIR/data"
  cat > "$DIR/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $DIR/data
  delete:
    enabled: true
http:
  addr: $ADDR
EOF
  setsid docker-registry serve "$DIR/config.yml" > "$DIR/registry.log" 2>&1 < /dev/null &
  echo $! > "$DIR/pid"
  for _ in $(seq 1 50); do curl -fsS "http://$ADDR/v2/" >/dev/null 2>&1 && break; sleep 0.1; done
  curl -fsS "http://$ADDR/v2/" >/dev/null || { log "ERROR: the registry did not start: $(tail -3 "$DIR/registry.log")"; exit 1; }
  log "serving http://$ADDR/ (storage $DIR/data)"
}

push() {
  need
  local n=0 file ref t0=$SECONDS
  while read -r file ref; do
    skopeo copy --quiet --dest-tls-verify=false "oci-archive:$file" "docker://$ADDR/$ref"
    n=$((n + 1))
  done < <("$here/images/build.sh" list)
  log "$n images in http://$ADDR/ ($((SECONDS - t0))s)"
}

stop() {
  if [ -f "$DIR/pid" ]; then kill "$(cat "$DIR/pid")" 2>/dev/null || true; rm -f "$DIR/pid"; fi
}

case "${1:-}" in
  serve) serve ;;
  push) push ;;
  stop) stop ;;
  *) sed -n '2,10p' "$0"; exit 2 ;;
esac
