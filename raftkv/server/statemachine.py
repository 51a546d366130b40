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
* ``apply``, ``snapshot`` and ``restore`` are never called concurrently.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["StateMachine"]


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
