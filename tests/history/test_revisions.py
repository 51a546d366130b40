"""The revision checker (raftkv.history.revisions) on hand-made histories.

Correct histories are produced by applying commands to a real
:class:`~raftkv.replica.kv.KVStateMachine` one after another and recording its
answers; the faulty ones are those histories with one thing broken: a stale
read, a lost write, a write applied twice, a transaction seen half-applied, a
revision out of real-time order, a compare evaluated wrongly, a compaction
that lost a key.
"""

from __future__ import annotations

import io
from dataclasses import replace

import pytest

from raftkv.history.linearizability import FAIL, INFO
from raftkv.history.revhistory import RevOp, read_rev_history, write_rev_history
from raftkv.history.revisions import check_revisions
from raftkv.replica.kv import (
    ABSENT,
    ERR_COMPACTED,
    Answer,
    Cas,
    Command,
    Compact,
    Compare,
    Delete,
    Deleted,
    DeleteRange,
    Get,
    Item,
    KeyRange,
    KVResult,
    KVStateMachine,
    Listing,
    Put,
    Range,
    Txn,
    TxnAnswer,
    TxnDelete,
    TxnPut,
    TxnRange,
    encode_command,
)

A = KeyRange(key="a/", prefix=True)


class Store:
    """Applies commands to a real state machine and records ``ok`` operations,
    each in its own interval ``[10 i, 10 i + 5]`` (so they are ordered in time)."""

    def __init__(self) -> None:
        self.sm = KVStateMachine()
        self.index = 0
        self.ops: list[RevOp] = []

    def do(self, cmd: Command, *, client: int = 1) -> RevOp:
        self.index += 1
        answer = self.sm.apply(self.index, encode_command(cmd))
        return self._record(cmd, answer, client)

    def read(self, cmd: Range, *, client: int = 1) -> RevOp:
        """A range served from local state (as after ReadIndex)."""
        answer = self.sm.range(cmd.range, revision=cmd.revision, limit=cmd.limit)
        return self._record(cmd, answer, client)

    def _record(self, cmd: Command, answer: Answer, client: int) -> RevOp:
        n = len(self.ops)
        op = RevOp(
            op_id=n, client_id=client, command=cmd, call=10 * n, ret=10 * n + 5, answer=answer
        )
        self.ops.append(op)
        return op


def put(key: str, value: object) -> Put:
    return Put(key=key, value=value, time_ms=1)  # type: ignore[arg-type]


def rng(kr: KeyRange = A, revision: int = 0, limit: int = 0) -> Range:
    return Range(range=kr, revision=revision, limit=limit, time_ms=1)


def txn(
    compares: tuple[Compare, ...],
    success: tuple[TxnPut | TxnDelete | TxnRange, ...],
    failure: tuple[TxnPut | TxnDelete | TxnRange, ...] = (),
) -> Txn:
    return Txn(compares=compares, success=success, failure=failure, time_ms=1)


def correct_history() -> Store:
    s = Store()
    s.do(put("a/1", 1))  # 2
    s.do(put("a/2", 2))  # 3
    s.do(put("k", "x"))  # 4
    s.do(Cas(key="k", expect="y", value="z", time_ms=1))  # conflict at 4
    s.do(Cas(key="k", expect="x", value="z", time_ms=1))  # 5
    s.read(rng())
    s.read(rng(revision=2))
    s.do(rng(KeyRange(key="", prefix=True), limit=2))  # through the log
    older = Compare(range=A, target="mod_revision", cmp="<", value=3)
    s.do(txn((older,), (TxnPut(key="b", value=0),), (TxnRange(range=A),)))  # fails at 5
    newer = Compare(range=A, target="mod_revision", cmp="<", value=6)
    s.do(
        txn(
            (newer,),
            (TxnPut(key="a/3", value=3), TxnRange(range=A), TxnDelete(range=KeyRange(key="k"))),
        )
    )  # 6
    s.do(txn((), (TxnRange(range=A), TxnRange(range=KeyRange(key="k")))))  # read-only at 6
    s.do(DeleteRange(range=KeyRange(key="zz", prefix=True), time_ms=1))  # nothing at 6
    s.do(Delete(key="k", time_ms=1))  # not found at 6
    s.do(DeleteRange(range=A, prev_kv=True, time_ms=1))  # 7
    s.do(put("a/1", 10))  # 8
    s.do(Compact(revision=6, time_ms=1))
    s.do(rng(revision=5))  # compacted
    s.read(rng(revision=6))
    s.do(Get(key="a/1", time_ms=1))
    return s


