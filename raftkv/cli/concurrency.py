"""``raftkv lock`` and ``raftkv elect``: a lock and a leader election of
:mod:`raftkv.client.concurrency`, held through a session lease kept alive
meanwhile; Ctrl-C or SIGTERM releases them at once.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from raftkv.cli._common import (
    _client_call,
    _endpoints_option,
    _fail,
    _json_arg,
    _kv_text,
    _timeout_option,
)

_ttl_option = click.option(
    "--ttl",
    type=click.IntRange(1),
    default=10,
    show_default=True,
    help="The session lease's TTL: how long a holder that stopped renewing keeps it.",
)


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@_ttl_option
@_endpoints_option
@_timeout_option
def lock(
    name: str, command: tuple[str, ...], ttl: int, endpoints: str | None, timeout: float
) -> None:
    """Hold the lock NAME (waiting for it), then run COMMAND and release it.

    Without COMMAND: print the lock's key and hold it until Ctrl-C. The lock is
    held through a lease kept alive meanwhile; if the lease is lost (this
    process could not renew it for TTL seconds), COMMAND is terminated and the
    exit status is 1. Otherwise the exit status is COMMAND's. COMMAND sees the
    key as $RAFTKV_LOCK_KEY. Use -- before a COMMAND with options. Ctrl-C or
    SIGTERM releases the lock at once (and stops COMMAND)."""
    from raftkv.client.concurrency import Lock, LockLost, Session

    _interrupt_on_sigterm()

    def run(client: Any) -> int:
        with Session(client, ttl=ttl) as session:
            mutex = Lock(session, name)
            try:
                held = mutex.acquire()
            except LockLost as exc:
                _fail(str(exc))
            try:
                return _hold(session, held.key, command)
            finally:
                mutex.release()

    try:
        code = _client_call(endpoints, timeout, run)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(code)


def _interrupt_on_sigterm() -> None:
    """SIGTERM (``kill``, ``timeout``) ends a lock or election as Ctrl-C does:
    the key is released and the lease revoked now, not after its TTL."""
    import signal

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def _hold(session: Any, key: str, command: tuple[str, ...]) -> int:
    """Run ``command`` (or wait for Ctrl-C) while the session's lease lives."""
    import subprocess

    if not command:
        click.echo(key)
        session.wait_lost()
        click.echo(f"lost {key}: the lease ended", err=True)
        return 1
    env = {**os.environ, "RAFTKV_LOCK_KEY": key}
    child = subprocess.Popen(list(command), env=env)
    try:
        while True:
            try:
                return child.wait(timeout=0.1)
            except subprocess.TimeoutExpired:
                pass
            if session.lost:
                click.echo(f"lost {key}: the lease ended; stopping the command", err=True)
                child.terminate()
                try:
                    child.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
                return 1
    finally:
        if child.poll() is None:
            child.terminate()
            child.wait()


@click.command()
@click.argument("name")
@click.argument("value", required=False)
@click.option(
    "--listen", is_flag=True, help="Do not campaign: print the leader each time it changes."
)
@_ttl_option
@_endpoints_option
@_timeout_option
def elect(
    name: str, value: str | None, listen: bool, ttl: int, endpoints: str | None, timeout: float
) -> None:
    """Campaign to be the leader of NAME with the JSON VALUE as proposal; once
    elected print the leader key and value, and lead until Ctrl-C (or until the
    lease is lost: exit status 1). With --listen (no VALUE): print the leader's
    key and value now and whenever the leader changes, until Ctrl-C."""
    from raftkv.client.concurrency import Election, LockLost, Session, observe_leader

    if listen == (value is not None):
        raise click.UsageError("give VALUE to campaign, or --listen to follow the leader")
    _interrupt_on_sigterm()

    def follow(client: Any) -> int:
        for leader in observe_leader(client, name):
            click.echo("(no leader)" if leader is None else f"{leader.key} {_kv_text(leader)}")
        return 0

    def run(client: Any) -> int:
        proposal = _json_arg(value or "", "VALUE")
        with Session(client, ttl=ttl) as session:
            election = Election(session, name, proposal)
            try:
                leader = election.campaign()
            except LockLost as exc:
                _fail(str(exc))
            try:
                click.echo(f"{leader.key} {_kv_text(leader)}")
                session.wait_lost()
                click.echo(f"lost {leader.key}: the lease ended", err=True)
                return 1
            finally:
                election.resign()

    try:
        code = _client_call(endpoints, timeout, follow if listen else run)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(code)
