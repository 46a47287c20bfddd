"""kube-hardway components: one ComponentResource per file, in data-flow order:
config -> pki -> host -> etcd -> control_plane (+ loadbalancer) -> worker."""