def test_a_correct_history_passes() -> None:
    s = correct_history()
    result = check_revisions(s.ops)
    assert result.ok is True, result.describe()
    assert result.revisions == 8 and result.writes == 7
    # The answers recorded really are the interesting ones.
    kinds = [type(op.answer).__name__ for op in s.ops]
    assert {"KVResult", "Listing", "Deleted", "TxnAnswer"} <= set(kinds)
    assert any(isinstance(op.answer, KVResult) and op.answer.error == ERR_COMPACTED for op in s.ops)


def test_the_history_format_round_trips() -> None:
    s = correct_history()
    buf = io.StringIO()
    write_rev_history(buf, s.ops)
    again = read_rev_history(io.StringIO(buf.getvalue()))
    assert [op.describe() for op in again] == [op.describe() for op in s.ops]
    assert check_revisions(again).ok is True


def test_a_stale_read_is_caught() -> None:
    """A read served from a replica that had not applied a write that had
    already returned: its revision is older than real time allows."""
    s = Store()
    s.do(put("a/1", 1))
    stale = s.read(rng())  # revision 2
    s.do(put("a/1", 2))  # revision 3, returns at 25
    s.ops.append(replace(stale, op_id=3, call=30, ret=35))  # invoked after: still revision 2
    result = check_revisions(s.ops)
    assert result.ok is False
    assert "out of real-time order" in result.problems[0]
    assert "#3" in result.problems[0] and "revision 3" in result.problems[0]


def test_a_read_of_the_wrong_value_is_caught() -> None:
    s = Store()
    s.do(put("a/1", 1))
    s.do(put("a/1", 2))
    read = s.read(rng())
    assert isinstance(read.answer, Listing)
    item = read.answer.items[0]
    wrong = replace(item, value_json=b"1")
    s.ops[-1] = replace(read, answer=replace(read.answer, items=(wrong,)))
    result = check_revisions(s.ops)
    assert result.ok is False
    assert "item a/1: value differs" in result.problems[0]
    assert "expected: rev=3 count=1 [a/1=2@3(c2,v2)]" in result.problems[0]


def test_a_lost_write_is_caught() -> None:
    """An acknowledged write that later reads do not show."""
    s = Store()
    s.do(put("a/1", 1))
    lost = s.do(put("a/2", 2))  # revision 3
    s.do(put("a/3", 3))  # revision 4
    s.read(rng())
    # The replicas lost revision 3's write: the read shows a/1 and a/3 only.
    read = s.ops[-1]
    assert isinstance(read.answer, Listing)
    items = tuple(i for i in read.answer.items if i.key != "a/2")
    s.ops[-1] = replace(read, answer=replace(read.answer, items=items, count=2))
    result = check_revisions(s.ops)
    assert result.ok is False
    assert "revision 4" in result.problems[0] and "count or more differs" in result.problems[0]
    assert lost.answer is not None and lost.answer.revision == 3


def test_a_write_applied_twice_is_caught() -> None:
    """The second execution of a retried put makes a revision no answer claims."""
    s = Store()
    s.do(put("a/1", 1))
    s.do(put("a/1", 1))  # the duplicate: revision 3
    s.do(put("b", 1))
    del s.ops[1]  # the client saw one put
    result = check_revisions(s.ops)
    assert result.ok is False
    assert "revision 3 was made by no operation" in result.problems[0]


def test_two_writes_claiming_one_revision_are_caught() -> None:
    s = Store()
    first = s.do(put("a/1", 1))
    second = s.do(put("a/2", 1))
    s.ops[1] = replace(second, answer=first.answer)
    result = check_revisions(s.ops)
    assert result.ok is False and "made by two writes" in result.problems[0]


def test_a_non_atomic_transaction_is_caught() -> None:
    """A transaction's two puts are one revision; a read that sees one of them
    at that revision and the other missing shows a half-applied transaction."""
    s = Store()
    s.do(txn((), (TxnPut(key="a/1", value=1), TxnPut(key="a/2", value=1))))  # 2
    read = s.read(rng())
    assert isinstance(read.answer, Listing) and read.answer.count == 2
    half = replace(read.answer, items=read.answer.items[:1], count=1)
    s.ops[-1] = replace(read, answer=half)
    result = check_revisions(s.ops)
    assert result.ok is False and "count or more differs" in result.problems[0]


