"""Which member id a node runs as: the id its data dir records, or -- for a StatefulSet
pod -- its pod name, or the id the cluster registered at its address.

Rule 1: a data dir belongs to one member id for its whole life. The node
records that id in the data dir (:data:`ID_FILE`) when it first starts, and
never starts on a data dir recorded for another id (:func:`claim_data_dir`).

Rule 2: a removed id is never added again (a node whose disk was wiped has
forgotten the votes it cast under its old id, and could vote twice in a term),
so a StatefulSet pod's name is only the id of its *first* member. With
``--peers-from-statefulset``, :func:`resolve_pod_identity` decides:

* the data dir records an id: that id (it wins over the pod name);
* the data dir holds state but records none (written by an older version): the
  pod name, as then;
* the data dir is empty and the pod founds the cluster (``new``): the pod name;
* the data dir is empty and the pod joins (``existing``): the id the cluster
  registered at this pod's own Raft address (``raftkv members add ID
  --raft-addr ...``), asked over the peers' HTTP APIs (``GET /v1/members``,
  with this node's TLS client certificate and client token). Until there is
  one, the pod waits, not ready, and asks again. It never adopts an id that
  held data before -- a founding pod's own name, or a member the leader has
  had entries acknowledged by -- since that is exactly the wiped node coming
  back under its old id; the operator removes that one first.

The adopted id is recorded at once (Rule 1), so a restart keeps it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from raftkv.core.types import NodeId
from raftkv.limits import HostPort, format_host_port
from raftkv.replica.membership import InvalidMember, Member
from raftkv.server.config import ServerConfig, parse_pod_ordinal
from raftkv.server.errors import ConfigError
from raftkv.server.security import api_ssl_contexts
from raftkv.storage.disk_storage import SNAP_DIR_NAME, WAL_DIR_NAME, DiskStorage
from raftkv.storage.files import atomic_write

__all__ = [
    "ID_FILE",
    "Candidate",
    "claim_data_dir",
    "data_dir_has_state",
    "find_registered",
    "read_node_id",
    "resolve_pod_identity",
]

logger = logging.getLogger(__name__)

ID_FILE = "node_id"
"""The file in a data dir that names the member id the data belongs to."""

_RETRY_S = 1.0
_LOG_EVERY_S = 10.0
_REQUEST_TIMEOUT_S = 2.0


# ----------------------------------------------------------------------------- Rule 1


def read_node_id(data_dir: Path) -> NodeId | None:
    """The id recorded in ``data_dir``, or None.

    Raises:
        ConfigError: the record is unreadable or empty.
    """
    path = data_dir / ID_FILE
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: unreadable member id record: {exc}") from None
    if not text:
        raise ConfigError(f"{path}: empty member id record")
    return NodeId(text)


def _write_node_id(data_dir: Path, node_id: NodeId, *, fsync: bool) -> None:
    atomic_write(data_dir / ID_FILE, node_id + "\n", fsync=fsync)


def claim_data_dir(data_dir: Path, node_id: NodeId, *, fsync: bool = True) -> None:
    """Record ``node_id`` in ``data_dir`` (created if need be), or check the record.

    Raises:
        ConfigError: the data dir belongs to another member id.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    recorded = read_node_id(data_dir)
    if recorded is None:
        _write_node_id(data_dir, node_id, fsync=fsync)
    elif recorded != node_id:
        raise ConfigError(
            f"data dir {data_dir} belongs to member {recorded}, not {node_id} "
            f"(its {ID_FILE} file): start it as {recorded}, or give {node_id} its own data dir"
        )


def data_dir_has_state(data_dir: Path) -> bool:
    """Whether ``data_dir`` holds Raft state (a hard state, entries or a snapshot)."""
    if not (data_dir / WAL_DIR_NAME).exists() and not (data_dir / SNAP_DIR_NAME).exists():
        return False
    storage = DiskStorage.open(data_dir)
    try:
        hard_state, _ = storage.initial_state()
        return not (
            hard_state.is_empty() and storage.last_index() == 0 and storage.snapshot().is_empty()
        )
    finally:
        storage.close()


# ----------------------------------------------------------------------------- Rule 2


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Candidate:
    """A member registered at this pod's Raft address, as one member's answer shows it.

    Attributes:
        node_id: the registered id.
        members: that answer's address book (``GET /v1/members``).
        leader: the leader that answer names.
    """

    node_id: NodeId
    members: dict[NodeId, Member]
    leader: NodeId


