#!/usr/bin/env bash
# Build the Kubernetes server binaries for the lab from the k8s.io/kubernetes Go module (the
# official binaries cannot be downloaded here) into $LAB_CACHE/kubernetes/v<version>/, which
# lab/mirror.sh then serves. Cached: nothing is rebuilt when the binaries are there.
#
#   lab/build-kubernetes.sh [VERSION]     (default 1.33.4; needs Go and the Go module proxy)
#
# The module's go.mod replaces its k8s.io/* staging modules with ./staging/... folders that the
# module zip does not contain: each is pointed at the published v0.<minor>.<patch> module instead,
# and vendor/ and go.work are dropped.
set -euo pipefail
V=${1:-1.33.4}
LAB_CACHE=${LAB_CACHE:-/var/cache/kube-hardway-lab}
OUT=$LAB_CACHE/kubernetes/v$V
BINS="kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl"
done_all=true
for b in $BINS; do [ -x "$OUT/$b" ] || done_all=false; done
if $done_all; then echo "[k8s] v$V binaries cached in $OUT"; exit 0; fi

start=$SECONDS
src=$(go mod download -json "k8s.io/kubernetes@v$V" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
work=$LAB_CACHE/src/kubernetes-$V
rm -rf "$work" && mkdir -p "$(dirname "$work")" && cp -r "$src" "$work" && chmod -R u+w "$work"
cd "$work"
rm -rf vendor go.work go.work.sum
for m in $(go mod edit -json | python3 -c 'import json,sys; print("\n".join(r["Old"]["Path"] for r in json.load(sys.stdin).get("Replace") or [] if r["New"]["Path"].startswith("./staging")))'); do
  go mod edit -dropreplace="$m" -require="$m@v0.${V#1.}"
done
mkdir -p "$OUT"
minor=${V#1.}; minor=${minor%%.*}
for b in $BINS; do
  [ -x "$OUT/$b" ] && continue
  GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -o "$OUT/$b.part" \
    -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=v$V -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor" \
    "./cmd/$b"
  mv "$OUT/$b.part" "$OUT/$b"
  echo "[k8s] $b built ($((SECONDS - start))s)"
done
rm -rf "$work"
echo "[k8s] v$V binaries in $OUT after $((SECONDS - start))s"