def test_a_revision_out_of_real_time_order_is_caught() -> None:
    s = Store()
    early = s.do(put("a/1", 1))  # revision 2, [0, 5]
    late = s.do(put("a/2", 1))  # revision 3, [10, 15]
    # Swap their revisions: the one invoked after the other returned is older.
    assert early.answer is not None and late.answer is not None
    s.ops[0] = replace(early, command=late.command, answer=late.answer)
    s.ops[1] = replace(late, command=early.command, answer=early.answer)
    result = check_revisions(s.ops)
    assert result.ok is False
    assert "revision 2 out of real-time order" in result.problems[0]


def test_a_success_branch_run_on_a_failed_compare_is_caught() -> None:
    """A compare over a range fails on one key; the answer says it succeeded."""
    s = Store()
    s.do(put("a/1", 1))  # 2
    s.do(put("a/2", 2))  # 3
    guard = Compare(range=A, target="mod_revision", cmp="<", value=3)  # a/2 is at 3
    op = s.do(txn((guard,), (TxnPut(key="b", value=1),), (TxnRange(range=A),)))
    assert isinstance(op.answer, TxnAnswer) and not op.answer.succeeded
    # The buggy replica ran the success branch as revision 4.
    from raftkv.replica.kv import PutDone

    s.ops[-1] = replace(
        op, answer=TxnAnswer(index=0, revision=4, succeeded=True, responses=(PutDone(revision=4),))
    )
    result = check_revisions(s.ops)
    assert result.ok is False
    assert "revision 4: answered as a write, but changes nothing" in result.problems[0]
    assert "expected: failed rev=3" in result.problems[0]


def test_a_read_only_transaction_that_bumps_the_revision_is_caught() -> None:
    s = Store()
    s.do(put("a/1", 1))  # 2
    op = s.do(txn((), (TxnRange(range=A),)))
    assert isinstance(op.answer, TxnAnswer) and op.answer.revision == 2
    listing = op.answer.responses[0]
    assert isinstance(listing, Listing)
    bumped = TxnAnswer(
        index=0, revision=3, succeeded=True, responses=(replace(listing, revision=3),)
    )
    s.ops[-1] = replace(op, answer=bumped)
    s.do(put("a/2", 1))  # the store's next revision is now 4
    s.ops[-1] = replace(s.ops[-1], answer=KVResult(ok=True, index=0, revision=4, found=False))
    result = check_revisions(s.ops)
    assert result.ok is False
    assert "revision 3 was made by no operation" in result.problems[0]


def test_a_compaction_that_loses_the_newest_version_is_caught() -> None:
    s = Store()
    s.do(put("a/1", 1))  # 2
    s.do(put("a/2", 1))  # 3
    s.do(Compact(revision=3, time_ms=1))
    read = s.read(rng())
    assert isinstance(read.answer, Listing)
    s.ops[-1] = replace(read, answer=replace(read.answer, items=read.answer.items[1:], count=1))
    result = check_revisions(s.ops)
    assert result.ok is False and "revision 3" in result.problems[0]


def test_a_read_of_a_compacted_revision_after_the_compaction_is_caught() -> None:
    s = Store()
    s.do(put("a/1", 1))  # 2
    s.do(put("a/1", 2))  # 3
    early = s.read(rng(revision=2))  # fine before the compaction
    s.do(Compact(revision=3, time_ms=1))
    s.ops.append(replace(early, op_id=9, call=100, ret=105))
    result = check_revisions(s.ops)
    assert result.ok is False
    assert "read at revision 2 succeeded after a compaction to 3" in result.problems[0]


def test_a_compacted_error_without_a_compaction_is_caught() -> None:
    s = Store()
    s.do(put("a/1", 1))
    s.do(put("a/1", 2))
    op = s.do(rng(revision=2))
    s.ops[-1] = replace(
        op,
        answer=KVResult(ok=False, index=0, revision=3, error=ERR_COMPACTED, compact_revision=3),
    )
    result = check_revisions(s.ops)
    assert result.ok is False and "no compaction to 3" in result.problems[0]