def _same_addr(a: HostPort, b: HostPort) -> bool:
    return a[0].lower().rstrip(".") == b[0].lower().rstrip(".") and a[1] == b[1]


def find_registered(answer: object, raft_addr: HostPort) -> list[Candidate]:
    """The voters and learners registered at ``raft_addr`` in a ``GET /v1/members`` answer.

    An answer that names no leader (or is malformed) gives none: only a member
    that follows a leader speaks for the cluster.
    """
    if not isinstance(answer, dict) or not isinstance(answer.get("leader"), str):
        return []
    book: dict[NodeId, Member] = {}
    for node_id, entry in (answer.get("members") or {}).items():
        with contextlib.suppress(InvalidMember):
            book[NodeId(node_id)] = Member.from_json(entry)
    members = {*answer.get("voters", ()), *answer.get("learners", ())}
    removed = set(answer.get("removed", ()))
    return [
        Candidate(node_id=n, members=book, leader=NodeId(answer["leader"]))
        for n in sorted(book)
        if n in members and n not in removed and _same_addr(book[n].raft, raft_addr)
    ]


class _Asker:
    """GETs on the members' APIs, with this node's TLS client certificate and token."""

    def __init__(self, config: ServerConfig, token: str | None) -> None:
        _, self._ssl = api_ssl_contexts(config)
        self._scheme = "https" if config.tls else "http"
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> _Asker:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=_REQUEST_TIMEOUT_S)
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def get(self, member: Member, path: str) -> tuple[int, Any]:
        """``(status, JSON)``; ``(0, error text)`` when there was no answer."""
        assert self._session is not None
        url = member.api_url(scheme=self._scheme) + path
        try:
            async with self._session.get(url, headers=self._headers, ssl=self._ssl or True) as resp:
                try:
                    return resp.status, await resp.json(content_type=None)
                except ValueError:
                    return resp.status, None
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return 0, f"{type(exc).__name__}: {exc}"


async def _match(asker: _Asker, candidate: Candidate) -> int | None:
    """How much of its log the leader knows ``candidate`` holds.

    None when the leader did not answer, or does not count ``candidate`` as a
    member (an answer from a member that had not applied its removal yet).
    """
    leader = candidate.members.get(candidate.leader)
    if leader is None:
        return None
    code, body = await asker.get(leader, "/v1/status")
    if code != 200 or not isinstance(body, dict) or body.get("role") != "leader":
        return None
    entry = (body.get("progress") or {}).get(candidate.node_id)
    return int(entry.get("match", 0)) if isinstance(entry, dict) else None


async def _look_up(
    asker: _Asker, config: ServerConfig, pod_name: NodeId, founding: bool
) -> tuple[Candidate | None, str]:
    """One round: ask every peer; ``(the id to adopt, or None, and why not)``."""
    own = config.initial_cluster[pod_name].raft
    peers = [(n, m) for n, m in sorted(config.initial_cluster.items()) if n != pod_name]
    answers = await asyncio.gather(*(asker.get(m, "/v1/members") for _, m in peers))
    found: dict[NodeId, Candidate] = {}
    book: dict[NodeId, Member] = {}
    removed: set[str] = set()
    errors: list[str] = []
    for (peer, _), (code, body) in zip(peers, answers, strict=True):
        if code == 200:
            for c in find_registered(body, own):
                found.setdefault(c.node_id, c)
                for node_id, member in c.members.items():
                    book.setdefault(node_id, member)
            if isinstance(body, dict):
                removed.update(body.get("removed") or ())
        else:
            detail = body.get("error") if isinstance(body, dict) else body
            errors.append(f"{peer}: {code or 'no answer'} {detail or ''}".strip())
    # Any member's word that an id was removed is final (removals are never undone).
    found = {n: dataclasses.replace(c, members=book) for n, c in found.items() if n not in removed}
    if not found:
        asked = f"asked {', '.join(n for n, _ in peers)}" + (
            f"; {'; '.join(errors)}" if errors else ""
        )
        return None, f"no member is registered at {format_host_port(own)} yet ({asked})"
    usable: list[Candidate] = []
    refused: list[str] = []
    for c in found.values():
        if founding and c.node_id == pod_name:
            refused.append(f"{c.node_id} founded the cluster on this pod, so it had data")
            continue
        match = await _match(asker, c)
        if match is None:
            refused.append(f"{c.node_id}: not confirmed by the leader {c.leader} (asking again)")
        elif match > 0:
            refused.append(f"{c.node_id} has acknowledged entries up to {match}, so it had data")
        else:
            usable.append(c)
    why = "; ".join(refused)
    if len(usable) == 1:
        if refused:  # a stale member at the same address (its node is gone): not this one
            logger.warning("also registered at %s, not adopted: %s", format_host_port(own), why)
        return usable[0], ""
    if usable:
        names = ", ".join(c.node_id for c in usable)
        return None, (
            f"several new members are registered at {format_host_port(own)} ({names}): "
            "remove all but one"
        )
    return None, (
        f"not adopting the member registered at {format_host_port(own)}: {why}. A pod whose "
        "data is lost never comes back under its old id (it may have forgotten its votes): "
        "remove that member and add one under a new id at this address"
    )


