#!/usr/bin/env bash
# The lab's artifact mirror: the upstream paths (see README "Downloads and mirrors") under
# $LAB_CACHE/mirror, served over HTTP on the lab bridge, with a sha256 for every file written
# to $LAB_CACHE/mirror/checksums.yaml (the stack pins them, so the normal verify path runs).
#
#   lab/mirror.sh build [--placeholder-kubernetes]   (re)build the mirror
#   lab/mirror.sh serve | stop                        HTTP on 10.77.0.1:8080 (the bridge only)
#
# etcd comes from Debian's etcd-server/etcd-client packages (3.4.23), repacked into the upstream
# tarball layout. Kubernetes binaries are not built yet: --placeholder-kubernetes puts small
# scripts in their place, for checks that download and verify but never start them.
set -euo pipefail
LAB_CACHE=${LAB_CACHE:-/var/cache/kube-hardway-lab}
M=$LAB_CACHE/mirror
ETCD=3.4.23
K8S=${K8S_VERSION:-1.33.4}
ADDR=10.77.0.1:8080

log() { printf '[mirror] %s\n' "$*" >&2; }

build() {
  local tmp
  mkdir -p "$LAB_CACHE/debs" "$M"
  if ! ls "$LAB_CACHE"/debs/etcd-server_*.deb >/dev/null 2>&1; then
    (cd "$LAB_CACHE/debs" && { apt-get download etcd-server etcd-client >/dev/null 2>&1 \
       || { apt-get update -q >/dev/null && apt-get download etcd-server etcd-client >/dev/null 2>&1; }; })
  fi
  tmp=$(mktemp -d)
  for deb in "$LAB_CACHE"/debs/etcd-server_*.deb "$LAB_CACHE"/debs/etcd-client_*.deb; do dpkg-deb -x "$deb" "$tmp/x"; done
  mkdir -p "$tmp/etcd-v$ETCD-linux-amd64" "$M/etcd/v$ETCD"
  cp "$tmp/x/usr/bin/etcd" "$tmp/x/usr/bin/etcdctl" "$tmp/etcd-v$ETCD-linux-amd64/"
  tar -C "$tmp" -czf "$M/etcd/v$ETCD/etcd-v$ETCD-linux-amd64.tar.gz" "etcd-v$ETCD-linux-amd64"
  rm -rf "$tmp"
  log "etcd v$ETCD from Debian packages"
  if [ "${1:-}" = --placeholder-kubernetes ]; then
    mkdir -p "$M/kubernetes/v$K8S/bin/linux/amd64"
    for b in kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy; do
      printf '#!/bin/sh\necho "%s: lab placeholder, not a Kubernetes binary" >&2\nexit 1\n' "$b" \
        > "$M/kubernetes/v$K8S/bin/linux/amd64/$b"
    done
    log "PLACEHOLDER Kubernetes v$K8S binaries (download/verify checks only)"
  fi
  (cd "$M" && find . -type f ! -name checksums.yaml | sort | while read -r f; do
     printf '"%s": %s\n' "${f#./}" "$(sha256sum "$f" | cut -d' ' -f1)"; done) > "$M/checksums.yaml"
  log "$(wc -l < "$M/checksums.yaml") artifacts; checksums in $M/checksums.yaml"
}

case "${1:-}" in
  build) shift; build "$@" ;;
  serve)
    if [ -f "$LAB_CACHE/mirror.pid" ] && kill -0 "$(cat "$LAB_CACHE/mirror.pid")" 2>/dev/null; then exit 0; fi
    (cd "$M" && exec setsid python3 -m http.server "${ADDR##*:}" --bind "${ADDR%%:*}" > "$LAB_CACHE/mirror.log" 2>&1 < /dev/null) &
    echo $! > "$LAB_CACHE/mirror.pid"
    log "serving $M on http://$ADDR/" ;;
  stop)
    if [ -f "$LAB_CACHE/mirror.pid" ]; then kill "$(cat "$LAB_CACHE/mirror.pid")" 2>/dev/null || true; rm -f "$LAB_CACHE/mirror.pid"; fi ;;
  *) sed -n '2,12p' "$0"; exit 2 ;;
esac
