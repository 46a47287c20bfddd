#!/usr/bin/env bash
# The lab's artifact mirror: the upstream paths (see README "Downloads and mirrors") under
# $LAB_CACHE/mirror, served over HTTP on the lab bridge, with a sha256 for every file written
# to $LAB_CACHE/mirror/checksums.yaml (the stack pins them, so the normal verify path runs).
#
#   lab/mirror.sh build [--placeholder-kubernetes]   (re)build the mirror
#   lab/mirror.sh serve | stop                        HTTP on 10.77.0.1:8080 (the bridge only)
#
# etcd (3.4.23), containerd (1.6.20), runc (1.1.5) and the CNI plugins (1.1.1) come from Debian's
# packages, repacked into the upstream layouts; other etcd versions come from $LAB_CACHE/etcd/v<version>/
# when built there (lab/build-etcd.sh). Kubernetes binaries come from
# $LAB_CACHE/kubernetes/v<version>/ when built there (lab/build-kubernetes.sh); otherwise
# --placeholder-kubernetes puts small scripts in their place, for checks that never start them.
set -euo pipefail
LAB_CACHE=${LAB_CACHE:-/var/cache/kube-hardway-lab}
M=$LAB_CACHE/mirror
ETCD=3.4.23
CONTAINERD=1.6.20
RUNC=1.1.5
CNI=1.1.1
K8S=${K8S_VERSION:-1.33.4}
ADDR=10.77.0.1:8080

log() { printf '[mirror] %s\n' "$*" >&2; }

repo() { # an offline apt repository for the lab machines: what the LB hosts install (api-lb step)
  local r=$LAB_CACHE/repo pkgs
  mkdir -p "$r"
  if ! command -v dpkg-scanpackages >/dev/null; then  # from dpkg-dev, not on a fresh machine
    apt-get install -y -q dpkg-dev >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q dpkg-dev >/dev/null; }
  fi
  if ! zgrep -q '^Package: keepalived' "$r/Packages.gz" 2>/dev/null; then
    pkgs=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces \
             --no-enhances nginx keepalived libnginx-mod-stream 2>/dev/null | grep -E '^[a-z0-9]' | sort -u)
    # shellcheck disable=SC2086
    (cd "$r" && { apt-get download $pkgs >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get download $pkgs >/dev/null 2>&1; }; })
    (cd "$r" && dpkg-scanpackages . /dev/null 2>/dev/null | gzip -9 > Packages.gz)
    zgrep -q '^Package: keepalived' "$r/Packages.gz" || { log "ERROR: could not index $r"; exit 1; }
  fi
  log "apt repository for the lab machines: $(find "$r" -name '*.deb' | wc -l) packages"
}

build() {
  local tmp
  mkdir -p "$LAB_CACHE/debs" "$M"
  local debs="etcd-server etcd-client containerd runc containernetworking-plugins" x
  if [ "$(find "$LAB_CACHE/debs" -name '*.deb' | wc -l)" -lt 5 ]; then
    # shellcheck disable=SC2086
    (cd "$LAB_CACHE/debs" && { apt-get download $debs >/dev/null 2>&1 \
       || { apt-get update -q >/dev/null && apt-get download $debs >/dev/null 2>&1; }; })
  fi
  tmp=$(mktemp -d); x=$tmp/x
  # reproducible archives: the same packages give the same sha256 on every build, so a rebuilt
  # mirror does not change the stacks' pinned checksums (and every host's binaries step)
  pack() { tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$1" -cf - "${@:3}" | gzip -n > "$2"; }
  for deb in "$LAB_CACHE"/debs/*.deb; do dpkg-deb -x "$deb" "$x"; done
  # etcd: etcd-v<V>-linux-amd64/{etcd,etcdctl}
  mkdir -p "$tmp/etcd-v$ETCD-linux-amd64" "$M/etcd/v$ETCD"
  cp "$x/usr/bin/etcd" "$x/usr/bin/etcdctl" "$tmp/etcd-v$ETCD-linux-amd64/"
  pack "$tmp" "$M/etcd/v$ETCD/etcd-v$ETCD-linux-amd64.tar.gz" "etcd-v$ETCD-linux-amd64"
  # containerd: bin/{containerd,containerd-shim-runc-v2,ctr}
  mkdir -p "$tmp/ctd/bin" "$M/containerd/v$CONTAINERD"
  cp "$x/usr/bin/containerd" "$x/usr/bin/containerd-shim-runc-v2" "$x/usr/bin/ctr" "$tmp/ctd/bin/"
  pack "$tmp/ctd" "$M/containerd/v$CONTAINERD/containerd-$CONTAINERD-linux-amd64.tar.gz" bin
  # runc: a single binary
  mkdir -p "$M/runc/v$RUNC"
  cp "$x/usr/sbin/runc" "$M/runc/v$RUNC/runc.amd64"
  # CNI plugins: the plugins at the archive's top level
  mkdir -p "$M/cni-plugins/v$CNI"
  pack "$x/usr/lib/cni" "$M/cni-plugins/v$CNI/cni-plugins-linux-amd64-v$CNI.tgz" .
  rm -rf "$tmp"
  log "etcd $ETCD, containerd $CONTAINERD, runc $RUNC, CNI plugins $CNI from Debian packages"
  # every other etcd version built (lab/build-etcd.sh VERSION): the etcd upgrade test needs one
  local d v
  for d in "$LAB_CACHE"/etcd/v*/; do
    [ -x "$d/etcd" ] || continue
    v=$(basename "$d")
    tmp=$(mktemp -d)
    mkdir -p "$tmp/etcd-$v-linux-amd64" "$M/etcd/$v"
    cp "$d/etcd" "$d/etcdctl" "$tmp/etcd-$v-linux-amd64/"
    pack "$tmp" "$M/etcd/$v/etcd-$v-linux-amd64.tar.gz" "etcd-$v-linux-amd64"
    rm -rf "$tmp"
    log "etcd $v from $d"
  done
  repo
  # every version built (lab/build-kubernetes.sh VERSION): the upgrade test needs three
  for d in "$LAB_CACHE"/kubernetes/v*/; do
    v=$(basename "$d")
    [ -x "$d/kubelet" ] || continue
    mkdir -p "$M/kubernetes/$v/bin/linux/amd64"
    cp "$d"/* "$M/kubernetes/$v/bin/linux/amd64/"
    log "Kubernetes $v binaries from $d"
  done
  if [ -x "$LAB_CACHE/kubernetes/v$K8S/kubelet" ]; then
    :
  elif [ "${1:-}" = --placeholder-kubernetes ]; then
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
  # the stack configs for the lab machines (single control plane, HA), every artifact pinned
  local here py; here=$(cd "$(dirname "$0")/.." && pwd)
  py=python3; [ -x "$here/.venv/bin/python" ] && py=$here/.venv/bin/python
  "$py" "$here/lab/stack.py" "$here/Pulumi.lab.yaml"
  "$py" "$here/lab/stack.py" --ha "$here/Pulumi.lab-ha.yaml"
  log "wrote $here/Pulumi.lab.yaml and $here/Pulumi.lab-ha.yaml"
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
