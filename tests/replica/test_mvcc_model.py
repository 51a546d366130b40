"""MVCCStore against a naive model, over random sequences of writes, txns,
compactions and snapshot restores.

The model keeps one full copy of the key space per revision (``states[r]`` maps
key -> (value, create, mod, version, lease)) and the log of every version ever
written. After every step each range of a fixed set is read at every revision,
the current one and the next (future) one, and compared with the model: the
same result, or the same error (compacted below the compact revision, future
above the current one). Every transaction's result is compared too, and the
store's snapshot with the versions the compaction rule says it must keep.
The model is written from the rules (module docstring of raftkv.replica.mvcc
and etcd's docs), not from the store's code: it shares no helper with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgpack
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from raftkv.replica.mvcc import (
    VERSION_OVERHEAD_BYTES,
    CompactedError,
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeOp,
    DeleteResult,
    DuplicateKeyError,
    FutureRevisionError,
    KeyNotFoundError,
    KeyValue,
    MVCCError,
    MVCCStore,
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
)

KEYS = [b"a", b"a/1", b"a/2", b"b", b"c\xff", b"\xff"]
VALUES = [b"", b"x", b"y", b"zz"]
RANGE_ENDS = [b"", b"", b"\0", b"a0", b"b", b"c", b"\xff\xff"]

Version = tuple[bytes, int, int, int, int]  # value, create, mod, version, lease


def in_range(key: bytes, start: bytes, end: bytes) -> bool:
    if end == b"":
        return key == start
    if end == b"\0":
        return key >= start
    return start <= key < end


def model_kv(key: bytes, v: Version, keys_only: bool = False) -> KeyValue:
    value, create, mod, version, lease = v
    return KeyValue(
        key=key,
        value=b"" if keys_only else value,
        create_revision=create,
        mod_revision=mod,
        version=version,
        lease=lease,
    )


def model_range(state: dict[bytes, Version], op: RangeOp, header: int) -> RangeResult:
    found = [(k, state[k]) for k in sorted(state) if in_range(k, op.key, op.range_end)]
    if op.count_only:
        return RangeResult(kvs=(), count=len(found), more=False, revision=header)
    kept = [
        (k, v)
        for k, v in found
        if (not op.min_mod_revision or v[2] >= op.min_mod_revision)
        and (not op.max_mod_revision or v[2] <= op.max_mod_revision)
        and (not op.min_create_revision or v[1] >= op.min_create_revision)
        and (not op.max_create_revision or v[1] <= op.max_create_revision)
    ]
    field_of = {
        SortTarget.KEY: lambda kv: kv[0],
        SortTarget.VERSION: lambda kv: kv[1][3],
        SortTarget.CREATE: lambda kv: kv[1][1],
        SortTarget.MOD: lambda kv: kv[1][2],
        SortTarget.VALUE: lambda kv: kv[1][0],
    }[op.sort_target]
    order = op.sort_order
    if order is SortOrder.NONE and op.sort_target is not SortTarget.KEY:
        order = SortOrder.ASCEND
    if order is SortOrder.ASCEND:
        kept = sorted(kept, key=field_of)
    elif order is SortOrder.DESCEND:
        kept = sorted(kept, key=field_of, reverse=True)
    more = op.limit > 0 and len(kept) > op.limit
    if more:
        kept = kept[: op.limit]
    return RangeResult(
        kvs=tuple(model_kv(k, v, op.keys_only) for k, v in kept),
        count=len(found),
        more=more,
        revision=header,
    )


def holds(c: Compare, v: Version | None) -> bool:
    value, create, mod, version, lease = v if v is not None else (b"", 0, 0, 0, 0)
    if c.target is CompareTarget.VALUE:
        have, want = value, c.operand if isinstance(c.operand, bytes) else b""
    else:
        have = {
            CompareTarget.VERSION: version,
            CompareTarget.CREATE: create,
            CompareTarget.MOD: mod,
            CompareTarget.LEASE: lease,
        }[c.target]
        want = c.operand if isinstance(c.operand, int) else 0
    return {
        CompareResult.EQUAL: have == want,
        CompareResult.NOT_EQUAL: have != want,
        CompareResult.GREATER: have > want,
        CompareResult.LESS: have < want,
    }[c.result]


def compare_holds(state: dict[bytes, Version], c: Compare) -> bool:
    matched = [state[k] for k in sorted(state) if in_range(k, c.key, c.range_end)]
    if not matched:
        return c.target is not CompareTarget.VALUE and holds(c, None)
    return all(holds(c, v) for v in matched)


def write_leaves(ops, path=()):
    """Every put/delete of a branch with the nested-branch choices that lead to it."""
    for i, op in enumerate(ops):
        if isinstance(op, PutOp | DeleteRangeOp):
            yield path, op
        elif isinstance(op, TxnOp):
            yield from write_leaves(op.success, (*path, (i, "then")))
            yield from write_leaves(op.failure, (*path, (i, "else")))


def exclusive(p, q) -> bool:
    """Whether two leaves sit in different branches of one nested transaction."""
    for a, b in zip(p, q, strict=False):
        if a[0] != b[0]:
            return False
        if a[1] != b[1]:
            return True
    return False


def has_duplicate(ops) -> bool:
    leaves = list(write_leaves(ops))
    for i, (p, a) in enumerate(leaves):
        for q, b in leaves[i + 1 :]:
            if exclusive(p, q):
                continue
            puts = [x for x in (a, b) if isinstance(x, PutOp)]
            dels = [x for x in (a, b) if isinstance(x, DeleteRangeOp)]
            if len(puts) == 2 and puts[0].key == puts[1].key:
                return True
            if len(puts) == 1 and in_range(puts[0].key, dels[0].key, dels[0].range_end):
                return True
    return False


def has_invalid(ops) -> bool:
    for op in ops:
        if isinstance(op, PutOp) and op.ignore_value and op.value:
            return True
        if isinstance(op, TxnOp) and (has_invalid(op.success) or has_invalid(op.failure)):
            return True
    return False


@dataclass
class Model:
    states: list[dict[bytes, Version]] = field(default_factory=lambda: [{}, {}])
    log: dict[bytes, list[tuple[int, Version | None]]] = field(default_factory=dict)
    compact_revision: int = 0

    @property
    def revision(self) -> int:
        return len(self.states) - 1

    def read(self, op: RangeOp) -> RangeResult:
        """A top-level range, or the error it must raise."""
        current = self.revision
        revision = op.revision if op.revision > 0 else current
        if revision > current:
            raise FutureRevisionError(current)
        if revision < self.compact_revision:
            raise CompactedError(self.compact_revision)
        return model_range(self.states[revision], op, current)

    def txn(self, compares, success, failure) -> TxnResult:
        if has_invalid(success) or has_invalid(failure):
            raise ValueProvidedError()
        if has_duplicate(success) or has_duplicate(failure):
            raise DuplicateKeyError()
        begin = self.revision
        before = self.states[begin]
        plan = self.decide(compares, success, failure, before)
        self.check(plan, begin, before)
        work = dict(before)
        writes: list[tuple[bytes, Version | None]] = []
        result = self.run(plan, begin, work, writes)
        if writes:
            self.states.append(work)
            for key, v in writes:
                self.log.setdefault(key, []).append((begin + 1, v))
        return TxnResult(
            succeeded=result.succeeded, responses=result.responses, revision=self.revision
        )

    def decide(self, compares, success, failure, before):
        ok = all(compare_holds(before, c) for c in compares)
        ops = success if ok else failure
        return ok, [
            (op, self.decide(op.compares, op.success, op.failure, before))
            if isinstance(op, TxnOp)
            else (op, None)
            for op in ops
        ]

    def check(self, plan, begin, before):
        for op, sub in plan[1]:
            if isinstance(op, RangeOp) and op.revision > 0:
                if op.revision > begin:
                    raise FutureRevisionError(begin)
                if op.revision < self.compact_revision:
                    raise CompactedError(self.compact_revision)
            ignores = isinstance(op, PutOp) and (op.ignore_value or op.ignore_lease)
            if ignores and op.key not in before:
                raise KeyNotFoundError(op.key)
            if sub is not None:
                self.check(sub, begin, before)

    def run(self, plan, begin, work, writes) -> TxnResult:
        rev = begin + 1
        responses: list[OpResult] = []
        for op, sub in plan[1]:
            if isinstance(op, RangeOp):
                header = rev if writes else begin
                state = work if op.revision <= 0 else self.states[op.revision]
                responses.append(model_range(state, op, header))
            elif isinstance(op, PutOp):
                prev = work.get(op.key)
                value = prev[0] if op.ignore_value else op.value
                lease = prev[4] if op.ignore_lease else op.lease
                if prev is None:
                    v = (value, rev, rev, 1, lease)
                else:
                    v = (value, prev[1], rev, prev[3] + 1, lease)
                work[op.key] = v
                writes.append((op.key, v))
                prev_kv = model_kv(op.key, prev) if op.prev_kv and prev is not None else None
                responses.append(PutResult(revision=rev, prev_kv=prev_kv))
            elif isinstance(op, DeleteRangeOp):
                gone = [k for k in sorted(work) if in_range(k, op.key, op.range_end)]
                prev_kvs = tuple(model_kv(k, work[k]) for k in gone)
                for k in gone:
                    del work[k]
                    writes.append((k, None))
                responses.append(
                    DeleteResult(
                        revision=rev if writes else begin,
                        deleted=len(gone),
                        prev_kvs=prev_kvs if op.prev_kv else (),
                    )
                )
            else:
                inner = self.run(sub, begin, work, writes)
                responses.append(
                    TxnResult(
                        succeeded=inner.succeeded,
                        responses=inner.responses,
                        revision=rev if writes else begin,
                    )
                )
        return TxnResult(succeeded=plan[0], responses=tuple(responses), revision=0)

    def compact(self, revision: int) -> None:
        if revision <= self.compact_revision:
            raise CompactedError(self.compact_revision)
        if revision > self.revision:
            raise FutureRevisionError(self.revision)
        self.compact_revision = revision

    def kept_wire(self) -> list:
        """The versions the compaction rule keeps, in to_wire's layout."""
        keys = []
        c = self.compact_revision
        for key in sorted(self.log):
            versions = self.log[key]
            below = [i for i, (rev, _) in enumerate(versions) if rev <= c]
            kept = versions
            if below:
                i = below[-1]
                rev, v = versions[i]
                kept = versions[i + 1 :] if v is None and rev < c else versions[i:]
            if kept:
                keys.append(
                    [
                        key,
                        [
                            (rev, 0, 0, 0, b"") if v is None else (rev, v[1], v[3], v[4], v[0])
                            for rev, v in kept
                        ],
                    ]
                )
        return [1, self.revision, c, keys]


