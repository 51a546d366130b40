"""Locks and leader election on leases and watch, as etcd's ``concurrency`` recipes.

Rules:

1. A :class:`Session` is a lease kept alive from a background thread. Every
   key a lock or an election writes is attached to it: when the session ends
   -- closed, or its process stopped and the lease expired on the leader's
   clock -- its keys are deleted, and the next in line goes ahead.
2. A contender writes ``NAME/<lease id in hex>`` once (a transaction: only if
   absent), so its key's ``create_revision`` is its place in line; the holder
   is the key with the lowest ``create_revision`` under ``NAME/``. A
   contender waits for its predecessor -- the key just before its own -- to be
   deleted (a watch from the revision of the read that found it, so a delete
   in between is not missed), then looks again: it holds the lock once no key
   older than its own is left. Nobody polls, and a release wakes one waiter.
3. While the lease is alive, no other session can hold the lock: a holder's
   key goes only with its lease or its own release. A holder that cannot keep
   its lease alive must stop acting as the holder once :attr:`Session.lost` is
   set (``raftkv lock`` then stops its command).

Synchronous, on :class:`~raftkv.client.Client`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import TracebackType

from raftkv.client.client import Client, KeepAlive
from raftkv.client.errors import ClientError, JSONValue, LeaseNotFound, NotFound
from raftkv.client.results import KeyValue

__all__ = ["Session", "Lock", "Election", "LockLost", "observe_leader", "DEFAULT_SESSION_TTL"]

DEFAULT_SESSION_TTL = 10
"""Seconds a session's lease lives without a keep-alive (its holder's grace)."""


class LockLost(ClientError):
    """The session's lease ended (expired or revoked) before or while holding."""


class Session:
    """A lease kept alive while the session is open (Rule 1).

    Args:
        client: the client to use (also by the keep-alive thread).
        ttl: the lease's TTL in seconds (the cluster raises it to its minimum).
    """

    def __init__(self, client: Client, *, ttl: int = DEFAULT_SESSION_TTL) -> None:
        self.client = client
        lease = client.lease_grant(ttl)
        self.lease_id = lease.id
        self.ttl = lease.ttl
        self._keepalive: KeepAlive = client.keep_alive(lease.id)

    @property
    def lost(self) -> bool:
        """Whether the lease may have ended: gone, or its TTL passed since the
        last renewing keep-alive was sent (never later than the leader's count)."""
        return self._keepalive.expired()

    def wait_lost(self, timeout: float | None = None) -> bool:
        """Wait until :attr:`lost` (at most ``timeout`` seconds); whether it is."""
        return self._keepalive.wait_lost(timeout)

    def close(self) -> None:
        """Stop renewing and revoke the lease (its keys are deleted now)."""
        self._keepalive.close()
        with contextlib.suppress(LeaseNotFound):
            self.client.lease_revoke(self.lease_id)

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Lock:
    """A mutual-exclusion lock named ``name`` held through ``session`` (Rule 2).

    ``value`` is what the contender's key holds (an election's proposal).
    """

    def __init__(self, session: Session, name: str, value: JSONValue = "") -> None:
        self.session = session
        self.prefix = name.rstrip("/") + "/"
        self.key = f"{self.prefix}{session.lease_id:x}"
        self.value = value
        self.revision = 0  # the create_revision of our key once written

    def acquire(self) -> KeyValue:
        """Wait until this session holds the lock; the key it holds it by.

        Raises:
            LockLost: the session's lease ended first.
        """
        client = self.session.client
        answer = client.txn(
            compare=[{"key": self.key, "target": "create_revision", "op": "==", "value": 0}],
            success=[
                {"put": {"key": self.key, "value": self.value, "lease": self.session.lease_id}}
            ],
            failure=[{"range": {"key": self.key}}],
        )
        if answer.succeeded:
            self.revision = answer.revision
        else:
            kvs = _range_kvs(answer.responses[0]) if answer.responses else ()
            if not kvs:
                raise LockLost(f"lock {self.prefix!r}: our key vanished")
            self.revision = kvs[0].create_revision
        while True:
            if self.session.lost:
                raise LockLost(f"lock {self.prefix!r}: the session's lease ended")
            listing = client.range(prefix=self.prefix)
            mine = [kv for kv in listing.kvs if kv.key == self.key]
            if not mine:
                raise LockLost(f"lock {self.prefix!r}: our key was deleted (lease ended)")
            older = [kv for kv in listing.kvs if kv.create_revision < self.revision]
            if not older:
                return mine[0]
            predecessor = max(older, key=lambda kv: kv.create_revision)
            self._wait_deleted(predecessor.key, listing.revision + 1)

    def _wait_deleted(self, key: str, start_revision: int) -> None:
        with self.session.client.watch(key, start_revision=start_revision) as watch:
            for response in watch:
                if any(e.type == "delete" for e in response.events):
                    return
                if self.session.lost:
                    return

    def release(self) -> None:
        """Give the lock up (delete our key); a no-op if it is gone already."""
        with contextlib.suppress(NotFound):
            self.session.client.delete(self.key)

    def __enter__(self) -> Lock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class Election(Lock):
    """Leader election on ``name``: campaigning is acquiring the lock with one's
    proposal as the value; the leader is the holder (etcd's ``Election``)."""

    def campaign(self) -> KeyValue:
        """Wait until elected; the leader key (its value is our proposal)."""
        return self.acquire()

    def resign(self) -> None:
        self.release()

    def leader(self) -> KeyValue | None:
        """The current leader's key (lowest create_revision), or None."""
        listing = self.session.client.range(prefix=self.prefix)
        return min(listing.kvs, key=lambda kv: kv.create_revision, default=None)


def observe_leader(client: Client, name: str) -> Iterator[KeyValue | None]:
    """The leader of the election ``name`` now, then each time it changes (None:
    nobody campaigns); endless (a watch of ``NAME/``, resumed across failures)."""
    prefix = name.rstrip("/") + "/"
    listing = client.range(prefix=prefix)
    leader = min(listing.kvs, key=lambda kv: kv.create_revision, default=None)
    yield leader
    with client.watch(prefix=prefix, start_revision=listing.revision + 1) as watch:
        for _ in watch:
            now = min(
                client.range(prefix=prefix).kvs, key=lambda kv: kv.create_revision, default=None
            )
            if (now and (now.key, now.create_revision)) != (
                leader and (leader.key, leader.create_revision)
            ):
                leader = now
                yield leader


def _range_kvs(response: JSONValue) -> tuple[KeyValue, ...]:
    body = response.get("range") if isinstance(response, dict) else None
    kvs = body.get("kvs") if isinstance(body, dict) else None
    return tuple(KeyValue.of(kv) for kv in kvs) if isinstance(kvs, list) else ()
