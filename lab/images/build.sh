#!/usr/bin/env bash
# The lab's container images, built from source (no registry can be reached here), each an OCI
# archive in $LAB_CACHE/images, rebuilt only when its recipe (its function below) or version
# changes. buildah assembles them from files (no RUN step, no daemon); lab/registry.sh serves them.
#
#   lab/images/build.sh            build what is missing or out of date (cold: see docs/lab.md)
#   lab/images/build.sh list       "archive image-reference" for every image built
#
# image (as the lab stack names it)        from
#   pause:3.10.1                           k8s.io/kubernetes v1.33.4 build/pause (C, static)
#   flannel-io/flannel:v0.28.10            github.com/flannel-io/flannel (Go; no tencentvpc backend) on the Debian base
#   flannel-io/flannel-cni-plugin:v0.9.1   plugins/meta/flannel of github.com/containernetworking/plugins (Go)
#   coredns/coredns:v1.14.7                github.com/coredns/coredns (Go), scratch
#   metrics-server/metrics-server:v0.9.0   sigs.k8s.io/metrics-server (Go), scratch
#   library/nginx:1.22.1                   Debian's nginx-light (the smoke test)
# The dashboard and its metrics scraper are not on the Go module proxy: their images are built
# outside the project, from GitHub snapshots (this workplace keeps such recipes out of the
# repository). When their archives are in $LAB_CACHE/images (kubernetesui-dashboard-v2.7.0,
# kubernetesui-metrics-scraper-v1.0.8), lab/registry.sh serves them and the lab stacks enable the
# dashboard; without them the lab runs without it.
# The Debian base: debootstrap minbase bookworm with iptables, iproute2, ca-certificates.
set -euo pipefail
LAB_CACHE=${LAB_CACHE:-/var/cache/kube-hardway-lab}
OUT=$LAB_CACHE/images
SRC=$LAB_CACHE/src
K8S=1.33.4 PAUSE=3.10.1 FLANNEL=0.28.10 CNI_FLANNEL=0.9.1 COREDNS=1.14.7 METRICS=0.9.0 NGINX=1.22.1
DEBIAN_MIRROR=${LAB_DEBIAN_MIRROR:-http://deb.debian.org/debian}
export GOFLAGS=-mod=mod CGO_ENABLED=0
b() { buildah --storage-driver vfs "$@"; }
log() { printf '[images] %s\n' "$*" >&2; }

modsrc() { # modsrc MODULE@VERSION DEST: a writable copy of a Go module from the proxy
  local dir
  dir=$(go mod download -json "$1" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  [ -n "$dir" ] || { log "ERROR: the Go module proxy has no $1"; exit 1; }
  rm -rf "$2"; mkdir -p "$(dirname "$2")"; cp -r "$dir" "$2"; chmod -R u+w "$2"
}

rootfs() { # rootfs NAME PACKAGES: a cached debootstrap minbase bookworm with PACKAGES
  local dir=$SRC/rootfs-$1
  if [ ! -f "$dir/.ready" ]; then
    log "debootstrap $1 ($2)"
    rm -rf "$dir"; mkdir -p "$dir"
    debootstrap --variant=minbase --include="$2" bookworm "$dir" "$DEBIAN_MIRROR" > "$SRC/rootfs-$1.log" 2>&1 \
      || { log "ERROR: debootstrap failed, see $SRC/rootfs-$1.log"; exit 1; }
    rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* "$dir"/var/log/*.log
    touch "$dir/.ready"
  fi
  echo "$dir"
}

commit() { # commit CONTAINER NAME:TAG: the image as an OCI archive
  local file
  file=$OUT/$(echo "$2" | tr '/:' '--').oci.tar
  rm -f "$file"
  b commit --quiet --rm "$1" "oci-archive:$file:$2" >/dev/null
}

# ------------------------------------------------------------------ the images

image_pause() {
  local dir=$SRC/pause c
  mkdir -p "$dir"
  cp "$(go mod download -json "k8s.io/kubernetes@v$K8S" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')/build/pause/linux/pause.c" "$dir/"
  gcc -Os -Wall -Werror -static -DVERSION="v$PAUSE-khw" -o "$dir/pause" "$dir/pause.c"
  c=$(b from scratch)
  b copy "$c" "$dir/pause" /pause >/dev/null
  b config --entrypoint '["/pause"]' --user 65535:65535 "$c"
  commit "$c" "pause:$PAUSE"
}

image_flannel() {
  local dir=$SRC/flannel-$FLANNEL c base
  modsrc "github.com/flannel-io/flannel@v$FLANNEL" "$dir"
  # without the tencentvpc backend: the proxy refuses its cloud SDK module (the lab uses vxlan)
  sed -i '\#flannel/pkg/backend/tencentvpc"#d' "$dir/main.go"
  # cgo: the udp backend is C (upstream builds with cgo too); the base image has the same glibc
  (cd "$dir" && CGO_ENABLED=1 go build -trimpath -o flanneld \
     -ldflags "-s -w -X github.com/flannel-io/flannel/pkg/version.Version=v$FLANNEL" .)
  base=$(rootfs base iptables,iproute2,ca-certificates)
  c=$(b from scratch)
  b copy "$c" "$base" / >/dev/null
  b copy "$c" "$dir/flanneld" /opt/bin/flanneld >/dev/null
  b config --entrypoint '["/opt/bin/flanneld"]' "$c"
  commit "$c" "flannel-io/flannel:v$FLANNEL"
}

image_flannel_cni_plugin() {
  local dir=$SRC/cni-plugins-$CNI_FLANNEL c base
  # the flannel meta-plugin, as containernetworking/plugins shipped it before it moved to
  # flannel-io/cni-plugin (which the proxy refuses); Debian's package no longer has it
  modsrc "github.com/containernetworking/plugins@v$CNI_FLANNEL" "$dir"
  (cd "$dir" && go build -trimpath -o flannel -ldflags "-s -w" ./plugins/meta/flannel)
  base=$(rootfs base iptables,iproute2,ca-certificates)
  c=$(b from scratch)
  b copy "$c" "$base" / >/dev/null
  b copy "$c" "$dir/flannel" /flannel >/dev/null
  b config --cmd '["cp", "-f", "/flannel", "/opt/cni/bin/flannel"]' "$c"
  commit "$c" "flannel-io/flannel-cni-plugin:v$CNI_FLANNEL"
}

image_coredns() {
  local dir=$SRC/coredns-$COREDNS c
  modsrc "github.com/coredns/coredns@v$COREDNS" "$dir"
  (cd "$dir" && go build -trimpath -o coredns -ldflags "-s -w -X github.com/coredns/coredns/coremain.GitCommit=v$COREDNS" .)
  c=$(b from scratch)
  b copy "$c" "$dir/coredns" /coredns >/dev/null
  b copy "$c" /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt >/dev/null
  b config --entrypoint '["/coredns"]' --port 53/udp --port 53/tcp "$c"
  commit "$c" "coredns/coredns:v$COREDNS"
}

image_metrics_server() {
  local dir=$SRC/metrics-server-$METRICS c
  modsrc "sigs.k8s.io/metrics-server@v$METRICS" "$dir"
  (cd "$dir" && go build -trimpath -o metrics-server \
     -ldflags "-s -w -X sigs.k8s.io/metrics-server/pkg/version.gitVersion=v$METRICS" ./cmd/metrics-server)
  c=$(b from scratch)
  b copy "$c" "$dir/metrics-server" /metrics-server >/dev/null
  b config --entrypoint '["/metrics-server"]' --user 65534:65534 --port 10250/tcp "$c"
  commit "$c" "metrics-server/metrics-server:v$METRICS"
}

image_nginx() {
  local root c
  root=$(rootfs nginx nginx-light,ca-certificates)
  local got
  # shellcheck disable=SC2016 # dpkg-query's own format, not a shell expansion
  got=$(chroot "$root" dpkg-query -W -f '${Version}' nginx-light)
  case $got in "$NGINX"-*) ;; *) log "ERROR: Debian's nginx-light is $got, not $NGINX: update NGINX"; exit 1 ;; esac
  c=$(b from scratch)
  b copy "$c" "$root" / >/dev/null
  b config --cmd '["nginx", "-g", "daemon off;"]' --port 80/tcp --stop-signal SIGQUIT "$c"
  commit "$c" "library/nginx:$NGINX"
}

IMAGES="pause flannel flannel_cni_plugin coredns metrics_server nginx"

build_one() { # build_one NAME: rebuild when the recipe (function + versions) changed
  local name=$1 stamp want t0=$SECONDS
  stamp=$OUT/.$name.stamp
  want=$( { declare -f "image_$name" rootfs modsrc commit; echo "$K8S $PAUSE $FLANNEL $CNI_FLANNEL $COREDNS $METRICS $NGINX"; } \
          | sha256sum | cut -c1-16)
  if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then return 0; fi
  log "building $name"
  "image_$name"
  echo "$want" > "$stamp"
  log "$name built in $((SECONDS - t0))s"
}

need() {
  local missing=""
  command -v buildah >/dev/null || missing="$missing buildah"
  command -v skopeo >/dev/null || missing="$missing skopeo"
  command -v debootstrap >/dev/null || missing="$missing debootstrap"
  command -v gcc >/dev/null || missing="$missing gcc libc6-dev"
  if [ -n "$missing" ]; then
    log "installing$missing"
    # shellcheck disable=SC2086
    apt-get install -y -q $missing >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q $missing >/dev/null; }
  fi
  command -v go >/dev/null || { log "ERROR: Go is needed to build the images"; exit 1; }
}

case ${1:-build} in
  build)
    need
    mkdir -p "$OUT" "$SRC"
    t0=$SECONDS
    for name in $IMAGES; do build_one "$name"; done
    log "images ready in $((SECONDS - t0))s: $(find "$OUT" -name '*.oci.tar' | wc -l) in $OUT" ;;
  list)
    for f in "$OUT"/*.oci.tar; do
      [ -f "$f" ] || continue
      echo "$f $(skopeo inspect --config "oci-archive:$f" >/dev/null 2>&1 && tar -xOf "$f" index.json | python3 -c 'import json,sys; print(json.load(sys.stdin)["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"])')"
    done ;;
  *) sed -n '2,9p' "$0"; exit 2 ;;
esac
