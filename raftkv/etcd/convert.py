"""etcd's protobuf messages to the MVCC store's requests, and its answers back.

Rule 1: no I/O and no node: pure functions between :mod:`raftkv.etcd.pb` messages
and :mod:`raftkv.replica.mvcc` values. The store already has etcd's semantics
(revisions, ranges, sorting, ``count``/``more``, compares, nested transactions),
so these functions only translate; they never decide.

Rule 2: a request is checked here as etcd's server checks it before
proposing (``checkRequestOp``/``checkTxnRequest``, the op count, the duplicate
keys; :func:`~raftkv.replica.mvcc.check_txn`), raising the
:class:`~raftkv.etcd.errors.EtcdError` etcd answers. Whether a put's lease
exists is the replica's to say, when the write is applied.

Rule 3: headers. A top-level answer's header is :func:`header`'s (cluster and
member id, the revision, the Raft term); the answers inside a transaction carry
only their revision, as etcd's do.
"""

from __future__ import annotations

import hashlib
from typing import Final

from raftkv.etcd import errors
from raftkv.etcd.errors import EtcdError
from raftkv.etcd.pb import kv_pb2, rpc_pb2
from raftkv.replica.mvcc import (
    EVENT_DELETE,
    CompactedError,
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeOp,
    DeleteResult,
    DuplicateKeyError,
    EmptyKeyError,
    Event,
    FutureRevisionError,
    InvalidRequestError,
    KeyNotFoundError,
    KeyValue,
    LeaseProvidedError,
    MVCCError,
    Op,
    OpResult,
    PutOp,
    PutResult,
    RangeOp,
    RangeResult,
    SortOrder,
    SortTarget,
    TxnOp,
    TxnResult,
    ValueProvidedError,
    check_txn,
)

__all__ = [
    "MAX_TXN_OPS",
    "name_id",
    "header",
    "range_op",
    "put_op",
    "delete_op",
    "txn_op",
    "mvcc_error",
    "range_response",
    "put_response",
    "delete_response",
    "txn_response",
    "event",
]

MAX_TXN_OPS: Final = 128
"""Most operations per transaction branch, and most compares (etcd's
``--max-txn-ops`` default)."""


def name_id(name: str) -> int:
    """A stable non-zero uint64 for a name: its SHA-256's first 8 bytes, big-endian
    (member ids from node ids, the cluster id from the cluster's name)."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big") or 1


def header(
    cluster_id: int, member_id: int, revision: int, raft_term: int
) -> rpc_pb2.ResponseHeader:
    return rpc_pb2.ResponseHeader(
        cluster_id=cluster_id, member_id=member_id, revision=revision, raft_term=raft_term
    )


# ----------------------------------------------------------------------------- requests


def range_op(req: rpc_pb2.RangeRequest) -> RangeOp:
    """A ``RangeRequest`` as the store's op (``serializable`` is the caller's)."""
    if not req.key:
        raise errors.EMPTY_KEY
    return RangeOp(
        key=req.key,
        range_end=req.range_end,
        revision=req.revision,
        limit=req.limit,
        keys_only=req.keys_only,
        count_only=req.count_only,
        sort_order=SortOrder(req.sort_order),
        sort_target=SortTarget(req.sort_target),
        min_mod_revision=req.min_mod_revision,
        max_mod_revision=req.max_mod_revision,
        min_create_revision=req.min_create_revision,
        max_create_revision=req.max_create_revision,
    )


def put_op(req: rpc_pb2.PutRequest) -> PutOp:
    if req.lease < 0:
        raise errors.LEASE_NOT_FOUND  # lease ids are 1..2**63-1
    return PutOp(
        key=req.key,
        value=req.value,
        lease=req.lease,
        prev_kv=req.prev_kv,
        ignore_value=req.ignore_value,
        ignore_lease=req.ignore_lease,
    )


def delete_op(req: rpc_pb2.DeleteRangeRequest) -> DeleteRangeOp:
    return DeleteRangeOp(key=req.key, range_end=req.range_end, prev_kv=req.prev_kv)


def _compare(cmp: rpc_pb2.Compare) -> Compare:
    target = CompareTarget(cmp.target)
    operand: int | bytes
    if target is CompareTarget.VALUE:
        operand = cmp.value
    elif target is CompareTarget.VERSION:
        operand = cmp.version
    elif target is CompareTarget.CREATE:
        operand = cmp.create_revision
    elif target is CompareTarget.MOD:
        operand = cmp.mod_revision
    else:
        operand = cmp.lease
    return Compare(
        key=cmp.key,
        range_end=cmp.range_end,
        target=target,
        result=CompareResult(cmp.result),
        operand=operand,
    )


def _request_op(req: rpc_pb2.RequestOp) -> Op:
    kind = req.WhichOneof("request")
    if kind == "request_range":
        return range_op(req.request_range)
    if kind == "request_put":
        return put_op(req.request_put)
    if kind == "request_delete_range":
        return delete_op(req.request_delete_range)
    if kind == "request_txn":
        return _txn(req.request_txn)
    raise errors.invalid_argument("a transaction op without a request")


def _txn(req: rpc_pb2.TxnRequest) -> TxnOp:
    for part in (req.compare, req.success, req.failure):
        if len(part) > MAX_TXN_OPS:
            raise errors.TOO_MANY_OPS
    return TxnOp(
        compares=tuple(_compare(c) for c in req.compare),
        success=tuple(_request_op(op) for op in req.success),
        failure=tuple(_request_op(op) for op in req.failure),
    )


def txn_op(req: rpc_pb2.TxnRequest) -> TxnOp:
    """A ``TxnRequest`` as the store's (nested) transaction, checked (Rule 2)."""
    txn = _txn(req)
    try:
        check_txn(txn.compares, txn.success, txn.failure)
    except MVCCError as exc:
        raise mvcc_error(exc) from None
    return txn


