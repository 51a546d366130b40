"""Errors raised by the core.

Rule: caller misuse raises a :class:`RaftError` subclass; a bad message from a
peer is dropped (and logged), never raised; a broken internal invariant is a bug
and raises :class:`AssertionError` via :func:`raftkv.core.errors.bug`.
"""

from __future__ import annotations

from typing import NoReturn


class RaftKVError(Exception):
    """Root of every raftkv error."""


class RaftError(RaftKVError):
    """Root of the errors the core raises to its caller."""


class ProposalDropped(RaftError):
    """The proposal was not appended (no leader known, or a transfer is in progress)."""


class NotLeader(ProposalDropped):
    """This node is not the leader; ``leader`` is the one it knows, if any."""

    def __init__(self, leader: str | None) -> None:
        super().__init__(f"not the leader (leader={leader})")
        self.leader = leader


class LogCompacted(RaftError):
    """The requested index is below the first index still in the log."""


class LogUnavailable(RaftError):
    """The requested index is above the last index in the log."""


def bug(message: str) -> NoReturn:
    """Fail loudly on a broken invariant (etcd's ``Panicf``)."""
    raise AssertionError(message)