def test_unknown_writes_may_fill_a_revision_once() -> None:
    """An ``info`` write may have taken effect: the replay places it where the
    reads need it; it may take effect at most once."""
    s = Store()
    s.do(put("a/1", 1))  # 2
    unknown = s.do(put("a/1", 5))  # 3, but the client never heard
    s.read(rng())
    s.ops[1] = replace(unknown, status=INFO, ret=None, answer=None)
    assert check_revisions(s.ops).ok is True
    # The same history, with the write seen as two revisions: only one is its.
    s.do(put("a/1", 5))  # 4: a second execution of the same unknown put?
    s.read(rng())
    del s.ops[3]
    result = check_revisions(s.ops)
    assert result.ok is False
    assert "revision 4 was made by no operation" in result.problems[0]


def test_an_unknown_write_never_applied_may_be_left_out() -> None:
    s = Store()
    s.do(put("a/1", 1))
    s.read(rng())
    s.ops.append(RevOp(op_id=9, client_id=2, command=put("a/1", 7), call=1, status=INFO))
    s.ops.append(RevOp(op_id=10, client_id=2, command=put("a/1", 8), call=1, status=FAIL))
    assert check_revisions(s.ops).ok is True


def test_an_unknown_write_is_placed_only_after_its_call() -> None:
    """Real time: an ``info`` put invoked after revision 3 returned cannot be
    the write that made revision 3."""
    s = Store()
    s.do(put("a/1", 1))  # 2
    made = s.do(put("a/1", 5))  # 3
    s.read(rng())  # sees 5 at 3
    s.ops[1] = replace(made, status=INFO, call=100, ret=None, answer=None)
    result = check_revisions(s.ops)
    assert result.ok is False


def test_a_replayed_delete_range_may_or_may_not_have_deleted() -> None:
    """A retried delete-range answered from the session table does not say how
    many keys it deleted; the replay decides from the revisions around it."""
    s = Store()
    s.do(put("a/1", 1))  # 2
    op = s.do(DeleteRange(range=A, time_ms=1))  # 3
    s.read(rng())
    assert isinstance(op.answer, Deleted)
    s.ops[1] = replace(op, answer=Deleted(index=0, revision=3, deleted=0, replayed=True))
    assert check_revisions(s.ops).ok is True


def test_cas_and_get_answers_are_checked() -> None:
    s = Store()
    s.do(put("k", 1))
    s.do(Cas(key="k", expect=ABSENT, value=2, time_ms=1))  # conflict
    get = s.do(Get(key="k", time_ms=1))
    assert check_revisions(s.ops).ok is True
    assert isinstance(get.answer, KVResult) and get.answer.item is not None
    wrong = replace(get.answer.item, version=2)
    s.ops[-1] = replace(get, answer=replace(get.answer, item=wrong))
    result = check_revisions(s.ops)
    assert result.ok is False and "item k differs" in result.problems[0]


@pytest.mark.parametrize("bad", ["ret", "answer"])
def test_an_ok_op_needs_a_return_and_an_answer(bad: str) -> None:
    fields: dict[str, object] = {"ret": 1.0, "answer": KVResult(ok=True, index=0, revision=2)}
    fields[bad] = None
    with pytest.raises(ValueError, match="needs a return time and an answer"):
        RevOp(op_id=1, client_id=1, command=put("a", 1), call=0, **fields)  # type: ignore[arg-type]


def test_items_carry_their_revisions() -> None:
    s = correct_history()
    listing = next(op.answer for op in s.ops if isinstance(op.answer, Listing))
    assert all(isinstance(i, Item) and i.mod_revision >= i.create_revision for i in listing.items)


def test_a_compacted_answer_names_the_compaction_that_may_have_made_it() -> None:
    """Two compactions to one revision: the first succeeded before the read
    was refused; a later one (unknown outcome) does not hide it."""
    s = Store()
    s.do(put("a/1", 1))  # 2
    s.do(put("a/1", 2))  # 3
    s.do(Compact(revision=3, time_ms=1))
    s.do(rng(revision=2))  # refused: compacted to 3
    s.ops.append(
        RevOp(op_id=99, client_id=2, command=Compact(revision=3, time_ms=1), call=500, status=INFO)
    )
    assert check_revisions(s.ops).ok is True
