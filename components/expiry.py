"""Expiry: a point in time fixed when the resource is created, for the bootstrap token's expiry.

The token Secret's `expiration` must not move on every `pulumi up` (a time computed in the
program would), and it must start again when the token is rotated. An `Expiry` is created once
per token id and holds `at` = its creation time + `hours`; a new token id or other hours replace
it, with a new time. (`ignore_changes` cannot do this: the kubernetes provider moves a Secret's
stringData into data, so the ignored value is dropped on the next update, and a rotated token
would inherit the old, perhaps past, expiry.)
"""
from __future__ import annotations

import datetime
from typing import Optional

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ResourceProvider


def expiry(hours: int, now: Optional[datetime.datetime] = None) -> str:
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return (now + datetime.timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")


class ExpiryProvider(ResourceProvider):
    def create(self, props: dict) -> CreateResult:
        return CreateResult(id_=str(props["key"]), outs={**props, "at": expiry(int(props["hours"]))})

    def diff(self, id_: str, olds: dict, news: dict) -> DiffResult:
        changed = [k for k in ("key", "hours") if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed), replaces=changed, stables=[], delete_before_replace=False)


class Expiry(pulumi.dynamic.Resource):
    """`at`: RFC 3339 time, `hours` after this resource was created for `key`."""

    at: pulumi.Output[str]

    def __init__(self, name: str, key: pulumi.Input[str], hours: int,
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(ExpiryProvider(), name, {"key": key, "hours": hours, "at": None}, opts)
