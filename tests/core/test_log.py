"""RaftLog (stable storage + unstable tail) against a plain list-of-terms model.

Guards paper §5.3 / Figure 2 (AppendEntries receiver rules 2-5), the §5.3
fast-backtracking search and the §5.4.1 up-to-date comparison.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftkv.core import Entry, LogCompacted, LogUnavailable, MemoryStorage
from raftkv.core.log import RaftLog


def build(terms: list[int], stable: int) -> RaftLog:
    """A log whose first ``stable`` entries are in storage and the rest unstable."""
    storage = MemoryStorage()
    storage.append([Entry(term=t, index=i + 1) for i, t in enumerate(terms[:stable])])
    log = RaftLog(storage)
    if len(terms) > stable:
        log.append([Entry(term=t, index=i + 1) for i, t in enumerate(terms) if i >= stable])
    return log


def terms_of(log: RaftLog) -> list[int]:
    return [e.term for e in log.slice(1, log.last_index() + 1)]


def monotone_terms(max_len: int = 12):
    """Non-decreasing term sequences, as every real Raft log is."""
    return st.lists(st.integers(0, 3), max_size=max_len).map(
        lambda ds: [1 + sum(ds[: i + 1]) for i in range(len(ds))]
    )


@st.composite
def log_and_split(draw, max_len: int = 12):
    terms = draw(monotone_terms(max_len))
    stable = draw(st.integers(0, len(terms)))
    return terms, stable


# --------------------------------------------------------------------------- model


def model_maybe_append(terms, committed, prev, prev_term, commit, entries):
    """Figure 2 receiver steps 2-5 on a list; returns (new_terms, new_commit, last_new)."""
    term_at = [0, *terms]
    if prev > len(terms) or term_at[prev] != prev_term:
        return terms, committed, None
    new = list(terms)
    for idx, t in entries:
        if idx <= len(new) and new[idx - 1] == t:
            continue
        new = new[: idx - 1]
        new.append(t)
    last_new = prev + len(entries)
    return new, max(committed, min(commit, last_new)), last_new


# --------------------------------------------------------------------------- properties


@settings(max_examples=100, deadline=None)
@given(
    data=st.data(),
    base=log_and_split(),
)
def test_maybe_append_matches_model(data, base):
    """Paper Figure 2 (AppendEntries receiver 2-5): consistency check, truncation only
    at the first conflict, append, commit = min(leaderCommit, last new index)."""
    terms, stable = base
    log = build(terms, stable)
    committed = data.draw(st.integers(0, len(terms)), label="committed")
    log.commit_to(committed)
    prev = data.draw(st.integers(0, len(terms) + 2), label="prev")
    prev_term = ([0, *terms][prev] if prev <= len(terms) else 1) + data.draw(
        st.sampled_from([0, 0, 0, 1]), label="term-skew"
    )
    start_term = max([*[0, *terms][: prev + 1], prev_term])
    n = data.draw(st.integers(0, 5), label="n")
    bumps = data.draw(st.lists(st.integers(0, 2), min_size=n, max_size=n), label="bumps")
    ent_terms, t = [], start_term
    for b in bumps:
        t += b
        ent_terms.append(t)
    entries = [(prev + 1 + i, et) for i, et in enumerate(ent_terms)]
    # Sometimes resend exactly what the log holds (a duplicate, reordered message).
    if data.draw(st.booleans(), label="duplicate") and prev <= len(terms):
        entries = [(i, terms[i - 1]) for i in range(prev + 1, min(len(terms), prev + n) + 1)]
    commit = data.draw(st.integers(0, len(terms) + 6), label="commit")

    exp_terms, exp_commit, exp_last = model_maybe_append(
        terms, committed, prev, prev_term, commit, entries
    )
    conflicts_committed = exp_last is not None and any(
        i <= committed and (i > len(terms) or terms[i - 1] != t) for i, t in entries
    )
    ents = tuple(Entry(term=t, index=i) for i, t in entries)
    if conflicts_committed:
        with pytest.raises(AssertionError):
            log.maybe_append(prev, prev_term, commit, ents)
        return
    got = log.maybe_append(prev, prev_term, commit, ents)
    assert got == exp_last
    assert terms_of(log) == exp_terms
    assert log.committed == exp_commit


@settings(max_examples=100, deadline=None)
@given(base=log_and_split(), index=st.integers(0, 14), term=st.integers(0, 40))
def test_find_conflict_by_term_matches_brute_force(base, index, term):
    """Paper §5.3 (fast backtracking): the largest index <= index whose term <= term."""
    terms, stable = base
    log = build(terms, stable)
    term_at = [0, *terms]
    i = min(index, len(terms))
    while i > 0 and term_at[i] > term:
        i -= 1
    assert log.find_conflict_by_term(index, term) == (i, term_at[i])


@settings(max_examples=80, deadline=None)
@given(base=log_and_split(), last_index=st.integers(0, 14), last_term=st.integers(0, 40))
def test_is_up_to_date_matches_paper(base, last_index, last_term):
    """Paper §5.4.1: compare last terms; if equal, the longer log is more up to date."""
    terms, stable = base
    log = build(terms, stable)
    my_term = terms[-1] if terms else 0
    expected = (last_term, last_index) >= (my_term, len(terms))
    assert log.is_up_to_date(last_index, last_term) == expected


@settings(max_examples=80, deadline=None)
@given(base=log_and_split(), data=st.data())
def test_append_replaces_suffix(base, data):
    """Log append after a non-committed point replaces the suffix it overlaps."""
    terms, stable = base
    log = build(terms, stable)
    after = data.draw(st.integers(0, len(terms)))
    top = terms[after - 1] if after else 1
    new = data.draw(st.lists(st.integers(top, top + 3), min_size=1, max_size=4))
    new.sort()
    last = log.append([Entry(term=t, index=after + 1 + i) for i, t in enumerate(new)])
    assert last == after + len(new)
    assert terms_of(log) == terms[:after] + new


@settings(max_examples=80, deadline=None)
@given(base=log_and_split(), data=st.data())
def test_slice_and_size_limit(base, data):
    """Slices span storage and unstable parts; max_size keeps at least one entry."""
    terms, stable = base
    log = build(terms, stable)
    lo = data.draw(st.integers(1, len(terms) + 1))
    hi = data.draw(st.integers(lo, len(terms) + 1))
    max_size = data.draw(st.one_of(st.none(), st.integers(1, 100)))
    got = log.slice(lo, hi, max_size)
    want = [Entry(term=t, index=i) for i, t in enumerate(terms, start=1)][lo - 1 : hi - 1]
    if max_size is None or not want:
        assert got == want
    else:
        assert got == want[: len(got)] and len(got) >= 1
        assert len(got) == 1 or sum(e.size() for e in got) <= max_size
        if len(got) < len(want):
            assert sum(e.size() for e in want[: len(got) + 1]) > max_size


# --------------------------------------------------------------------------- units


def test_term_outside_log_raises():
    log = build([1, 1, 2], 2)
    assert log.term(0) == 0 and log.term(3) == 2
    with pytest.raises(LogUnavailable):
        log.term(4)
    assert log.term_or_none(4) is None


def test_slice_below_first_index_raises():
    log = build([1], 1)
    with pytest.raises(LogCompacted):
        log.slice(0, 1)


def test_append_below_commit_is_a_bug():
    """Paper §5.4 (Leader Completeness): committed entries are never overwritten."""
    log = build([1, 1, 2], 3)
    log.commit_to(2)
    with pytest.raises(AssertionError):
        log.append([Entry(term=3, index=2)])


def test_commit_beyond_last_index_is_a_bug():
    log = build([1], 1)
    with pytest.raises(AssertionError):
        log.commit_to(2)


def test_commit_never_decreases():
    log = build([1, 1, 1], 3)
    log.commit_to(3)
    log.commit_to(1)
    assert log.committed == 3


def test_maybe_commit_requires_current_term():
    """Paper §5.4.2: maybe_commit refuses an index whose entry is of another term."""
    log = build([1, 2, 3], 3)
    assert not log.maybe_commit(2, 3)
    assert log.committed == 0
    assert log.maybe_commit(3, 3)
    assert log.committed == 3


def test_stable_to_ignores_replaced_entries():
    """An acknowledgement of a write that was superseded (same index, other term) must
    not mark the replacement stable."""
    log = build([1, 1], 1)  # index 2 unstable, term 1
    log.append([Entry(term=2, index=2)])  # replaced before the write finished
    log.stable_to(2, 1)
    assert [e.term for e in log.unstable_entries()] == [2]
    log.stable_to(2, 2)
    assert log.unstable_entries() == []


def test_next_committed_entries_hands_out_each_once():
    log = build([1, 1, 1], 3)
    log.commit_to(2)
    assert [e.index for e in log.next_committed_entries(None)] == [1, 2]
    log.applied_to(2)
    assert log.next_committed_entries(None) == []
    log.commit_to(3)
    assert [e.index for e in log.next_committed_entries(None)] == [3]
