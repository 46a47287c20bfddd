#!/usr/bin/env bash
# A local lab cluster in one command, for trying the program without hosts of your own. ./run
# calls this around `pulumi up` / `pulumi destroy` of the lab stacks (lab, lab-ha):
#
#   lab/cluster.sh check            refuse, before anything is touched, where the lab cannot work
#   lab/cluster.sh prepare          the machines, the artifact mirror, the images and the registry
#                                   (each built or taken from the cache, each phase timed)
#   lab/cluster.sh up STACK [ARGS]  `pulumi up` of the stack (timed), then what to do with it:
#                                   kubeconfig, nodes, dashboard
#   lab/cluster.sh teardown         the registry, the mirror and the machines gone
#
# Cold (nothing cached), the Kubernetes build and the images take most of the time; see
# docs/lab.md for the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
LAB_CACHE=${LAB_CACHE:-/var/cache/kube-hardway-lab}
K8S=1.33.4
KUBECTL=$LAB_CACHE/kubernetes/v$K8S/kubectl
TIMES=${LAB_TIMES:-/tmp/kube-hardway-lab.times}

log() { printf '==> %s\n' "$*"; }
refuse() { printf 'error: the lab cannot run here: %s\n' "$*" >&2; exit 1; }

cached_k8s() { [ -x "$KUBECTL" ] && [ -x "$LAB_CACHE/kubernetes/v$K8S/kubelet" ]; }
cached_images() { [ "$(find "$LAB_CACHE/images" -name '*.oci.tar' 2>/dev/null | wc -l)" -ge 6 ]; }

check() {
  local avail_kb free_gb need_gb go_minor
  [ "$(id -u)" = 0 ] || refuse "it needs root (it makes systemd-nspawn machines and a bridge); run it as root"
  if ! command -v systemd-nspawn >/dev/null; then
    apt-cache show systemd-container >/dev/null 2>&1 \
      || refuse "systemd-nspawn is missing and the package systemd-container cannot be installed (apt)"
  fi
  command -v debootstrap >/dev/null || apt-cache show debootstrap >/dev/null 2>&1 \
    || refuse "debootstrap is missing and cannot be installed (apt)"
  grep -qw overlay /proc/filesystems || modprobe -q overlay 2>/dev/null || refuse "the kernel has no overlayfs"
  [ -d /sys/fs/cgroup/memory ] || refuse "no cgroup v1 memory hierarchy (/sys/fs/cgroup/memory): lab/lab.sh needs the v1 hierarchies"
  avail_kb=$(awk '/^MemAvailable:/ {print $2}' /proc/meminfo)
  [ "$avail_kb" -ge $((3 * 1024 * 1024)) ] || refuse "$((avail_kb / 1024)) MiB of memory available; three lab machines with Kubernetes need 3 GiB"
  # cold: the Go module and build caches and the image builds; warm: the machines' overlays
  need_gb=10
  if ! cached_k8s || ! cached_images; then
    need_gb=30
    command -v go >/dev/null || refuse "Go is missing: Kubernetes and the images are built from source (Go 1.24 or later)"
    go_minor=$(go env GOVERSION | sed -nE 's/^go1\.([0-9]+).*/\1/p')
    [ "${go_minor:-0}" -ge 24 ] || refuse "$(go env GOVERSION) is too old: building Kubernetes v$K8S needs Go 1.24 or later"
  fi
  mkdir -p "$LAB_CACHE" 2>/dev/null || true
  free_gb=$(df -Pk "$LAB_CACHE" | awk 'NR==2 {print int($4 / 1024 / 1024)}')
  [ "$free_gb" -ge "$need_gb" ] || refuse "$free_gb GiB free on the disk of $LAB_CACHE; the lab needs $need_gb GiB ($( [ "$need_gb" = 30 ] && echo 'nothing is cached yet' || echo 'caches warm'))"
}

phase() { # phase N/M "what" command...: run it, print and record its time
  local n=$1 what=$2 t0=$SECONDS; shift 2
  log "[$n] $what"
  "$@"
  printf '%s\t%s\n' "$what" "$((SECONDS - t0))" >> "$TIMES"
  log "[$n] done in $((SECONDS - t0)) s"
}

prepare() {
  : > "$TIMES"
  local k8s_note="cached" img_note="cached"
  cached_k8s || k8s_note="not cached: built from source, about 6 min"
  cached_images || img_note="not cached: built from source, about 6 min"
  phase 1/6 "Kubernetes v$K8S binaries ($k8s_note)" lab/build-kubernetes.sh "$K8S"
  phase 2/6 "container images ($img_note)" lab/images/build.sh
  phase 3/6 "lab machines lab1-lab3 (the template is cached after the first run, about 80 s)" lab/lab.sh up 3
  phase 4/6 "artifact mirror on http://10.77.0.1:8080/" sh -c 'lab/mirror.sh build && lab/mirror.sh serve'
  phase 5/6 "image registry on http://10.77.0.1:5000/" sh -c 'lab/registry.sh serve && lab/registry.sh push'
}

up() {
  local stack=$1; shift
  phase 6/6 "pulumi up of stack $stack: the cluster, its pod network and add-ons (about 80 s)" \
    pulumi up --stack "$stack" "$@"
  summary "$stack"
}

summary() {
  local stack=$1 cfg url
  cfg=$HOME/.kube/kube-hardway-$stack.yaml
  mkdir -p "$HOME/.kube"
  (umask 077 && pulumi stack output kubeconfig --show-secrets --stack "$stack" > "$cfg")
  echo
  log "the lab cluster is up. Where the time went:"
  [ -f "$TIMES" ] && awk -F'\t' '{printf "    %5d s  %s\n", $2, $1}' "$TIMES"
  if [ -n "${KHW_T0:-}" ]; then printf '    %5d s  in all, with the Python packages and the engine\n' "$(($(date +%s) - KHW_T0))"; fi
  echo
  echo "kubeconfig: $cfg"
  echo "    export KUBECONFIG=$cfg PATH=$(dirname "$KUBECTL"):\$PATH"
  echo
  "$KUBECTL" --kubeconfig "$cfg" get nodes -o wide || true
  echo
  if url=$(pulumi stack output dashboardUrl --stack "$stack" 2>/dev/null); then
    echo "dashboard: $url (its certificate is signed by the cluster CA: ./run pulumi stack output caCertificate --stack $stack)"
    echo "    token: ./run pulumi stack output dashboardToken --show-secrets --stack $stack"
  fi
  echo "smoke test: $(pulumi stack output smokeTest --stack "$stack" 2>/dev/null | head -1)"
  echo "remove it all: ./run down $stack"
}

teardown() {
  lab/registry.sh stop || true
  lab/mirror.sh stop || true
  lab/lab.sh down
}

case ${1:-} in
  check) check ;;
  prepare) prepare ;;
  up) shift; up "$@" ;;
  summary) summary "$2" ;;
  teardown) teardown ;;
  *) sed -n '2,12p' "$0"; exit 2 ;;
esac
