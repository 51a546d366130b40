"""The limits every layer enforces alike: node ids, host names, membership size.

Rule 1: one table. The peer codec (:mod:`raftkv.transport.codec`), the
configuration (``--id``, ``--initial-cluster``), the HTTP API (``POST
/v1/members``, ``/v1/leader/transfer``) and the address book on disk all check
ids and addresses with the functions below, so a value one layer accepts is
never refused by another. (A learner id the API took and the codec could not
encode left a follower that could never receive a snapshot.)

Rule 2: this module imports nothing of raftkv; any layer may import it.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final

__all__ = [
    "HostPort",
    "HOST_RULE",
    "MAX_HOST_CHARS",
    "MAX_MEMBERS",
    "MAX_NODE_ID_CHARS",
    "NODE_ID_RULE",
    "format_host_port",
    "is_host",
    "is_node_id",
    "parse_host_port",
]

HostPort = tuple[str, int]

MAX_NODE_ID_CHARS: Final = 63
"""Longest node id. Ids appear in URLs (``/v1/members/{id}``), logs, metric
labels, file names and every ConfState: short and URL-safe."""

NODE_ID_RULE: Final = (
    f"1-{MAX_NODE_ID_CHARS} characters of letters, digits, '.', '_' and '-', "
    "starting with a letter or digit"
)
"""The node id grammar in words, for error messages."""

_NODE_ID: Final = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_NODE_ID_CHARS - 1}}}")

MAX_HOST_CHARS: Final = 253
"""Longest host name (DNS's limit)."""

HOST_RULE: Final = (
    "a DNS name (labels of letters, digits, '-' and '_', joined by dots; "
    f"at most {MAX_HOST_CHARS} characters), an IPv4 address, or an IPv6 address in brackets"
)
"""The host grammar in words, for error messages."""

_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOST_NAME: Final = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")

MAX_MEMBERS: Final = 1024
"""Most ids in one list of a membership (voters, learners): the codec's bound
on a ConfState, so the API refuses to grow a membership past it."""


def is_node_id(value: object) -> bool:
    """Whether ``value`` is a valid node id (:data:`NODE_ID_RULE`)."""
    return type(value) is str and _NODE_ID.fullmatch(value) is not None


def is_host(host: object) -> bool:
    """Whether ``host`` (without brackets) is a valid host (:data:`HOST_RULE`).

    Nothing that could change the meaning of a URL built from it passes:
    no ``/``, ``@``, ``?``, ``#``, ``%``, spaces or control characters.
    """
    if type(host) is not str or not host or len(host) > MAX_HOST_CHARS:
        return False
    if ":" in host:
        if "%" in host:  # a scoped address (fe80::1%eth0) breaks URLs
            return False
        try:
            return ipaddress.ip_address(host).version == 6
        except ValueError:
            return False
    return _HOST_NAME.fullmatch(host) is not None


def format_host_port(addr: HostPort) -> str:
    """``HOST:PORT``, or ``[HOST]:PORT`` for an IPv6 address."""
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_host_port(text: str, *, what: str = "address") -> HostPort:
    """Parse ``HOST:PORT`` (or ``[v6]:PORT``); the host must be :func:`is_host`.

    Raises:
        ValueError: not of that form, a bad host, or the port is out of range;
            the message starts with ``what``.
    """
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"{what}: expected [HOST]:PORT, got {text!r}")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError(f"{what}: expected HOST:PORT, got {text!r}")
    if not host:
        raise ValueError(f"{what}: missing host in {text!r}")
    if not is_host(host):
        raise ValueError(f"{what}: bad host {host[:80]!r}: must be {HOST_RULE}")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"{what}: port {port_text!r} is not a number in {text!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{what}: port {port} out of range in {text!r}")
    return host, port