keys = st.sampled_from(KEYS)
range_ends = st.sampled_from(RANGE_ENDS)
values = st.sampled_from(VALUES)
leases = st.sampled_from([0, 0, 3, 5])
targets = st.sampled_from(list(CompareTarget))
results = st.sampled_from(list(CompareResult))


@st.composite
def compares(draw, numbers: tuple[int, ...] = tuple(range(13))) -> Compare:
    """A compare; ``numbers`` are the likely integer operands (those of the state)."""
    target = draw(targets)
    if target is CompareTarget.VALUE and draw(st.integers(0, 9)):
        operand: int | bytes = draw(values)
    else:
        operand = draw(st.sampled_from(numbers))
    return Compare(
        key=draw(keys),
        range_end=draw(range_ends),
        target=target,
        result=draw(results),
        operand=operand,
    )


@st.composite
def range_ops(draw, max_revision: int = 14) -> RangeOp:
    target = draw(st.sampled_from(list(SortTarget)))
    return RangeOp(
        key=draw(keys),
        range_end=draw(range_ends),
        revision=draw(st.sampled_from([0, 0, 0, -1, *range(1, max_revision)])),
        limit=draw(st.sampled_from([0, 0, 1, 2, -1])),
        keys_only=draw(st.booleans()),
        count_only=draw(st.sampled_from([False, False, False, True])),
        sort_order=draw(st.sampled_from(list(SortOrder))),
        sort_target=target,
        min_mod_revision=draw(st.sampled_from([0, 0, 0, 3, 6])),
        max_create_revision=draw(st.sampled_from([0, 0, 0, 4, 8])),
    )


