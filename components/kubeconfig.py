"""Kubeconfig files (seed 004's kubeconfig.sh), rendered from templates/kubeconfig.yaml."""
from __future__ import annotations

import base64
from typing import Optional

import pulumi

from .remote import render


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def kubeconfig(cluster: str, server: str, ca_pem: pulumi.Input[str], user: str,
               cert_pem: Optional[pulumi.Input[str]] = None, key_pem: Optional[pulumi.Input[str]] = None,
               token: Optional[pulumi.Input[str]] = None) -> pulumi.Output[str]:
    """A kubeconfig for one user: client certificate or bearer token. Always a secret."""

    def build(args: list) -> str:
        ca, cert, key, tok = args
        if tok is not None:
            creds = f"    token: {tok}"
        else:
            creds = f"    client-certificate-data: {_b64(cert)}\n    client-key-data: {_b64(key)}"
        return render("kubeconfig.yaml", cluster=cluster, server=server, ca_data=_b64(ca), user=user,
                      credentials=creds)

    return pulumi.Output.secret(pulumi.Output.all(ca_pem, cert_pem, key_pem, token).apply(build))
