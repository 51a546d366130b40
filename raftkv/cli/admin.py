"""The cluster's administration: ``status`` (every node's view), ``members
list/add/promote/update/remove`` and ``transfer-leader``, over the HTTP routes
/v1/status, /v1/members and /v1/leader/transfer.
"""

from __future__ import annotations

import click

from raftkv.cli._common import (
    _admin_call,
    _endpoints_option,
    _fail,
    _scheme,
    _show,
    _timeout_option,
)


@click.command()
@_endpoints_option
@_timeout_option
def status(endpoints: str | None, timeout: float) -> None:
    """Show every node's status (role, term, leader, indexes)."""
    import json as _json

    answers = _admin_call(endpoints, timeout, lambda client: client.statuses())
    scheme = _scheme(endpoints)
    ok = False
    for answer in answers:
        base = scheme + answer.endpoint
        payload = answer.status
        if payload is not None:
            ok = True
            store = f" revision={payload['revision']}" if "revision" in payload else ""
            if payload.get("alarm"):
                store += f" alarm={payload['alarm']}"
            click.echo(
                f"{payload['id']:<6} {base:<26} {payload['role']:<10} term={payload['term']} "
                f"leader={payload['leader']} commit={payload['commit_index']} "
                f"applied={payload['applied_index']}{store}"
            )
        else:
            click.echo(f"{'?':<6} {base:<26} unreachable: {_json.dumps(answer.body)}")
    if not ok:
        _fail("cluster unreachable")


@click.group()
def members() -> None:
    """List, add, update or remove cluster members."""


@members.command("list")
@_endpoints_option
@_timeout_option
def members_list(endpoints: str | None, timeout: float) -> None:
    """Show the replicated address book, the voters/learners and the removed ids."""
    _show(_admin_call(endpoints, timeout, lambda client: client.members()))


@members.command("add")
@click.argument("node_id")
@click.option("--raft-addr", required=True, help="HOST:PORT of the new node's peer transport.")
@click.option("--api-addr", required=True, help="HOST:PORT of the new node's HTTP API.")
@click.option("--learner", is_flag=True, help="Add as a non-voting learner.")
@_endpoints_option
@_timeout_option
def members_add(
    node_id: str,
    raft_addr: str,
    api_addr: str,
    learner: bool,
    endpoints: str | None,
    timeout: float,
) -> None:
    """Add NODE_ID, then start it with `raftkv serve --initial-cluster-state existing`.

    Its --initial-cluster lists the current members plus itself. Add large or
    slow-to-catch-up nodes as --learner first, then `raftkv members promote`.
    An id that was removed from the cluster is refused (HTTP 409): a node that
    replaces one, even on the same machine, joins under a new id.
    """
    _show(
        _admin_call(
            endpoints,
            timeout,
            lambda client: client.member_add(
                node_id, raft_addr=raft_addr, api_addr=api_addr, learner=learner
            ),
        )
    )


@members.command("promote")
@click.argument("node_id")
@_endpoints_option
@_timeout_option
def members_promote(node_id: str, endpoints: str | None, timeout: float) -> None:
    """Make the learner NODE_ID a voter (refused until it has caught up)."""
    _show(_admin_call(endpoints, timeout, lambda client: client.member_promote(node_id)))


@members.command("update")
@click.argument("node_id")
@click.option("--raft-addr", required=True, help="HOST:PORT of the member's peer transport.")
@click.option("--api-addr", required=True, help="HOST:PORT of the member's HTTP API.")
@_endpoints_option
@_timeout_option
def members_update(
    node_id: str, raft_addr: str, api_addr: str, endpoints: str | None, timeout: float
) -> None:
    """Give the member NODE_ID new addresses (moving it to another host or port).

    Every member updates its address book and peer links once the change
    commits; then restart NODE_ID with the same --raft-addr and --api-addr.
    Until it restarts there, the others cannot reach it: update one member at
    a time, and only while the rest still form a quorum.
    """
    _show(
        _admin_call(
            endpoints,
            timeout,
            lambda client: client.member_update(node_id, raft_addr=raft_addr, api_addr=api_addr),
        )
    )


@members.command("remove")
@click.argument("node_id")
@_endpoints_option
@_timeout_option
def members_remove(node_id: str, endpoints: str | None, timeout: float) -> None:
    """Remove NODE_ID from the cluster; the id can never be added again."""
    _show(_admin_call(endpoints, timeout, lambda client: client.member_remove(node_id)))


@click.command("transfer-leader")
@click.argument("node_id")
@_endpoints_option
@_timeout_option
def transfer_leader(node_id: str, endpoints: str | None, timeout: float) -> None:
    """Hand leadership to NODE_ID."""
    _show(_admin_call(endpoints, timeout, lambda client: client.transfer_leader(node_id)))
