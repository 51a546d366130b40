"""Python clients for the raftkv HTTP API.

Rule: ``import raftkv.client`` needs only the standard library (``send.py`` runs
without third-party packages); :class:`AsyncClient` (aiohttp) is imported lazily
on first access. The client imports nothing of the server.

Example::

    from raftkv.client import Client

    kv = Client(["127.0.0.1:8001", "127.0.0.1:8002", "127.0.0.1:8003"])
    rev = kv.put("x", {"n": 1}).revision
    kv.get("x")                          # {"n": 1}
    kv.get("x", revision=rev)            # as of a revision (Compacted once compacted away)
    kv.range(prefix="x").kvs             # (KeyValue(key="x", value={"n": 1}, ...),)
    kv.txn(
        compare=[{"key": "x", "target": "mod_revision", "op": "==", "value": rev}],
        success=[{"put": {"key": "x", "value": {"n": 2}}}],
    ).succeeded                          # True
    kv.compact(rev)

    lease = kv.lease_grant(10)           # keys put with it vanish when it ends
    kv.put("svc/a", "10.0.0.1", lease=lease.id)
    with kv.keep_alive(lease.id):        # renewed from a thread meanwhile
        for response in kv.watch(prefix="svc/"):   # resumes across failures
            for event in response.events:
                print(event.type, event.kv.key, event.kv.value)

The transaction shapes are ``POST /v1/txn``'s (docs/api.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from raftkv.client._sansio import (
    DEFAULT_ENDPOINTS,
    ENDPOINTS_ENV,
    make_ssl_context,
    parse_endpoints,
)
from raftkv.client.client import Client, KeepAlive, Watch
from raftkv.client.errors import (
    AuthError,
    BadRequest,
    ClientError,
    Compacted,
    Conflict,
    JSONValue,
    LeaseNotFound,
    NoSpace,
    NotFound,
    OutcomeUnknown,
    ServerError,
    TooManySessions,
    Unavailable,
)
from raftkv.client.results import (
    CompactResult,
    DeleteResult,
    EndpointStatus,
    KeyValue,
    Lease,
    LeaseInfo,
    RangeResult,
    ReadResult,
    TxnResult,
    WatchEvent,
    WatchResponse,
    WriteResult,
)

if TYPE_CHECKING:
    from raftkv.client.aio import AsyncClient

__all__ = [
    "Client",
    "AsyncClient",
    "WriteResult",
    "ReadResult",
    "KeyValue",
    "RangeResult",
    "DeleteResult",
    "EndpointStatus",
    "TxnResult",
    "CompactResult",
    "Watch",
    "WatchEvent",
    "WatchResponse",
    "KeepAlive",
    "Lease",
    "LeaseInfo",
    "JSONValue",
    "DEFAULT_ENDPOINTS",
    "ENDPOINTS_ENV",
    "parse_endpoints",
    "make_ssl_context",
    "ClientError",
    "BadRequest",
    "NotFound",
    "LeaseNotFound",
    "Conflict",
    "TooManySessions",
    "Compacted",
    "NoSpace",
    "Unavailable",
    "OutcomeUnknown",
    "ServerError",
    "AuthError",
]


def __getattr__(name: str) -> object:
    if name == "AsyncClient":
        from raftkv.client.aio import AsyncClient

        return AsyncClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
