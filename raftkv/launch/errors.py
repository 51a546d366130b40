"""Errors of the local-cluster launcher.

Rule: a node process that exits or never becomes ready is reported with its
id (and exit status), for the caller to print or to fail a test with; the
launcher itself never prints.
"""

from __future__ import annotations

from collections.abc import Sequence

from raftkv.core.errors import RaftKVError

__all__ = ["LaunchError", "NodeExited", "NotReady"]


class LaunchError(RaftKVError):
    """Root of the launcher's errors."""


class NodeExited(LaunchError):
    """A node's process exited while the cluster was expected to run."""

    def __init__(self, node_id: str, returncode: int) -> None:
        super().__init__(f"{node_id} exited with status {returncode}")
        self.node_id = node_id
        self.returncode = returncode


class NotReady(LaunchError):
    """Some nodes did not answer ``/v1/health/ready`` with 200 in time."""

    def __init__(self, node_ids: Sequence[str], timeout: float) -> None:
        super().__init__(f"not ready within {timeout:g} s: {', '.join(node_ids)}")
        self.node_ids = list(node_ids)
        self.timeout = timeout
