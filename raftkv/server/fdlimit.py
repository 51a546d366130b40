"""File descriptors of a node: the soft limit raised at start, and the HTTP connection budget.

Rule: a node never lets clients take the file descriptors its own work needs.
The WAL (segments, rotation, directory syncs), snapshots, the address book,
peer links and handshakes, requests forwarded to the leader and the
connections being refused are reserved first (:func:`reserved_fds`); HTTP
connections get what is left, at most ``--max-connections``. A value that does
not fit is refused at start with the numbers, rather than failing later at the
first ``open()`` that finds no descriptor (which would stop the node).

Only ``raftkv serve`` (:func:`raftkv.server.http.server.serve`) calls
:func:`apply_fd_budget`; it changes the process's limit, which an embedder may
not want.
"""

from __future__ import annotations

import dataclasses
import logging
import resource

from raftkv.server.config import ServerConfig
from raftkv.server.errors import ConfigError
from raftkv.server.http.connections import MAX_CONNECTIONS, MAX_REFUSING
from raftkv.transport.tcp import MAX_PENDING_HANDSHAKES

__all__ = [
    "FORWARD_CONNECTIONS",
    "MIN_CONNECTIONS",
    "apply_fd_budget",
    "connection_budget",
    "raise_nofile_limit",
    "reserved_fds",
]

logger = logging.getLogger(__name__)

FORWARD_CONNECTIONS = 256
"""Connections of the HTTP client a follower forwards requests to the leader with."""
MIN_CONNECTIONS = 16
"""Fewer HTTP connections than this are not worth starting with."""
# Descriptors of the process itself: standard streams, log files, the event
# loop (epoll, self-pipe), both listeners, the data dir lock, the open WAL
# segment and the one rotation creates, directory syncs, a snapshot being
# written or read, members.json, threads' and libraries' own.
_BASE = 128
# Per member: the outgoing and the incoming peer link.
_PER_MEMBER = 2
# Peer connections still in their handshake: the transport caps them, and the
# ones it evicted for newcomers may still be closing.
_PEER_HANDSHAKES = 2 * MAX_PENDING_HANDSHAKES
# A soft limit of "unlimited" is set to at most this (the kernel's nr_open
# default): every value beyond it fails on Linux anyway.
_CEILING = 1 << 20


def raise_nofile_limit() -> tuple[int, int]:
    """Raise ``RLIMIT_NOFILE``'s soft limit to the hard limit, as far as allowed.

    Returns:
        ``(soft, hard)`` after the attempt (``resource.RLIM_INFINITY`` for no limit).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _CEILING if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            logger.warning("could not raise the open file limit to %d: %s", target, exc)
        else:
            soft = target
    return soft, hard


def reserved_fds(config: ServerConfig) -> int:
    """Descriptors kept for the node's own work (module docstring)."""
    members = max(1, len(config.initial_cluster))
    return _BASE + _PER_MEMBER * members + _PEER_HANDSHAKES + FORWARD_CONNECTIONS + MAX_REFUSING


def connection_budget(config: ServerConfig, soft_limit: int) -> int:
    """The ``max_connections`` to run with under ``soft_limit`` open files.

    A value given (``config.max_connections``) must fit; the default
    (:data:`~raftkv.server.http.connections.MAX_CONNECTIONS`) is lowered to fit.

    Raises:
        ConfigError: the value given does not fit, or the limit leaves fewer
            than :data:`MIN_CONNECTIONS`.
    """
    reserved = reserved_fds(config)
    if soft_limit == resource.RLIM_INFINITY:
        return config.max_connections or MAX_CONNECTIONS
    available = soft_limit - reserved
    how = (
        f"the open file limit is {soft_limit} and {reserved} are reserved for the WAL, "
        f"snapshots, peers and forwarded requests, which leaves {max(0, available)} for "
        "HTTP connections"
    )
    fix = "raise the limit (ulimit -n; LimitNOFILE= in systemd)"
    if config.max_connections is not None:
        if config.max_connections > available:
            raise ConfigError(
                f"--max-connections {config.max_connections} does not fit: {how}; "
                f"{fix} or lower --max-connections"
            )
        return config.max_connections
    if available < MIN_CONNECTIONS:
        raise ConfigError(f"too few file descriptors: {how}; {fix}")
    if available < MAX_CONNECTIONS:
        logger.warning("--max-connections lowered to %d: %s", available, how)
        return available
    return MAX_CONNECTIONS


def apply_fd_budget(config: ServerConfig) -> ServerConfig:
    """Raise the open file limit and return ``config`` with its ``max_connections`` set.

    Raises:
        ConfigError: as :func:`connection_budget`.
    """
    soft, hard = raise_nofile_limit()
    max_connections = connection_budget(config, soft)
    logger.info(
        "file descriptors",
        extra={
            "fields": {
                "limit": soft,
                "hard_limit": hard,
                "reserved": reserved_fds(config),
                "max_connections": max_connections,
            }
        },
    )
    return dataclasses.replace(config, max_connections=max_connections)
