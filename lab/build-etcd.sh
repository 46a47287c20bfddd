#!/usr/bin/env bash
# Build etcd and etcdctl for the lab from the go.etcd.io Go modules (the official release archives
# cannot be downloaded here; Debian packages only 3.4) into $LAB_CACHE/etcd/v<version>/, which
# lab/mirror.sh then packs in the upstream layout. Cached: nothing is rebuilt when they are there.
#
#   lab/build-etcd.sh VERSION     (3.5.x or later; needs Go and the Go module proxy; about 40 s)
#
# etcd's own root module replaces its sub-modules with folders its zip leaves out, so a small
# module here requires the published server/v3 and etcdctl/v3 modules and builds their mains.
set -euo pipefail
V=${1:?usage: lab/build-etcd.sh VERSION}
LAB_CACHE=${LAB_CACHE:-/var/cache/kube-hardway-lab}
OUT=$LAB_CACHE/etcd/v$V
if [ -x "$OUT/etcd" ] && [ -x "$OUT/etcdctl" ]; then echo "[etcd] v$V binaries cached in $OUT"; exit 0; fi

start=$SECONDS
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/go.mod" <<EOF
module khw.local/etcd-build

go 1.23

require (
	go.etcd.io/etcd/etcdctl/v3 v$V
	go.etcd.io/etcd/server/v3 v$V
)
EOF
cat > "$work/tools.go" <<'EOF'
//go:build tools

package tools

import (
	_ "go.etcd.io/etcd/etcdctl/v3"
	_ "go.etcd.io/etcd/server/v3"
)
EOF
mkdir -p "$OUT"
cd "$work"
GOFLAGS=-mod=mod go mod tidy
for b in etcd:go.etcd.io/etcd/server/v3 etcdctl:go.etcd.io/etcd/etcdctl/v3; do
  GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$OUT/${b%%:*}.part" "${b#*:}"
  mv "$OUT/${b%%:*}.part" "$OUT/${b%%:*}"
done
"$OUT/etcd" --version | grep -q "etcd Version: $V" || { echo "[etcd] $OUT/etcd is not $V" >&2; exit 1; }
echo "[etcd] v$V binaries in $OUT after $((SECONDS - start))s"
