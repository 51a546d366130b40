"""The interface between the node runtime and the application it replicates.

Rule: a state machine is a pure function of the committed log. ``apply`` sees only
``(index, command)`` -- no clock, no randomness, no I/O -- so every replica that
applies the same entries in the same order reaches the same state, and
``snapshot()`` of two such replicas returns the same bytes. Anything time-dependent
(session expiry, leases) must use a time carried *inside* the command, assigned by
the leader when it proposed it.

The runtime's side of the contract:

* ``apply`` is called once per committed entry, in log order, with strictly
  increasing indexes (gaps are allowed: entries that are not commands, such as
  configuration changes, need not be passed on);
* an entry with empty data is the leader's no-op; the runtime may skip it or pass
  it on (state machines treat ``b""`` as a no-op);
* ``restore`` replaces the whole state with a snapshot taken by ``snapshot()`` on
  any replica; after it, ``apply`` continues with indexes above the snapshot's;
* ``apply``, ``snapshot`` and ``restore`` are never called concurrently (a
  :class:`SnapshotsLater` state machine's encoding function is the one thing
  that runs beside ``apply``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

__all__ = ["StateMachine", "SnapshotsLater"]


@runtime_checkable
class StateMachine(Protocol):
    """A deterministic application state replicated through the Raft log."""

    def apply(self, index: int, command: bytes) -> object:
        """Apply one committed command.

        Args:
            index: the log index of the entry (strictly increasing across calls).
            command: the entry's data, exactly as proposed.

        Returns:
            The result handed back to the proposer (``RaftNode.propose`` returns it
            on the node that proposed the entry; other replicas discard it).
            Malformed commands should produce an error *result*, not an exception:
            an exception here is a bug and stops the node.
        """
        ...

    def snapshot(self) -> bytes:
        """Serialize the whole state (deterministically) as of the last applied index."""
        ...

    def restore(self, data: bytes) -> None:
        """Replace the whole state with one serialized by :meth:`snapshot`."""
        ...


@runtime_checkable
class SnapshotsLater(Protocol):
    """A state machine whose snapshot can be encoded off the event loop (optional).

    The runtime takes snapshots of such a state machine without stalling:
    :meth:`snapshot_later` runs on the loop, between two ``apply`` calls, and
    must be cheap (a shallow copy); the function it returns runs in another
    thread while ``apply`` goes on, and must return exactly what
    ``snapshot()`` would have returned at the time of the capture.
    """

    def snapshot_later(self) -> Callable[[], bytes]:
        """Capture the state now; return a function that encodes the capture."""
        ...
