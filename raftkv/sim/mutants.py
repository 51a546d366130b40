"""Deliberately broken Raft variants ("mutants") that the checkers must catch.

Rule: each mutant breaks exactly one rule of the paper by overriding the methods
of :class:`raftkv.core.Raft` that implement it; production code carries no bug switches. The
simulator runs a mutant on every node (``raftkv sim --mutant NAME``), and
``tests/sim/test_mutants.py`` shows each one is caught within a bounded sweep.

Mutants bypass the core's own defensive assertions where the broken rule
would otherwise trip them first, so that what catches them is a safety checker
and not the core noticing its own inconsistency.
"""

from __future__ import annotations

from dataclasses import replace

from raftkv.core import (
    AppendEntries,
    Entry,
    Heartbeat,
    Index,
    JointConfig,
    Message,
    NodeId,
    Raft,
    ReadIndexResponse,
    ReadState,
    RequestVote,
    Role,
)


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


class CountsOwnVoteEarly(Raft):
    """A candidate counts its vote for itself at once, before its new term and
    vote are durable (breaks Figure 2's "persist before responding" for the
    candidate's own vote): a single voter leads on a vote a crash can lose."""

    def vote_for_self(self) -> bool:
        return self._record_vote(self.node_id, True, pre_vote=False)


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
        # Commit as far as the leader says and our log goes (commit_to would call
        # a commit past the last index a bug).
        super().handle_heartbeat(replace(msg, commit=min(msg.commit, self.log.last_index())))


class CommitsPastMatch(Raft):
    """A follower advances its commit index to the leader's even past the last entry
    it knows to match the leader's log (breaks Figure 2, receiver step 5).

    Two routes: an AppendEntries commits up to the follower's *last* index rather
    than the last entry the message proved to match; and a heartbeat -- which
    proves no match at all -- carries the leader's whole commit index (instead of
    ``min(commit, match)``) and the follower commits as far as its own log goes.
    """

    def append_from_leader(self, msg: AppendEntries) -> Index | None:
        last_new = super().append_from_leader(msg)
        if last_new is not None:
            self.log.commit_to(min(msg.commit, self.log.last_index()))
        return last_new

    def broadcast_heartbeat(self, context: bytes = b"") -> None:
        for node_id in self.prs:
            if node_id != self.node_id:
                self.send(
                    Heartbeat(
                        term=self.term,
                        sender=self.node_id,
                        to=node_id,
                        commit=self.log.committed,
                        context=context,
                    )
                )

    def handle_heartbeat(self, msg: Heartbeat) -> None:
        # Commit as far as the leader says and our log goes (commit_to would call
        # a commit past the last index a bug).
        super().handle_heartbeat(replace(msg, commit=min(msg.commit, self.log.last_index())))


# -- issue 3: membership, reads, PreVote (tests/sim/test_mutants_complete.py) ----


class ConfChangeBeforeOwnCommit(Raft):
    """A new leader proposes a configuration change before an entry of its own
    term has committed (the single-server change bug: dissertation §4.1, as
    corrected by Ongaro's 2015 raft-dev post).

    Both halves of the guard go: the explicit own-term check, and the wait for
    configuration entries inherited from earlier terms (``pending_conf_index``
    set to the last index on election, as etcd's pendingConfIndex). With
    configurations taking effect when applied, either half alone keeps a
    follower that holds the new change informed that the previous one
    committed; without both, two changes commit at once and a lagging voter can
    still count with the configuration before both.
    """

    def may_change_membership(self) -> bool:
        return True

    def become_leader(self) -> None:
        super().become_leader()
        self.pending_conf_index = 0


class LocalReadsWithoutQuorum(Raft):
    """A leader answers reads from its local state at once, without a heartbeat
    round confirming that a quorum still follows it, so a deposed leader that
    has not heard of its successor serves stale data (breaks dissertation §6.4
    step 3). Step 1 (wait for an own-term commit) is kept."""

    def handle_read_index(self, context: bytes, sender: NodeId) -> None:
        if not self.may_serve_reads():
            super().handle_read_index(context, sender)  # re-enters here after the commit
            return
        if sender == self.node_id:
            self.read_states.append(ReadState(self.log.committed, context))
        else:
            self.send(
                ReadIndexResponse(
                    term=self.term,
                    sender=self.node_id,
                    to=sender,
                    index=self.log.committed,
                    context=context,
                )
            )


class ReadsBeforeOwnCommit(Raft):
    """A new leader serves ReadIndex before its no-op commits, at a commit index
    that may be below a write its predecessor already acknowledged (breaks
    dissertation §6.4 step 1)."""

    def may_serve_reads(self) -> bool:
        return True


class PreCandidateKeepsLeader(Raft):
    """A pre-candidate keeps believing in its old leader: it does not clear
    ``leader`` when it starts a PreVote round (dissertation §9.6; the bug
    etcd-io/etcd#8334 fixed). A liveness mutant, not a safety one.

    CheckQuorum's lease -- ignore a RequestVote while a leader was heard from
    less than an election timeout ago -- then also covers the pre-candidate's
    own election timer, which it has just reset. Two survivors whose timers
    fire in the same tick ignore each other's PreVotes; neither is refused, so
    neither redraws its timeout, and they fire together again, forever: the
    cluster never elects another leader. (Timers that fire apart only delay
    the election.)
    """

    def become_pre_candidate(self) -> None:
        leader = self.leader
        super().become_pre_candidate()
        self.leader = leader


class IncomingHalfOnlyCommit(Raft):
    """During joint consensus, commits with a majority of C_new alone (breaks
    dissertation §4.3: "agreement (for elections and entry commitment) requires
    separate majorities from both the old and new configurations")."""

    def maybe_commit(self) -> bool:
        saved = self.voters
        self.voters = JointConfig(saved.incoming)
        try:
            return super().maybe_commit()
        finally:
            self.voters = saved


MUTANTS: dict[str, type[Raft]] = {
    "votes-twice": VotesTwice,
    "no-up-to-date-check": NoUpToDateCheck,
    "commits-previous-term": CommitsPreviousTerm,
    "leader-overwrites-log": LeaderOverwritesLog,
    "acks-before-persist": AcksBeforePersist,
    "counts-own-vote-early": CountsOwnVoteEarly,
    "truncates-matching-suffix": TruncatesMatchingSuffix,
    "commits-past-match": CommitsPastMatch,
    "conf-change-before-own-commit": ConfChangeBeforeOwnCommit,
    "local-reads-without-quorum": LocalReadsWithoutQuorum,
    "reads-before-own-commit": ReadsBeforeOwnCommit,
    "pre-candidate-keeps-leader": PreCandidateKeepsLeader,
    "incoming-half-only-commit": IncomingHalfOnlyCommit,
}
"""Mutants by their command-line name."""
