"""The replicated key/value state machine: an MVCC key space with etcd's semantics,
client sessions, a space quota.

Rules:

1. **Pure and deterministic.** :meth:`KVStateMachine.apply` is a function of the
   state and the entry's bytes. It never reads a clock, an RNG or the environment,
   so replicas that apply the same log end in the same state and
   :meth:`~KVStateMachine.snapshot` returns the same bytes on each of them.
2. **Log time, not local time.** Every command carries ``time_ms``, assigned by the
   leader when it proposed the command. The state machine's clock is the largest
   ``time_ms`` applied so far (``log_time_ms``), so it never runs backwards even if
   a new leader's wall clock is behind the old one's.
3. **Revisions** (:mod:`raftkv.replica.mvcc`, etcd's): one store revision, 1 in a
   fresh store, +1 per command that changes something -- a put, a delete that
   finds a key, a transaction whose executed branch writes; every key has its
   ``create_revision``, ``mod_revision`` and ``version``; reads may ask for an
   older revision until compaction drops it. A multi-put and a transaction are
   one revision however many keys they write.
4. **Exactly-once writes** (Ongaro's dissertation §6.3; :mod:`raftkv.replica.sessions`).
   A command may carry a session ``(client_id, seq, owner)``. A command whose
   ``seq`` equals the session's last one is answered from the session's record
   without being applied again (:meth:`KVStateMachine.apply` says what such a
   replay carries); an older ``seq`` gets :data:`ERR_STALE_SEQUENCE`; another
   owner's command :data:`ERR_SESSION_OWNER`; a new session beyond the limits
   :data:`ERR_TOO_MANY_SESSIONS` / :data:`ERR_TOO_MANY_OWNER_SESSIONS`. A refused
   command changes nothing and is not recorded.
5. **Space quota.** While the NOSPACE alarm is raised (an :class:`Alarm` entry,
   proposed by the leader when the store's size passes ``--quota-bytes``),
   commands that would write a value -- a put, a successful CAS, a multi-put, a
   transaction whose executed branch puts -- are refused with :data:`ERR_NOSPACE`;
   reads, deletes and compaction still work. Everything is decided by entries,
   so every replica refuses alike.
6. **Bad input is a result, not an exception.** Commands are validated when built
   (:class:`InvalidCommand`, for the API to turn into a 400); bytes that fail to
   decode at apply time produce ``KVResult(ok=False, error="invalid command: ...")``
   on every replica alike. Only caller misuse of the state machine itself (indexes
   that do not increase) raises.
7. **Leases** (:mod:`raftkv.replica.leases`). A ``LeaseGrant`` entry creates a
   lease, a ``LeaseRevoke`` removes it and deletes its keys in one revision, a
   ``LeaseCheckpoint`` records the remaining times the leader measured. A put
   may name a lease (which must exist: :data:`ERR_LEASE_NOT_FOUND`); any write
   re-attaches the keys it touches to the lease their new version names (a
   delete to none). No replica times a lease: the leader's lessor
   (:mod:`raftkv.replica.lessor`) proposes the revoke of an expired one.
8. **Absent is not null.** A key may hold the JSON value ``null``; that is
   different from the key being absent. :data:`ABSENT` is the compare-and-set
   expectation "the key does not exist".

The store keeps keys as UTF-8 and values as compact JSON text
(:func:`~raftkv.replica.commands.json_text`); results carry :class:`Item`, whose
``value_json`` is that text and ``value`` the decoded JSON. The etcd v3 API
(:class:`EtcdTxn`) writes any bytes: a stored value that is not JSON text
(:func:`stored_json`) never equals a JSON value (a CAS or a value compare on
it fails), and the ``/v1`` API shows it base64-encoded (:attr:`Item.is_json`).

Snapshots are msgpack (version 4): the store's wire form, the sessions, the
leases ``(id, ttl_s, remaining_ms)``, the alarm, ``applied_index`` and
``log_time_ms``; the keys of each lease are rebuilt from the store. Versions 1
to 3 still restore, with no leases; 1 and 2 (a plain key/value map, written
before revisions) put their keys in one revision.

The package's modules, one job each (import from the package, not from them):

* ``_answers``: what the state machine answers, the ``ERR_*`` texts, and
  stored values read back as JSON;
* ``_state``: what it holds, with the invariants, and what may be read from it
  without applying an entry (local reads, the change feed for watches);
* ``_txn``: the ``/v1`` and etcd transactions (rule 5's quota and rule 7's
  leases checked first);
* ``_leasecmds``: the lease commands (rule 7);
* ``_snapshot``: the snapshot format;
* ``_statemachine``: :class:`KVStateMachine`, the apply loop (rules 1, 2, 4, 6).

:class:`KVStateMachine`'s methods are spread over ``_state``, ``_txn`` and
``_leasecmds`` as base classes of it; the command vocabulary is
:mod:`raftkv.replica.commands`'s, re-exported here: this package is the KV
store's public face.
"""

