"""Deliberately broken Raft variants ("mutants") that the checkers must catch.

Rule: each mutant breaks exactly one rule of the paper by overriding one method
of :class:`raftkv.core.Raft`; production code carries no bug switches. The
simulator runs a mutant on every node (``raftkv sim --mutant NAME``), and
``tests/sim/test_mutants.py`` shows each one is caught within a bounded sweep.

Mutants bypass the core's own defensive assertions where the broken rule
would otherwise trip them first, so that what catches them is a safety checker
and not the core noticing its own inconsistency.
"""

from __future__ import annotations

from raftkv.core import AppendEntries, Entry, Heartbeat, Index, Message, Raft, RequestVote, Role


class VotesTwice(Raft):
    """Grants a vote to every candidate, even after voting in this term (breaks §5.2)."""

    def can_vote_for(self, msg: RequestVote) -> bool:
        return True


class NoUpToDateCheck(Raft):
    """Votes for candidates whose log is behind its own (breaks §5.4.1)."""

    def log_is_up_to_date(self, msg: RequestVote) -> bool:
        return True


class CommitsPreviousTerm(Raft):
    """Commits by counting replicas regardless of the entry's term (breaks §5.4.2, Figure 8)."""

    def maybe_commit(self) -> bool:
        acked = {node_id: pr.match for node_id, pr in self.prs.items()}
        index = self.voters.committed_index(acked)
        if index > self.log.committed:
            self.log.commit_to(index)
            return True
        return False


class LeaderOverwritesLog(Raft):
    """A leader writes new proposals right after its commit index, overwriting its
    own uncommitted entries (breaks Leader Append-Only, §5.3)."""

    def append_entries(self, entries: list[Entry]) -> Index:
        if self.role is not Role.LEADER or not entries or entries[0].data == b"":
            return super().append_entries(entries)
        base = max(self.log.committed, self.log.stable_last_index())
        if base >= self.log.last_index():
            return super().append_entries(entries)
        stamped = [
            Entry(term=self.term, index=base + i + 1, data=e.data, type=e.type)
            for i, e in enumerate(entries)
        ]
        last = self.log.append(stamped)
        me = self.prs[self.node_id]
        me.match = min(me.match, base)
        me.next = last + 1
        self.pending_broadcast = True
        return last


class AcksBeforePersist(Raft):
    """Sends votes and append acknowledgements before they are durable."""

    def send_after_persist(self, msg: Message) -> None:
        self.send(msg)


class TruncatesMatchingSuffix(Raft):
    """A follower truncates everything after prevLogIndex even where the entries match,
    so a delayed, reordered AppendEntries erases later (possibly committed) entries
    (breaks Figure 2, AppendEntries receiver step 3)."""

    def append_from_leader(self, msg: AppendEntries) -> Index | None:
        log = self.log
        if not log.match_term(msg.prev_log_index, msg.prev_log_term):
            return None
        last_new = msg.prev_log_index + len(msg.entries)
        if msg.entries and last_new < log.last_index():
            log.unstable.truncate_and_append(list(msg.entries))
            if log.committed > last_new:
                # Silently forget commitment we can no longer back with entries.
                log.committed = max(last_new, log.applied)
        elif msg.entries:
            conflict = log.find_conflict(msg.entries)
            if conflict:
                log.unstable.truncate_and_append(
                    list(msg.entries[conflict - msg.prev_log_index - 1 :])
                )
        log.commit_to(min(msg.commit, last_new, log.last_index()))
        return last_new

    def handle_heartbeat(self, msg: Heartbeat) -> None:
        msg = Heartbeat(
            term=msg.term,
            sender=msg.sender,
            to=msg.to,
            commit=min(msg.commit, self.log.last_index()),
            context=msg.context,
        )
        super().handle_heartbeat(msg)


class CommitsPastMatch(Raft):
    """A follower advances its commit index to the leader's even past the last entry
    the leader's message proved to match (breaks Figure 2, receiver step 5)."""

    def append_from_leader(self, msg: AppendEntries) -> Index | None:
        last_new = super().append_from_leader(msg)
        if last_new is not None:
            self.log.commit_to(min(msg.commit, self.log.last_index()))
        return last_new


MUTANTS: dict[str, type[Raft]] = {
    "votes-twice": VotesTwice,
    "no-up-to-date-check": NoUpToDateCheck,
    "commits-previous-term": CommitsPreviousTerm,
    "leader-overwrites-log": LeaderOverwritesLog,
    "acks-before-persist": AcksBeforePersist,
    "truncates-matching-suffix": TruncatesMatchingSuffix,
    "commits-past-match": CommitsPastMatch,
}
"""Mutants by their command-line name."""
