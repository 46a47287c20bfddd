# shellcheck shell=bash
# Step "containerd": the container runtime (runc + CNI plugin binaries came with "binaries").
# Env: KHW_REGISTRY_HOSTS: the registries with a hosts.toml of ours (written above); another
# one under /etc/containerd/certs.d is a mirror the stack no longer names, and goes.
# The pod network's config comes from its DaemonSet; what it leaves goes with step cni-<name>.
mkdir -p /etc/cni/net.d /opt/cni/bin
for d in /etc/containerd/certs.d/*/; do
  [ -d "$d" ] || continue
  d=${d%/}
  case " $KHW_REGISTRY_HOSTS " in *" ${d##*/} "*) ;; *) rm -rf "$d"; khw_log "removed $d (no longer the image mirror)" ;; esac
done
# hosts.toml is read on every pull: only the config and the binaries restart containerd
khw_service containerd.service /var/lib/kube-hardway/ /etc/containerd/config.toml
KHW_UNIT=containerd.service khw_wait 60 "containerd socket" test -S /run/containerd/containerd.sock
khw_log "containerd running"
