"""ApiLoadBalancer: nginx (layer 4) + keepalived VIP on the LB hosts, as in seed 004.

The first LB host starts as VRRP MASTER (priority 120), the others as BACKUP (110, 100, ...);
keepalived moves the VIP away from a host whose nginx can no longer reach an apiserver.
The LB hosts' steps run one after the other, each waiting until its nginx listens again: a
change to both restarts them one at a time, so the VIP always has a host to move to. They run
after every apiserver is ready, so a control plane being added is in nginx's upstreams only once
it serves; one being removed leaves the upstreams before Pulumi deletes its apiserver (deletes
come last). A changed upstream or peer list is reloaded, not restarted.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import pulumi
import pulumi_random as random

from .config import ClusterConfig
from .host import Host
from .remote import RemoteFile, Step, render, script

SETTLE_S = 3  # nginx's fail_timeout for an apiserver; see ControlPlane's rolling restarts


class ApiLoadBalancer(pulumi.ComponentResource):
    def __init__(self, name: str, cfg: ClusterConfig, hosts: Mapping[str, Host],
                 apiservers: Sequence[pulumi.Resource], opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("khw:index:ApiLoadBalancer", name, None, opts)
        lbs = cfg.lb_hosts
        # VRRP PASS authentication takes at most 8 characters
        auth = random.RandomPassword("vrrp-auth", length=8, special=False,
                                     opts=pulumi.ResourceOptions(parent=self))
        # an apiserver that refused a connection (restarting) is skipped for SETTLE_S only: the
        # rolling restart of the next one waits that long, so one of them is always in rotation
        upstreams = "\n".join(f"        server {h.internal_address}:{cfg.api.port} max_fails=1 fail_timeout={SETTLE_S}s;"
                              for h in cfg.control_planes)
        nginx_conf = render("api-lb-nginx.conf", upstreams=upstreams, listen="0.0.0.0", lb_port=cfg.api.lb_port)
        self.steps: list[Step] = []
        previous: list[pulumi.Resource] = []
        for i, h in enumerate(lbs):
            # the packages on every LB host at once; the configuration one host after the other
            packages = Step(f"{h.name}-lb-packages", h, step="lb-packages", script_name="lb-packages.sh",
                            teardown=script("lb-packages-remove.sh"),
                            opts=pulumi.ResourceOptions(parent=self, depends_on=[hosts[h.name].prep]))
            self.steps.append(packages)
            peers = "\n".join(f"        {p.internal_address}" for p in lbs if p.name != h.name)
            keepalived = auth.result.apply(lambda pw, h=h, i=i, peers=peers: render(
                "keepalived.conf.in", name=h.name, state="MASTER" if i == 0 else "BACKUP",
                interface=cfg.api.vrrp_interface or "@VRRP_INTERFACE@", router_id=cfg.api.vrrp_router_id,
                priority=120 - 10 * i, ip=h.internal_address, peers=peers, auth_pass=pw, vip=cfg.api.vip,
                lb_port=cfg.api.lb_port))
            files = [
                RemoteFile("/etc/kube-hardway/lb/nginx.conf", nginx_conf),
                RemoteFile("/etc/kube-hardway/lb/keepalived.conf.in", keepalived, "0600"),
                RemoteFile("/etc/kube-hardway/lb/check-apiserver.sh", script("check-apiserver.sh"), "0755"),
                RemoteFile("/etc/systemd/system/kube-apiserver-lb.service", render("kube-apiserver-lb.service")),
                RemoteFile("/etc/systemd/system/kube-apiserver-vip.service", render("kube-apiserver-vip.service")),
            ]
            api_lb = Step(
                f"{h.name}-api-lb", h, step="api-lb", files=files, script_name="api-lb.sh",
                teardown=script("api-lb-remove.sh"),
                units=["kube-apiserver-vip.service", "kube-apiserver-lb.service"],
                env={"KHW_VRRP_INTERFACE": cfg.api.vrrp_interface or "", "KHW_IP": h.internal_address,
                     "KHW_LB_PORT": str(cfg.api.lb_port)},
                opts=pulumi.ResourceOptions(parent=self, depends_on=[packages, *apiservers, *previous]))
            self.steps.append(api_lb)
            previous = [api_lb]
        self.register_outputs({"vip": cfg.api.vip, "port": cfg.api.lb_port})
