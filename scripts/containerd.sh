# shellcheck shell=bash
# Step "containerd": the container runtime (runc + CNI plugin binaries came with "binaries").
mkdir -p /etc/cni/net.d /opt/cni/bin
khw_service containerd.service /var/lib/kube-hardway/ /etc/containerd/
KHW_UNIT=containerd.service khw_wait 60 "containerd socket" test -S /run/containerd/containerd.sock
khw_log "containerd running"
