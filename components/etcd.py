"""EtcdCluster: the external, TLS-only etcd cluster of seed 004.

Per member one `etcd` step (certs, config, unit, the snapshot helper), one member after the
other: a new member starts without waiting for quorum, so a fresh cluster forms in seconds, and a
restarted member waits until it serves again, so a change that touches every member (a renewed
certificate) restarts them one at a time and quorum holds. Then one `etcd-health` step waits
until every member answers healthy over TLS. With `etcdBackup.schedule`, per member an
`etcd-backup` step: a systemd timer taking snapshots, the newest `etcdBackup.keep` kept.

Membership (scripts/etcd.sh, etcd-leave.sh, etcd-health.sh): the member list lives in a file of
its own that etcd reads only at a member's first start, so adding or removing a member restarts
no other member. A member added to a running cluster joins it (snapshot, `member add --learner`,
state "existing", promotion once caught up); a member taken out of the config leaves it in its
teardown (`member remove`, after the leadership moved away), which Pulumi runs after the
apiservers stopped using it; `etcd-health` takes a snapshot before any member leaves.
"""
from __future__ import annotations

from typing import Mapping, Optional

import pulumi

from .config import ClusterConfig
from .host import Host
from .pki import Pki
from .remote import RemoteFile, Step, render, script


class EtcdCluster(pulumi.ComponentResource):
    def __init__(self, name: str, cfg: ClusterConfig, pki: Pki, hosts: Mapping[str, Host],
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("khw:index:EtcdCluster", name, None, opts)
        members = cfg.etcd_hosts
        initial = ",".join(f"{h.name}=https://{h.internal_address}:2380" for h in members)
        cluster_conf = render("etcd-cluster.conf", initial_cluster=initial, cluster_token=f"{cfg.cluster_name}-etcd",
                              endpoints=",".join(cfg.etcd_client_urls))
        backup_dir = cfg.etcd_backup.dir
        self.members: dict[str, Step] = {}
        previous: list[pulumi.Resource] = []
        for h in members:
            server, peer = pki.etcd_server[h.name], pki.etcd_peer[h.name]
            files = [
                RemoteFile("/opt/etcd/ssl/ca.pem", pki.etcd_ca.trust_pem),
                RemoteFile("/opt/etcd/ssl/server.pem", server.cert_pem),
                RemoteFile("/opt/etcd/ssl/server-key.pem", server.key_pem, "0600"),
                RemoteFile("/opt/etcd/ssl/peer.pem", peer.cert_pem),
                RemoteFile("/opt/etcd/ssl/peer-key.pem", peer.key_pem, "0600"),
                RemoteFile("/opt/etcd/cfg/etcd.conf", render("etcd.conf", name=h.name, ip=h.internal_address)),
                RemoteFile("/opt/etcd/cfg/etcd-cluster.conf", cluster_conf),
                RemoteFile("/etc/systemd/system/etcd.service", render("etcd.service")),
                RemoteFile("/opt/etcd/bin/etcd-snapshot", script("etcd-snapshot.sh"), "0755"),
            ]
            self.members[h.name] = Step(
                f"{h.name}-etcd", h, step="etcd", files=files, script_name="etcd.sh",
                before_stop=script("etcd-leave.sh"), teardown=script("etcd-remove.sh"), units=["etcd.service"],
                env={"KHW_BACKUP_DIR": backup_dir},
                watch=[RemoteFile("/opt/etcd/bin/etcd", cfg.versions.etcd)],
                opts=pulumi.ResourceOptions(parent=self, depends_on=[hosts[h.name].binaries, *previous]))
            previous = [self.members[h.name]]  # rolling: one member at a time

        # scheduled snapshots (etcdBackup): a step of its own, so that changing the schedule
        # never restarts etcd
        self.backups: dict[str, Step] = {}
        b = cfg.etcd_backup
        if b.schedule is not None:
            for h in members:
                self.backups[h.name] = Step(
                    f"{h.name}-etcd-backup", h, step="etcd-backup", script_name="etcd-backup.sh",
                    files=[RemoteFile("/etc/systemd/system/etcd-snapshot.service",
                                      render("etcd-snapshot.service", dir=b.dir, keep=b.keep)),
                           RemoteFile("/etc/systemd/system/etcd-snapshot.timer",
                                      render("etcd-snapshot.timer", schedule=b.schedule)),
                           RemoteFile("/opt/etcd/bin/etcd-snapshot-scheduled",
                                      script("etcd-snapshot-scheduled.sh"), "0755")],
                    units=["etcd-snapshot.timer", "etcd-snapshot.service"], env={"KHW_SCHEDULE": b.schedule},
                    opts=pulumi.ResourceOptions(parent=self, depends_on=[self.members[h.name]]))

        self.client_urls = cfg.etcd_client_urls
        first = members[0]
        self.healthy = Step(
            f"{first.name}-etcd-health", first, step="etcd-health", script_name="etcd-health.sh",
            env={"KHW_ENDPOINTS": ",".join(self.client_urls), "KHW_MEMBERS": ",".join(h.name for h in members),
                 "KHW_BACKUP_DIR": backup_dir},
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(self.members.values())))
        self.register_outputs({"client_urls": self.client_urls})