from __future__ import annotations

from raftkv.replica.commands import (
    ABSENT,
    MAX_CLIENT_ID_CHARS,
    MAX_KEY_BYTES,
    MAX_TXN_OPS,
    MAX_VALUE_DEPTH,
    OWNER_CHARS,
    Absent,
    Alarm,
    Cas,
    Command,
    Compact,
    Compare,
    Delete,
    DeleteRange,
    EtcdTxn,
    Get,
    InvalidCommand,
    InvalidSnapshot,
    JSONValue,
    KeyRange,
    KVError,
    LeaseCheckpoint,
    LeaseGrant,
    LeaseRevoke,
    MultiPut,
    Put,
    Range,
    Session,
    Txn,
    TxnDelete,
    TxnOp,
    TxnPut,
    TxnRange,
    check_key,
    check_value,
    decode_command,
    encode_command,
    format_idempotency_key,
    json_equal,
    json_text,
    parse_idempotency_key,
)
from raftkv.replica.kv._answers import (
    ERR_COMPACTED,
    ERR_CONFLICT,
    ERR_FUTURE_REVISION,
    ERR_INVALID_COMMAND,
    ERR_LEASE_EXISTS,
    ERR_LEASE_NOT_FOUND,
    ERR_NOSPACE,
    ERR_NOT_FOUND,
    ERR_SESSION_OWNER,
    ERR_STALE_SEQUENCE,
    ERR_TOO_MANY_OWNER_SESSIONS,
    ERR_TOO_MANY_SESSIONS,
    NOT_JSON,
    Answer,
    Deleted,
    EtcdAnswer,
    Item,
    KVResult,
    LeaseGranted,
    LeaseRevoked,
    Listing,
    NotJSON,
    PutDone,
    TxnAnswer,
    is_json_text,
    stored_json,
)
from raftkv.replica.kv._statemachine import KVStateMachine
from raftkv.replica.sessions import (
    DEFAULT_MAX_SESSIONS,
    DEFAULT_MAX_SESSIONS_PER_OWNER,
    DEFAULT_SESSION_TTL_MS,
    MAX_SESSION_SNAPSHOT_BYTES,
)

__all__ = [
    # The command vocabulary (raftkv.replica.commands), re-exported: this module
    # is the KV store's public face.
    "ABSENT",
    "Absent",
    "JSONValue",
    "MAX_CLIENT_ID_CHARS",
    "MAX_KEY_BYTES",
    "MAX_TXN_OPS",
    "MAX_VALUE_DEPTH",
    "OWNER_CHARS",
    "DEFAULT_SESSION_TTL_MS",
    "DEFAULT_MAX_SESSIONS",
    "DEFAULT_MAX_SESSIONS_PER_OWNER",
    "MAX_SESSION_SNAPSHOT_BYTES",
    "KVError",
    "InvalidCommand",
    "InvalidSnapshot",
    "Session",
    "KeyRange",
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
    "EtcdTxn",
    "Command",
    "check_key",
    "check_value",
    "json_equal",
    "json_text",
    "encode_command",
    "decode_command",
    "parse_idempotency_key",
    "format_idempotency_key",
    # This module's own.
    "ERR_NOT_FOUND",
    "ERR_CONFLICT",
    "ERR_STALE_SEQUENCE",
    "ERR_INVALID_COMMAND",
    "ERR_SESSION_OWNER",
    "ERR_TOO_MANY_SESSIONS",
    "ERR_TOO_MANY_OWNER_SESSIONS",
    "ERR_NOSPACE",
    "ERR_COMPACTED",
    "ERR_FUTURE_REVISION",
    "ERR_LEASE_NOT_FOUND",
    "ERR_LEASE_EXISTS",
    "Item",
    "KVResult",
    "Listing",
    "Deleted",
    "PutDone",
    "TxnAnswer",
    "LeaseGranted",
    "LeaseRevoked",
    "EtcdAnswer",
    "Answer",
    "NotJSON",
    "NOT_JSON",
    "stored_json",
    "is_json_text",
    "KVStateMachine",
]