async def _waiting_site(config: ServerConfig, reason: list[str]) -> web.AppRunner:
    """Health probes while the pod has no id: live, not ready; every other route 503."""

    async def live(request: web.Request) -> web.Response:
        return web.json_response({"status": "live"})

    async def waiting(request: web.Request) -> web.Response:
        return web.json_response({"error": f"not ready: {reason[0]}", "leader": None}, status=503)

    app = web.Application()
    app.router.add_get("/v1/health/live", live, allow_head=False)
    app.router.add_route("*", "/{tail:.*}", waiting)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    server_ssl, _ = api_ssl_contexts(config)
    host, port = config.api_addr
    await web.TCPSite(runner, host, port, reuse_address=True, ssl_context=server_ssl).start()
    return runner


async def _discover(
    config: ServerConfig, pod_name: NodeId, founding: bool, token: str | None, stop: asyncio.Event
) -> Candidate | None:
    own = format_host_port(config.initial_cluster[pod_name].raft)
    reason = [f"waiting for a member to be registered at {own}"]
    runner = await _waiting_site(config, reason)
    last_log = float("-inf")
    try:
        async with _Asker(config, token) as asker:
            while not stop.is_set():
                found, why = await _look_up(asker, config, pod_name, founding)
                if found is not None:
                    return found
                reason[0] = why
                if time.monotonic() - last_log >= _LOG_EVERY_S:
                    last_log = time.monotonic()
                    logger.warning(
                        "no member id yet: %s; waiting (raftkv members add ID --raft-addr %s ...)",
                        why,
                        own,
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), _RETRY_S)
        return None
    finally:
        await runner.cleanup()


async def resolve_pod_identity(
    config: ServerConfig,
    *,
    initial_cluster_size: int,
    token: str | None = None,
    stop: asyncio.Event | None = None,
) -> ServerConfig | None:
    """The configuration of StatefulSet pod ``config.node_id`` under its member id (Rule 2).

    Args:
        config: as derived from the pod name (``statefulset_initial_cluster``):
            ``node_id`` is the pod name, ``initial_cluster`` maps pod names to addresses.
        initial_cluster_size: the founding size (ordinals below it founded the cluster).
        token: a client token for the peers' APIs (when they require one).
        stop: set to give up waiting (SIGTERM).

    Returns:
        The configuration to serve with, or None if ``stop`` was set while waiting.

    Raises:
        ConfigError: an unreadable id record.
    """
    pod_name = config.node_id
    data_dir = Path(config.data_dir)
    _, ordinal = parse_pod_ordinal(pod_name)
    recorded = read_node_id(data_dir)
    if recorded is not None:
        if recorded != pod_name:
            logger.info(
                "data dir %s belongs to member %s: running as %s, not as the pod name %s",
                data_dir,
                recorded,
                recorded,
                pod_name,
            )
        book = {n: m for n, m in config.initial_cluster.items() if n != pod_name}
        return _as(config, recorded, book)
    if config.initial_cluster_state == "new" or data_dir_has_state(data_dir):
        return config
    founding = ordinal < initial_cluster_size
    found = await _discover(config, pod_name, founding, token, stop or asyncio.Event())
    if found is None:
        return None
    claim_data_dir(data_dir, found.node_id, fsync=config.fsync)
    logger.info(
        "adopted member id %s: the cluster registered it at this pod's address %s",
        found.node_id,
        format_host_port(config.initial_cluster[pod_name].raft),
    )
    return _as(config, found.node_id, found.members)


def _as(config: ServerConfig, node_id: NodeId, book: dict[NodeId, Member]) -> ServerConfig:
    """``config`` as member ``node_id``, with the address book ``book`` (plus the pod itself)."""
    book = dict(book)
    book.setdefault(node_id, config.initial_cluster[config.node_id])
    cfg = dataclasses.replace(config, node_id=node_id, initial_cluster=book)
    cfg.validate()
    return cfg
