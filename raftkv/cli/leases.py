"""``raftkv lease grant/revoke/keep-alive/ttl/list``: leases, as etcd has them;
keys put with ``--lease`` vanish with their lease.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from raftkv.cli._common import _client_call, _endpoints_option, _timeout_option


@click.group()
def lease() -> None:
    """Grant, renew, inspect and revoke leases (keys put with --lease vanish with them)."""


@lease.command("grant")
@click.argument("ttl", type=click.IntRange(1))
@click.option("--id", "lease_id", type=click.IntRange(0, 2**63 - 1), default=0, help="Its id.")
@_endpoints_option
@_timeout_option
def lease_grant(ttl: int, lease_id: int, endpoints: str | None, timeout: float) -> None:
    """A lease of TTL seconds (raised to the cluster's minimum); prints its id."""
    granted = _client_call(endpoints, timeout, lambda c: c.lease_grant(ttl, lease_id=lease_id))
    click.echo(f"lease {granted.id} granted with TTL {granted.ttl}s")


@lease.command("revoke")
@click.argument("lease_id", type=click.IntRange(1, 2**63 - 1))
@_endpoints_option
@_timeout_option
def lease_revoke(lease_id: int, endpoints: str | None, timeout: float) -> None:
    """End the lease now: every key attached to it is deleted."""
    result = _client_call(endpoints, timeout, lambda c: c.lease_revoke(lease_id))
    click.echo(f"lease {lease_id} revoked (revision {result.revision})")


@lease.command("keep-alive")
@click.argument("lease_id", type=click.IntRange(1, 2**63 - 1))
@click.option("--once", is_flag=True, help="Renew once and exit.")
@_endpoints_option
@_timeout_option
def lease_keep_alive(lease_id: int, once: bool, endpoints: str | None, timeout: float) -> None:
    """Renew the lease every third of its TTL until Ctrl-C (or once)."""

    def run(client: Any) -> None:
        while True:
            ttl = client.lease_keepalive(lease_id)
            click.echo(f"lease {lease_id} kept alive with TTL {ttl}s")
            if once:
                return
            time.sleep(max(0.5, ttl / 3))

    try:
        _client_call(endpoints, timeout, run)
    except KeyboardInterrupt:
        sys.exit(130)


@lease.command("ttl")
@click.argument("lease_id", type=click.IntRange(1, 2**63 - 1))
@click.option("--keys", is_flag=True, help="List the keys attached to it.")
@_endpoints_option
@_timeout_option
def lease_ttl(lease_id: int, keys: bool, endpoints: str | None, timeout: float) -> None:
    """The lease's remaining TTL as the leader counts it (and its keys)."""
    info = _client_call(endpoints, timeout, lambda c: c.lease_ttl(lease_id, keys=keys))
    line = f"lease {info.id} granted with TTL {info.granted_ttl}s, remaining {info.ttl}s"
    if keys:
        line += ", keys: " + (" ".join(info.keys) if info.keys else "(none)")
    click.echo(line)


@lease.command("list")
@_endpoints_option
@_timeout_option
def lease_list(endpoints: str | None, timeout: float) -> None:
    """Every lease, one per line: ID (granted TTL)."""
    leases = _client_call(endpoints, timeout, lambda c: c.leases())
    click.echo(f"{len(leases)} lease(s)")
    for granted in leases:
        click.echo(f"{granted.id} (TTL {granted.ttl}s)")
