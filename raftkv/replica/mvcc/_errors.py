"""The errors the MVCC store raises to its caller, under :class:`MVCCError`.

Rule: every one is the caller's to handle (a bad request, a revision out of
reach, a snapshot the store did not write); a broken invariant of the store
is a bug and calls :func:`~raftkv.core.errors.bug` instead.
"""

from __future__ import annotations

from typing import ClassVar

from raftkv.core.errors import RaftKVError


class MVCCError(RaftKVError):
    """Root of the errors the MVCC store raises to its caller.

    ``message`` is etcd's text for the error (without etcd's ``"etcdserver: "``
    prefix), for an API layer that must answer as etcd does.
    """

    message: ClassVar[str] = "mvcc error"


class RevisionError(MVCCError):
    """A requested revision is outside what the store can answer (gRPC OutOfRange)."""


class CompactedError(RevisionError):
    """The revision is below the compact revision (etcd's ``ErrCompacted``).

    Attributes:
        compact_revision: the store's compact revision when the error was raised.
    """

    message: ClassVar[str] = "mvcc: required revision has been compacted"

    def __init__(self, compact_revision: int) -> None:
        super().__init__(self.message)
        self.compact_revision = compact_revision


class FutureRevisionError(RevisionError):
    """The revision is above the current revision (etcd's ``ErrFutureRev``).

    Attributes:
        revision: the store's current revision when the error was raised.
    """

    message: ClassVar[str] = "mvcc: required revision is a future revision"

    def __init__(self, revision: int) -> None:
        super().__init__(self.message)
        self.revision = revision


class InvalidRequestError(MVCCError):
    """The request itself is invalid (gRPC InvalidArgument); nothing was changed.

    Attributes:
        key: the key the error is about, if there is one.
    """

    def __init__(self, key: bytes | None = None) -> None:
        super().__init__(self.message)
        self.key = key


class EmptyKeyError(InvalidRequestError):
    """A request names the empty key (etcd's ``ErrGRPCEmptyKey``)."""

    message: ClassVar[str] = "key is not provided"


class ValueProvidedError(InvalidRequestError):
    """A put has ``ignore_value`` and a non-empty value (``ErrGRPCValueProvided``)."""

    message: ClassVar[str] = "value is provided"


class LeaseProvidedError(InvalidRequestError):
    """A put has ``ignore_lease`` and a lease (``ErrGRPCLeaseProvided``)."""

    message: ClassVar[str] = "lease is provided"


class DuplicateKeyError(InvalidRequestError):
    """A transaction branch writes a key twice (``ErrGRPCDuplicateKey``; package rule 5)."""

    message: ClassVar[str] = "duplicate key given in txn request"


class KeyNotFoundError(InvalidRequestError):
    """A put with ``ignore_value`` or ``ignore_lease`` names an absent key (``ErrKeyNotFound``)."""

    message: ClassVar[str] = "key not found"


class InvalidSnapshotError(MVCCError):
    """:meth:`MVCCStore.from_wire` got something :meth:`MVCCStore.to_wire` cannot have made."""

    message: ClassVar[str] = "invalid MVCC snapshot"

    def __init__(self, reason: str) -> None:
        super().__init__(f"{self.message}: {reason}")
        self.reason = reason
