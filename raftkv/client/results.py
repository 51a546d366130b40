"""What the clients' calls return: frozen values built from the API's JSON answers.

Rule: building a result never raises. A field the answer lacks (an older
server, a replayed write) is ``None`` or empty, so that a result can always be
returned once the server said the call succeeded. Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass

from raftkv.client.errors import JSONValue

__all__ = [
    "WriteResult",
    "ReadResult",
    "KeyValue",
    "RangeResult",
    "DeleteResult",
    "TxnResult",
    "CompactResult",
    "WatchEvent",
    "WatchResponse",
    "Lease",
    "LeaseInfo",
    "EndpointStatus",
]

Body = dict[str, JSONValue]


def _int(body: Body, name: str) -> int | None:
    value = body.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _revision(body: Body) -> int:
    return _int(body, "revision") or 0


def _leader(body: Body) -> str | None:
    leader = body.get("leader")
    return leader if isinstance(leader, str) else None


@dataclass(frozen=True, slots=True, kw_only=True)
class WriteResult:
    """A committed write.

    Attributes:
        index: the log index at which it was applied (``None`` if not reported).
        endpoint: the API address that answered.
        leader: the leader's node id, if known (from the answer or from status).
        revision: the store revision the write made (or the current one, if it
            changed nothing; ``None`` if not reported).
    """

    index: int | None
    endpoint: str
    leader: str | None = None
    revision: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadResult:
    """A value read, with the applied index it is current as of (if reported).

    Attributes:
        key: the key.
        value: its value (at ``revision`` if one was asked for).
        index: the applied index the read was served at.
        create_revision: the revision that created the key (``None`` if not reported).
        mod_revision: the revision of the value read.
        version: 1 at creation, +1 per put since.
        revision: the store's revision when the read was served.
    """

    key: str
    value: JSONValue
    index: int | None
    create_revision: int | None = None
    mod_revision: int | None = None
    version: int | None = None
    revision: int | None = None

    @staticmethod
    def of(key: str, body: Body) -> ReadResult:
        return ReadResult(
            key=key,
            value=body.get("value"),
            index=_int(body, "index"),
            create_revision=_int(body, "create_revision"),
            mod_revision=_int(body, "mod_revision"),
            version=_int(body, "version"),
            revision=_int(body, "revision"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyValue:
    """One key of a range read (``value`` is ``None`` in a keys-only read), or
    of a watch event (a delete's has only ``key`` and ``mod_revision``).

    ``lease`` is the lease the key is attached to (0: none; reported by watch
    events).
    """

    key: str
    value: JSONValue
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0

    @staticmethod
    def of(raw: JSONValue) -> KeyValue:
        body = raw if isinstance(raw, dict) else {}
        key = body.get("key")
        return KeyValue(
            key=key if isinstance(key, str) else "",
            value=body.get("value"),
            create_revision=_int(body, "create_revision") or 0,
            mod_revision=_int(body, "mod_revision") or 0,
            version=_int(body, "version") or 0,
            lease=_int(body, "lease") or 0,
        )


def _kvs(raw: JSONValue) -> tuple[KeyValue, ...]:
    return tuple(KeyValue.of(kv) for kv in raw) if isinstance(raw, list) else ()


@dataclass(frozen=True, slots=True, kw_only=True)
class RangeResult:
    """A range read.

    Attributes:
        kvs: the keys in the range, sorted and cut to ``limit``.
        count: how many keys the range holds (before ``limit``).
        more: whether ``limit`` cut the list.
        revision: the store's revision when the read was served.
    """

    kvs: tuple[KeyValue, ...]
    count: int
    more: bool
    revision: int

    @staticmethod
    def of(body: Body) -> RangeResult:
        return RangeResult(
            kvs=_kvs(body.get("kvs")),
            count=_int(body, "count") or 0,
            more=body.get("more") is True,
            revision=_revision(body),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteResult:
    """A delete of a range.

    Attributes:
        deleted: how many keys it removed; ``None`` when ``replayed``.
        revision: the revision it made (the current one if it removed nothing).
        index: the log index it was applied at.
        prev_kvs: the keys as they were, if asked for (``prev_kv``).
        replayed: the answer to a retry of a delete already applied: the
            server kept its revision, not its count.
        leader: the leader that applied it, if reported.
    """

    deleted: int | None
    revision: int
    index: int | None
    prev_kvs: tuple[KeyValue, ...] = ()
    replayed: bool = False
    leader: str | None = None

    @staticmethod
    def of(body: Body) -> DeleteResult:
        return DeleteResult(
            deleted=_int(body, "deleted"),
            revision=_revision(body),
            index=_int(body, "index"),
            prev_kvs=_kvs(body.get("prev_kvs")),
            replayed=body.get("replayed") is True,
            leader=_leader(body),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class TxnResult:
    """A transaction.

    Attributes:
        succeeded: whether every compare held (the success branch ran).
        revision: the revision it made (the current one if it wrote nothing).
        index: the log index it was applied at.
        responses: one JSON object per operation of the branch that ran, as
            the server sent them (``{"put": ...}``, ``{"delete": ...}``,
            ``{"range": ...}``; docs/api.md); empty when ``replayed``.
        replayed: the answer to a retry of a transaction already applied: the
            server kept whether it succeeded and its revision, not its responses.
        leader: the leader that applied it, if reported.
    """

    succeeded: bool
    revision: int
    index: int | None
    responses: tuple[JSONValue, ...] = ()
    replayed: bool = False
    leader: str | None = None

    @staticmethod
    def of(body: Body) -> TxnResult:
        responses = body.get("responses")
        return TxnResult(
            succeeded=body.get("succeeded") is True,
            revision=_revision(body),
            index=_int(body, "index"),
            responses=tuple(responses) if isinstance(responses, list) else (),
            replayed=body.get("replayed") is True,
            leader=_leader(body),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class CompactResult:
    """A compaction: the history below ``compact_revision`` is gone.

    Attributes:
        revision: the store's revision (a compaction does not change it).
        compact_revision: the revision the store is compacted to.
        index: the log index it was applied at.
        leader: the leader that applied it, if reported.
    """

    revision: int
    compact_revision: int
    index: int | None
    leader: str | None = None

    @staticmethod
    def of(body: Body) -> CompactResult:
        return CompactResult(
            revision=_revision(body),
            compact_revision=_int(body, "compact_revision") or 0,
            index=_int(body, "index"),
            leader=_leader(body),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class WatchEvent:
    """One change a watch saw.

    Attributes:
        type: ``"put"`` or ``"delete"``.
        kv: the key after the change (a delete's: the key and ``mod_revision``,
            the revision that deleted it; the rest empty).
        prev_kv: the key before the change, if the watch asked for it
            (``prev_kv=True``) and the key existed.
    """

    type: str
    kv: KeyValue
    prev_kv: KeyValue | None = None

    @property
    def revision(self) -> int:
        """The revision of the change."""
        return self.kv.mod_revision

    @staticmethod
    def of(raw: JSONValue) -> WatchEvent:
        body = raw if isinstance(raw, dict) else {}
        kind = body.get("type")
        prev = body.get("prev_kv")
        return WatchEvent(
            type=kind if isinstance(kind, str) else "",
            kv=KeyValue.of(body.get("kv")),
            prev_kv=KeyValue.of(prev) if isinstance(prev, dict) else None,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class WatchResponse:
    """What a watch delivers at once: the events of one or more whole revisions
    (in revision order), or a progress notification (no events).

    Attributes:
        revision: the watch has every event up to this revision.
        events: the changes, in revision order.
        progress: a progress notification.
    """

    revision: int
    events: tuple[WatchEvent, ...] = ()
    progress: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Lease:
    """A granted lease.

    Attributes:
        id: the lease id (put keys with ``lease=id``).
        ttl: its time to live in seconds (the server raises a TTL below its
            minimum to that minimum).
    """

    id: int
    ttl: int

    @staticmethod
    def of(body: Body) -> Lease:
        return Lease(id=_int(body, "id") or 0, ttl=_int(body, "ttl") or 0)

    @staticmethod
    def list_of(body: Body) -> tuple[Lease, ...]:
        """The leases of ``GET /v1/leases``'s answer (each with its granted TTL)."""
        raw = body.get("leases")
        if not isinstance(raw, list):
            return ()
        return tuple(
            Lease(id=_int(x, "id") or 0, ttl=_int(x, "granted_ttl") or 0)
            for x in raw
            if isinstance(x, dict)
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseInfo:
    """A lease's time to live, as the leader sees it.

    Attributes:
        id: the lease id.
        ttl: seconds left before it expires (as the leader's clock counts).
        granted_ttl: the TTL it was granted with, in seconds.
        keys: the keys attached to it, sorted (if asked for).
    """

    id: int
    ttl: int
    granted_ttl: int
    keys: tuple[str, ...] = ()

    @staticmethod
    def of(body: Body) -> LeaseInfo:
        keys = body.get("keys")
        return LeaseInfo(
            id=_int(body, "id") or 0,
            ttl=_int(body, "ttl") or 0,
            granted_ttl=_int(body, "granted_ttl") or 0,
            keys=tuple(k for k in keys if isinstance(k, str)) if isinstance(keys, list) else (),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointStatus:
    """One endpoint's answer to ``GET /v1/status`` (:meth:`Client.statuses`).

    Attributes:
        endpoint: ``host:port``.
        http_status: the answer's HTTP status; 0 when the node did not answer.
        body: the answer's JSON (text if it was not JSON); with no answer, the
            connection error (e.g. ``[Errno 111] Connection refused``).
    """

    endpoint: str
    http_status: int
    body: JSONValue

    @property
    def status(self) -> Body | None:
        """The node's status (role, term, leader, indexes), if it answered 200."""
        if self.http_status == 200 and isinstance(self.body, dict):
            return self.body
        return None