def mvcc_error(exc: MVCCError) -> EtcdError:
    """The etcd API's error for one the MVCC store raised."""
    if isinstance(exc, CompactedError):
        return errors.COMPACTED
    if isinstance(exc, FutureRevisionError):
        return errors.FUTURE_REVISION
    if isinstance(exc, EmptyKeyError):
        return errors.EMPTY_KEY
    if isinstance(exc, DuplicateKeyError):
        return errors.DUPLICATE_KEY
    if isinstance(exc, ValueProvidedError):
        return errors.VALUE_PROVIDED
    if isinstance(exc, LeaseProvidedError):
        return errors.LEASE_PROVIDED
    if isinstance(exc, KeyNotFoundError):
        return errors.KEY_NOT_FOUND
    if isinstance(exc, InvalidRequestError):
        return errors.invalid_argument(exc.message)
    return EtcdError(errors.Code.INTERNAL, f"etcdserver: {exc}")


# ----------------------------------------------------------------------------- answers


def _kv(kv: KeyValue) -> kv_pb2.KeyValue:
    return kv_pb2.KeyValue(
        key=kv.key,
        create_revision=kv.create_revision,
        mod_revision=kv.mod_revision,
        version=kv.version,
        value=kv.value,
        lease=kv.lease,
    )


def _sub_header(revision: int) -> rpc_pb2.ResponseHeader:
    return rpc_pb2.ResponseHeader(revision=revision)


def range_response(
    result: RangeResult, head: rpc_pb2.ResponseHeader | None = None
) -> rpc_pb2.RangeResponse:
    return rpc_pb2.RangeResponse(
        header=head or _sub_header(result.revision),
        kvs=[_kv(kv) for kv in result.kvs],
        more=result.more,
        count=result.count,
    )


def put_response(
    result: PutResult, head: rpc_pb2.ResponseHeader | None = None
) -> rpc_pb2.PutResponse:
    response = rpc_pb2.PutResponse(header=head or _sub_header(result.revision))
    if result.prev_kv is not None:
        response.prev_kv.CopyFrom(_kv(result.prev_kv))
    return response


def delete_response(
    result: DeleteResult, head: rpc_pb2.ResponseHeader | None = None
) -> rpc_pb2.DeleteRangeResponse:
    return rpc_pb2.DeleteRangeResponse(
        header=head or _sub_header(result.revision),
        deleted=result.deleted,
        prev_kvs=[_kv(kv) for kv in result.prev_kvs],
    )


def _response_op(result: OpResult) -> rpc_pb2.ResponseOp:
    if isinstance(result, RangeResult):
        return rpc_pb2.ResponseOp(response_range=range_response(result))
    if isinstance(result, PutResult):
        return rpc_pb2.ResponseOp(response_put=put_response(result))
    if isinstance(result, DeleteResult):
        return rpc_pb2.ResponseOp(response_delete_range=delete_response(result))
    return rpc_pb2.ResponseOp(response_txn=txn_response(result))


def txn_response(
    result: TxnResult, head: rpc_pb2.ResponseHeader | None = None
) -> rpc_pb2.TxnResponse:
    return rpc_pb2.TxnResponse(
        header=head or _sub_header(result.revision),
        succeeded=result.succeeded,
        responses=[_response_op(r) for r in result.responses],
    )


def event(ev: Event) -> kv_pb2.Event:
    """A watch event as etcd's ``mvccpb.Event``."""
    out = kv_pb2.Event(
        type=kv_pb2.Event.DELETE if ev.kind == EVENT_DELETE else kv_pb2.Event.PUT,
        kv=_kv(ev.kv),
    )
    if ev.prev_kv is not None:
        out.prev_kv.CopyFrom(_kv(ev.prev_kv))
    return out
