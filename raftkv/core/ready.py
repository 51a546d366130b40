"""The batch of work the core hands to its driver.

Rule: a driver handles one :class:`Ready` at a time, in this order:

1. send ``messages`` (they may go out before anything is persisted -- this is
   what lets a leader write to its own disk in parallel with replication,
   dissertation §10.2.1);
2. if ``snapshot`` is set, persist it and restore the state machine from it;
   append ``entries`` to stable storage (replacing any overlapping suffix) and
   record ``hard_state`` if not ``None``; if ``must_sync``, make both durable;
3. only then send ``messages_after_persist`` (votes and append acknowledgements
   promise that state is durable);
4. apply ``committed_entries`` to the state machine, in order -- this may also
   happen before step 2 completes: committed entries are durable on a majority
   already, even those that are among this Ready's own ``entries`` (etcd's
   drivers do the same, and raftkv's server applies them while it syncs);
5. call ``advance(ready)`` only once steps 2-4 are all done. ``advance`` is
   how the core learns that the Ready is durable: only then do its own
   ``entries`` count toward commitment, and only then does a candidate count
   its vote for itself (a vote like any other: it promises durable state).
   That vote never appears in ``messages_after_persist``: the core keeps what
   it addresses to itself and steps it back in at ``advance``. So a node --
   even a single voter -- becomes leader only after a Ready holding its term
   and vote was persisted; a driver that crashes before that never led.

Calls to ``step``/``tick``/``propose`` between ``ready()`` and ``advance()`` are
allowed; ``ready()`` may not be called again until ``advance()``.

Asynchronous storage writes (etcd-io/raft's AsyncStorageWrites, in spirit): a
driver may split step 5 in two -- ``accept(ready)`` once steps 1, 4 and the
writes of step 2 are done (the sync may still be running), and
``persisted(ready)`` once the sync is done and ``messages_after_persist`` are
sent. ``ready()`` may be called again right after ``accept``: the next Ready
holds only what is new (an entry is handed out once, unless a new leader
replaced it meanwhile), so the disk and the processing overlap. Readys are
persisted in the order they were made (one sync covers every write before it),
and a Ready's ``messages_after_persist`` go out only once it and every Ready
before it are durable. A Ready that holds a ``snapshot`` is accepted only after
the Readys before it persisted (the server then syncs it at once; the
simulator persists it in order like any other).
"""

from __future__ import annotations

from dataclasses import dataclass

from raftkv.core.frozen import fast_init
from raftkv.core.messages import Message, describe_message
from raftkv.core.types import Entry, HardState, ReadState, Snapshot, SoftState


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Ready:
    """Work for the driver; see the module docstring for the order."""

    soft_state: SoftState | None
    """New soft state, or ``None`` if it did not change since the last Ready."""
    hard_state: HardState | None
    """New hard state to persist, or ``None`` if it did not change."""
    entries: tuple[Entry, ...]
    """Entries to append to stable storage."""
    committed_entries: tuple[Entry, ...]
    """Committed entries to apply, in index order."""
    messages: tuple[Message, ...]
    """Messages that may be sent immediately."""
    messages_after_persist: tuple[Message, ...]
    """Messages that may be sent only once ``hard_state`` and ``entries`` are
    durable. Never addressed to this node (see step 5)."""
    must_sync: bool
    """Whether ``entries``/``hard_state`` must be fsynced before step 3."""
    snapshot: Snapshot | None = None
    """A snapshot received from the leader: persist it (before ``entries``) and
    restore the state machine from it before applying ``committed_entries``."""
    read_states: tuple[ReadState, ...] = ()
    """Reads that became safe: serve each once the state machine applied its index."""

    def is_empty(self) -> bool:
        return (
            self.soft_state is None
            and self.hard_state is None
            and not self.entries
            and not self.committed_entries
            and not self.messages
            and not self.messages_after_persist
            and self.snapshot is None
            and not self.read_states
        )


def describe_ready(ready: Ready) -> str:
    """Stable multi-line text for ``ready``, for golden tests."""
    lines: list[str] = []
    if ready.soft_state is not None:
        ss = ready.soft_state
        lines.append(f"SoftState role={ss.role.value} leader={ss.leader}")
    if ready.hard_state is not None:
        hs = ready.hard_state
        lines.append(f"HardState term={hs.term} vote={hs.vote} commit={hs.commit}")
    if ready.snapshot is not None:
        md = ready.snapshot.metadata
        lines.append(
            f"Snapshot index={md.index} term={md.term} voters={list(md.conf_state.voters)}"
        )
    if ready.entries:
        lines.append("Entries: " + " ".join(_entry(e) for e in ready.entries))
    if ready.committed_entries:
        lines.append("Committed: " + " ".join(_entry(e) for e in ready.committed_entries))
    for m in ready.messages:
        lines.append("Send: " + describe_message(m))
    for m in ready.messages_after_persist:
        lines.append("SendAfterPersist: " + describe_message(m))
    for rs in ready.read_states:
        lines.append(f"ReadState index={rs.index} context={rs.context.hex()}")
    if ready.must_sync:
        lines.append("MustSync")
    return "\n".join(lines)


def _entry(e: Entry) -> str:
    data = e.data.decode("utf-8", "replace") if e.data else ""
    return f"{e.term}/{e.index}" + (f":{data}" if data else "")