@st.composite
def put_ops(draw) -> PutOp:
    ignore_value = draw(st.sampled_from([False, False, False, True]))
    ignore_lease = draw(st.sampled_from([False, False, False, True]))
    # Mostly valid ignore_* puts; sometimes one with a value (ValueProvidedError).
    value = b"" if ignore_value and draw(st.integers(0, 7)) else draw(values)
    return PutOp(
        key=draw(keys),
        value=value,
        lease=0 if ignore_lease else draw(leases),
        prev_kv=draw(st.booleans()),
        ignore_value=ignore_value,
        ignore_lease=ignore_lease,
    )


delete_ops = st.builds(
    DeleteRangeOp,
    key=keys,
    range_end=st.sampled_from([b"", b"", b"", *RANGE_ENDS]),
    prev_kv=st.booleans(),
)


def op_lists(depth: int, numbers: tuple[int, ...]) -> st.SearchStrategy[list[Op]]:
    leaves: list[st.SearchStrategy[Op]] = [range_ops(), put_ops(), put_ops(), delete_ops]
    if depth > 0:
        leaves.append(txn_ops(depth - 1, numbers))
    return st.lists(st.one_of(leaves), max_size=3)


def txn_ops(depth: int, numbers: tuple[int, ...] = tuple(range(13))) -> st.SearchStrategy[TxnOp]:
    return st.builds(
        lambda c, s, f: TxnOp(compares=tuple(c), success=tuple(s), failure=tuple(f)),
        st.lists(compares(numbers), max_size=2),
        op_lists(depth, numbers),
        op_lists(depth, numbers),
    )


