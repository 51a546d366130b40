"""The KV store's commands: what a client asks, validated, as it travels in the log.

Rules:

1. **Validated when built.** Every command class checks its fields in
   ``__post_init__`` (keys, JSON values, ranges, sessions, log time) and raises
   :class:`InvalidCommand`, which the API turns into a 400 before anything is
   proposed. A command decoded from the log is built the same way, so a replica
   never acts on a malformed one.
2. **msgpack on the wire, and old entries stay readable.** :func:`encode_command`
   writes a map with an ``"op"`` and the command's fields; :func:`decode_command`
   reads every format a released version wrote (a log outlives an upgrade).
3. **Keys are text, values are JSON** at this level (the ``/v1`` API's model);
   the store underneath holds bytes: a key's UTF-8, a value's compact JSON text
   (:func:`json_text`). Ranges follow etcd's conventions on those bytes
   (:class:`KeyRange`). The one exception is :class:`EtcdTxn`, the etcd v3
   API's writes: raw key and value bytes, stored exactly as the client sent
   them, in the MVCC store's own vocabulary (:mod:`raftkv.replica.mvcc`).
4. **Log time.** Every command carries ``time_ms``, stamped by the leader when it
   proposed it; the state machine's clock is the largest one applied.

Keys are non-empty strings of at most :data:`MAX_KEY_BYTES` bytes of UTF-8 with no
control characters. Values are JSON values: ``None``, ``bool``, ``int`` (64-bit),
finite ``float``, ``str``, ``list`` and ``dict`` with string keys.

The package's modules, one job each (import from the package, not from them):

* ``_values``: keys, JSON values, sessions, key ranges, their limits and checks,
  and the errors;
* ``_keys``: the commands on keys and the key space (put, delete, CAS,
  multi-put, get, range, delete-range, compact, alarm);
* ``_txn``: the transactions (:class:`Txn`, :class:`EtcdTxn`);
* ``_leases``: the lease commands;
* ``_codec``: :data:`Command` and its wire form (rule 2).
"""

from __future__ import annotations

from raftkv.replica.commands._codec import Command, decode_command, encode_command
from raftkv.replica.commands._keys import (
    Alarm,
    Cas,
    Compact,
    Delete,
    DeleteRange,
    Get,
    MultiPut,
    Put,
    Range,
)
from raftkv.replica.commands._leases import (
    MAX_LEASE_CHECKPOINTS,
    LeaseCheckpoint,
    LeaseGrant,
    LeaseRevoke,
)
from raftkv.replica.commands._txn import (
    Compare,
    EtcdTxn,
    Txn,
    TxnDelete,
    TxnOp,
    TxnPut,
    TxnRange,
)
from raftkv.replica.commands._values import (
    ABSENT,
    COMPARE_OPS,
    COMPARE_TARGETS,
    MAX_CLIENT_ID_CHARS,
    MAX_KEY_BYTES,
    MAX_TXN_OPS,
    MAX_VALUE_DEPTH,
    OWNER_CHARS,
    SORT_ORDERS,
    SORT_TARGETS,
    Absent,
    InvalidCommand,
    InvalidSnapshot,
    JSONValue,
    KeyRange,
    KVError,
    Session,
    check_key,
    check_value,
    format_idempotency_key,
    json_equal,
    json_text,
    parse_idempotency_key,
)

__all__ = [
    "JSONValue",
    "Absent",
    "ABSENT",
    "MAX_KEY_BYTES",
    "MAX_VALUE_DEPTH",
    "MAX_CLIENT_ID_CHARS",
    "MAX_TXN_OPS",
    "OWNER_CHARS",
    "KVError",
    "InvalidCommand",
    "InvalidSnapshot",
    "check_key",
    "check_value",
    "json_equal",
    "json_text",
    "Session",
    "parse_idempotency_key",
    "format_idempotency_key",
    "KeyRange",
    "SORT_ORDERS",
    "SORT_TARGETS",
    "COMPARE_TARGETS",
    "COMPARE_OPS",
    "Put",
    "Delete",
    "Cas",
    "MultiPut",
    "Get",
    "Range",
    "DeleteRange",
    "Compare",
    "TxnPut",
    "TxnDelete",
    "TxnRange",
    "TxnOp",
    "Txn",
    "Compact",
    "Alarm",
    "LeaseGrant",
    "LeaseRevoke",
    "LeaseCheckpoint",
    "MAX_LEASE_CHECKPOINTS",
    "EtcdTxn",
    "Command",
    "encode_command",
    "decode_command",
]