def state_numbers(state: dict[bytes, Version]) -> tuple[int, ...]:
    """Integers worth comparing with: small ones and the state's revisions and leases."""
    numbers = {0, 1, 2, 3}
    for _, create, mod, version, lease in state.values():
        numbers.update((create, mod, version, lease, mod + 1))
    return tuple(sorted(numbers))


# A fixed set of reads checked at every revision after every step.
PROBES = [
    RangeOp(key=b"\0", range_end=b"\0"),
    RangeOp(key=b"a", range_end=b"a0", keys_only=True),
    RangeOp(key=b"a", range_end=b"\0", limit=2),
    RangeOp(key=b"a/1"),
    RangeOp(key=b"b", range_end=b"\xff\xff", count_only=True),
    RangeOp(key=b"\0", range_end=b"\0", sort_target=SortTarget.MOD, sort_order=SortOrder.DESCEND),
    RangeOp(key=b"\0", range_end=b"\0", sort_target=SortTarget.VALUE, limit=2),
    RangeOp(key=b"\0", range_end=b"\0", min_mod_revision=4, max_create_revision=6, limit=1),
]


def outcome(call):
    """A call's result, or the class of the MVCC error it raised."""
    try:
        return call()
    except MVCCError as exc:
        return type(exc)


class MVCCMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.store = MVCCStore()
        self.model = Model()

    @initialize(pairs=st.lists(st.tuples(keys, values, leases), min_size=2, max_size=10))
    def populate(self, pairs: list[tuple[bytes, bytes, int]]) -> None:
        for key, value, lease in pairs:
            self.put(key, value, lease)

    @rule(key=keys, value=values, lease=leases)
    def put(self, key: bytes, value: bytes, lease: int) -> None:
        prev = self.model.states[-1].get(key)
        expected = self.model.txn((), [PutOp(key=key, value=value, lease=lease)], ())
        got = self.store.put(key, value, lease)
        assert got == (expected.revision, None if prev is None else model_kv(key, prev))

    @rule(key=keys, end=range_ends)
    def delete_range(self, key: bytes, end: bytes) -> None:
        before = self.model.states[-1]
        gone = tuple(model_kv(k, before[k]) for k in sorted(before) if in_range(k, key, end))
        expected = self.model.txn((), [DeleteRangeOp(key=key, range_end=end)], ())
        assert self.store.delete_range(key, end) == (expected.revision, gone)

    @rule(data=st.data())
    def txn(self, data: st.DataObject) -> None:
        txn = data.draw(txn_ops(depth=2, numbers=state_numbers(self.model.states[-1])))
        digest = self.store.state_digest()
        expected = outcome(lambda: self.model.txn(txn.compares, txn.success, txn.failure))
        got = outcome(lambda: self.store.txn(txn.compares, txn.success, txn.failure))
        assert got == expected
        if isinstance(expected, type):
            assert self.store.state_digest() == digest  # an error applies nothing

    @rule(op=range_ops())
    def range(self, op: RangeOp) -> None:
        assert outcome(lambda: self.store.execute(op)) == outcome(
            lambda: self.model.txn((), [op], ()).responses[0]
        )

    @rule(data=st.data())
    def compact(self, data: st.DataObject) -> None:
        revision = data.draw(st.integers(0, self.model.revision + 1))
        expected = outcome(lambda: self.model.compact(revision))
        assert outcome(lambda: self.store.compact(revision)) == expected

    @rule(budget=st.integers(1, 3))
    def compact_step(self, budget: int) -> None:
        """The physical pass runs in slices; no read or snapshot may tell how far."""
        size = self.store.size_bytes
        self.store.compact_step(budget)
        assert self.store.size_bytes <= size

    @rule()
    def restore_from_snapshot(self) -> None:
        packed = msgpack.packb(self.store.to_wire(), use_bin_type=True)
        restored = MVCCStore.from_wire(msgpack.unpackb(packed, raw=False))
        assert restored.state_digest() == self.store.state_digest()
        self.store = restored

    @invariant()
    def reads_match_the_model_at_every_revision(self) -> None:
        model, store = self.model, self.store
        assert store.revision == model.revision
        assert store.compact_revision == model.compact_revision
        assert store.key_count == len(model.states[-1])
        for revision in range(0, model.revision + 2):
            for probe in PROBES:
                op = RangeOp(
                    key=probe.key,
                    range_end=probe.range_end,
                    revision=revision,
                    limit=probe.limit,
                    keys_only=probe.keys_only,
                    count_only=probe.count_only,
                    sort_order=probe.sort_order,
                    sort_target=probe.sort_target,
                    min_mod_revision=probe.min_mod_revision,
                    max_create_revision=probe.max_create_revision,
                )
                expected = outcome(lambda op=op: model.read(op))
                assert outcome(lambda op=op: store.execute(op)) == expected, (revision, op)
            for key in KEYS:
                expected_kv = outcome(
                    lambda key=key, revision=revision: model.read(
                        RangeOp(key=key, revision=revision)
                    )
                )
                got = outcome(lambda key=key, revision=revision: store.get(key, revision))
                if isinstance(expected_kv, type):
                    assert got == expected_kv
                else:
                    assert got == (expected_kv.kvs[0] if expected_kv.kvs else None)

    @invariant()
    def snapshot_holds_what_compaction_keeps(self) -> None:
        wire = self.store.to_wire()
        assert wire == self.model.kept_wire()
        versions = [v for _, vs in wire[3] for v in vs]
        size = sum(len(key) + len(v[4]) + VERSION_OVERHEAD_BYTES for key, vs in wire[3] for v in vs)
        if self.store.compacting:
            # Freed in slices: until the pass ends the store still holds more.
            assert self.store.version_count >= len(versions)
            assert self.store.size_bytes >= size
        else:
            assert self.store.version_count == len(versions)
            assert self.store.size_bytes == size


TestMVCCMachine = MVCCMachine.TestCase
TestMVCCMachine.settings = settings(max_examples=150, stateful_step_count=25, deadline=None)
