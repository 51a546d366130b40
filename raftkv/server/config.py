"""Static configuration of one real node, and ``--initial-cluster`` parsing.

Rule: parsing is pure and raises :class:`~raftkv.server.errors.ConfigError`
with a one-line message naming the offending part; nothing here opens files
or sockets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from raftkv import limits
from raftkv.core.types import NodeId
from raftkv.limits import NODE_ID_RULE, HostPort, format_host_port, is_node_id
from raftkv.replica.kv import MAX_KEY_BYTES
from raftkv.replica.membership import Member
from raftkv.server.errors import ConfigError
from raftkv.server.security import (
    TokenTable,
    api_ssl_contexts,
    peer_ssl_contexts,
    read_secret_file,
    read_token_file,
)
from raftkv.transport.codec import DEFAULT_MAX_FRAME_SIZE

__all__ = [
    "HostPort",
    "INITIAL_CLUSTER_STATES",
    "DEFAULT_QUOTA_BYTES",
    "Member",
    "ServerConfig",
    "parse_host_port",
    "parse_initial_cluster",
    "format_initial_cluster",
    "parse_pod_ordinal",
    "statefulset_initial_cluster",
]

INITIAL_CLUSTER_STATES = ("new", "existing")
DEFAULT_QUOTA_BYTES = 2 * 1024**3
"""The KV store's default space quota: 2 GiB, etcd's default ``--quota-backend-bytes``."""
DEFAULT_AUTO_COMPACTION_RETENTION = 10_000
"""Revisions of history the leader keeps by compacting the rest (0: off)."""

DEFAULT_WATCH_PROGRESS_INTERVAL_S = 600.0
"""Progress notifications to watchers that asked for them: etcd's default, 10 minutes."""
DEFAULT_WATCH_BUFFER_BYTES = 4 << 20
"""Responses a watcher may have waiting for its reader before it is cancelled."""
DEFAULT_MAX_WATCHERS = 10_000
"""Watchers one node serves (``/v1`` and etcd API watchers alike)."""
DEFAULT_MAX_WATCHERS_PER_STREAM = 1_000
"""Watchers one etcd ``Watch`` stream (gRPC or the gateway's) may hold."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    """Everything ``raftkv serve`` needs.

    Attributes:
        node_id: this node's id (a key of ``initial_cluster``).
        data_dir: where the WAL and snapshots live.
        raft_addr: (host, port) the peer transport listens on.
        api_addr: (host, port) the HTTP API listens on.
        grpc_addr: (host, port) the etcd v3 gRPC API listens on (``None``: not
            served; the JSON gateway on ``api_addr`` is served either way).
        initial_cluster: the founding members (``new``) or the current members
            plus this node (``existing``); read only when the data dir is empty,
            except as a fallback address book.
        initial_cluster_state: ``new`` founds a cluster from ``initial_cluster``
            (the membership becomes log entry 1); ``existing`` joins a running
            cluster that already lists this node (``raftkv members add``).
            Ignored when the data dir holds state: the node restarts from it.
        heartbeat_interval_ms: one core tick; the leader heartbeats every tick.
        election_timeout_ms: the base election timeout (a multiple of the tick).
        fsync: make every Ready durable before acknowledging. ``False`` is UNSAFE.
        snapshot_entries: snapshot the state machine every this many applied entries.
        max_body_bytes: largest HTTP request body accepted (413 above it).
        request_timeout_s: how long a write or linearizable read may wait.
        log_format: ``text`` or ``json`` (JSON lines).
        log_level: a :mod:`logging` level name.
        cluster_secret: optional shared secret for the peer handshake
            (``--cluster-secret-file``, or ``--cluster-secret``).
        tls_cert_file: this node's certificate (PEM); with ``tls_key_file`` and
            ``tls_ca_file`` it turns on mutual TLS between peers and HTTPS on the API.
        tls_key_file: the certificate's private key (PEM).
        tls_ca_file: the CA that signs every member's (and client's) certificate.
        tls_api_client_auth: also require a client certificate on the HTTP API.
        client_tokens: bearer tokens the HTTP API requires (``None``: no client
            authentication).
        max_key_bytes: longest key accepted, in bytes of UTF-8 (at most 1024).
        max_value_bytes: largest JSON value accepted (its encoded size).
        max_multi_put_pairs: most pairs in one multi-put.
        max_concurrent_requests: HTTP requests served at once; 503 above.
        max_connections: HTTP connections open at once; one more is answered
            503 and closed. ``None``: the default (4096), lowered to what the
            file descriptor limit leaves (:mod:`raftkv.server.fdlimit`); a
            value given must fit, or the node does not start.
        http_head_timeout_s: a request's head must arrive within this long of
            its first byte (of the accept, for a connection's first request).
        http_body_timeout_s: a request's body must arrive within this long of
            the end of its head.
        http_idle_timeout_s: a keep-alive connection with no request is closed
            this long after its last answer.
        http_write_timeout_s: a client that does not read its answers is
            disconnected after writing stayed paused this long.
        max_peer_frame_bytes: largest peer frame accepted (checked before reading it).
        quota_bytes: the space quota of the KV store, on its logical size
            (:attr:`~raftkv.replica.kv.KVStateMachine.size_bytes`): past it the
            leader raises the NOSPACE alarm (:mod:`raftkv.server.node.quota`).
            Give every member the same value.
        auto_compaction_retention: revisions of history kept: the leader
            compacts below ``revision - retention`` (0: never on its own).
        leader_hints: a follower whose connection to the leader is refused
            (the leader's process died) campaigns after a tick or two instead
            of a whole election timeout (:meth:`raftkv.core.RawNode.report_unreachable`).
        watch_progress_interval_s: how often watchers that asked for progress
            notifications get one (etcd: 10 minutes).
        watch_buffer_bytes: responses one watcher may have waiting for its
            reader; past it the watcher is cancelled as a slow watcher.
        max_watchers: watchers this node serves, ``/v1`` and etcd API alike;
            one more is refused (``/v1``: 429; etcd: ``too many requests``).
        max_watchers_per_stream: watchers one etcd ``Watch`` stream may hold.
    """

    node_id: NodeId
    data_dir: str
    raft_addr: HostPort
    api_addr: HostPort
    grpc_addr: HostPort | None = None
    initial_cluster: dict[NodeId, Member] = field(default_factory=dict)
    initial_cluster_state: str = "new"
    heartbeat_interval_ms: int = 100
    election_timeout_ms: int = 1000
    fsync: bool = True
    snapshot_entries: int = 100_000
    max_body_bytes: int = 1 << 20
    request_timeout_s: float = 5.0
    log_format: str = "text"
    log_level: str = "INFO"
    cluster_secret: bytes | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_ca_file: str | None = None
    tls_api_client_auth: bool = False
    client_tokens: TokenTable | None = None
    max_key_bytes: int = MAX_KEY_BYTES
    max_value_bytes: int = 1 << 20
    max_multi_put_pairs: int = 1000
    max_concurrent_requests: int = 1024
    max_connections: int | None = None
    http_head_timeout_s: float = 10.0
    http_body_timeout_s: float = 30.0
    http_idle_timeout_s: float = 75.0
    http_write_timeout_s: float = 30.0
    max_peer_frame_bytes: int = DEFAULT_MAX_FRAME_SIZE
    quota_bytes: int = DEFAULT_QUOTA_BYTES
    auto_compaction_retention: int = DEFAULT_AUTO_COMPACTION_RETENTION
    leader_hints: bool = True
    watch_progress_interval_s: float = DEFAULT_WATCH_PROGRESS_INTERVAL_S
    watch_buffer_bytes: int = DEFAULT_WATCH_BUFFER_BYTES
    max_watchers: int = DEFAULT_MAX_WATCHERS
    max_watchers_per_stream: int = DEFAULT_MAX_WATCHERS_PER_STREAM

    @property
    def tls(self) -> bool:
        """Whether peer traffic and the API use TLS."""
        return self.tls_cert_file is not None

    @property
    def election_tick(self) -> int:
        return max(2, self.election_timeout_ms // self.heartbeat_interval_ms)

    @classmethod
    def from_flags(
        cls,
        *,
        node_id: str | None,
        data_dir: str,
        raft_addr: str,
        api_addr: str,
        grpc_addr: str | None = None,
        initial_cluster: str | None = None,
        initial_cluster_state: str | None = None,
        peers_from_statefulset: bool = False,
        peer_host: str = "",
        initial_cluster_size: int = 3,
        no_fsync: bool = False,
        cluster_secret: str | None = None,
        cluster_secret_file: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        tls_ca: str | None = None,
        client_token_file: str | None = None,
        no_leader_hints: bool = False,
        log_level: str = "INFO",
        **settings: Any,
    ) -> ServerConfig:
        """The configuration ``raftkv serve``'s flags describe, checked
        (:meth:`validate`), its secret and token files read and, with TLS, its
        certificates loaded: a mistake is one :class:`ConfigError` line, not a
        traceback at start.

        The arguments are the flags' values as the CLI parsed them, named as the
        flags are (``--no-fsync`` is ``no_fsync``); ``settings`` are the flags
        that are a field of the same name (``snapshot_entries``, ``quota_bytes``, ...).

        Raises:
            ConfigError: a flag is missing, malformed or contradicts another.
        """
        if not node_id:
            raise ConfigError("missing --id (or $RAFTKV_ID)")
        raft = parse_host_port(raft_addr, what="--raft-addr")
        api = parse_host_port(api_addr, what="--api-addr")
        grpc = parse_host_port(grpc_addr, what="--grpc-addr") if grpc_addr else None
        if peers_from_statefulset:
            if initial_cluster:
                raise ConfigError(
                    "give either --initial-cluster or --peers-from-statefulset, not both"
                )
            members, derived_state = statefulset_initial_cluster(
                node_id,
                peer_host=peer_host,
                initial_cluster_size=initial_cluster_size,
                raft_port=raft[1],
                api_port=api[1],
            )
            initial_cluster_state = initial_cluster_state or derived_state
        elif not initial_cluster:
            raise ConfigError("missing --initial-cluster (or $RAFTKV_INITIAL_CLUSTER)")
        else:
            members = parse_initial_cluster(initial_cluster)
        if cluster_secret and cluster_secret_file:
            raise ConfigError("give either --cluster-secret or --cluster-secret-file, not both")
        secret = cluster_secret.encode() if cluster_secret else None
        if cluster_secret_file:
            secret = read_secret_file(cluster_secret_file)
        config = cls(
            node_id=NodeId(node_id),
            data_dir=data_dir,
            raft_addr=raft,
            api_addr=api,
            grpc_addr=grpc,
            initial_cluster=members,
            initial_cluster_state=initial_cluster_state or "new",
            fsync=not no_fsync,
            log_level=log_level.upper(),
            cluster_secret=secret,
            tls_cert_file=tls_cert,
            tls_key_file=tls_key,
            tls_ca_file=tls_ca,
            client_tokens=read_token_file(client_token_file) if client_token_file else None,
            leader_hints=not no_leader_hints,
            **settings,
        )
        config.validate()
        if config.tls:
            peer_ssl_contexts(config)
            api_ssl_contexts(config)
        return config

    def validate(self) -> None:
        """Raise :class:`ConfigError` if the configuration cannot work."""
        if not is_node_id(self.node_id):
            raise ConfigError(f"--id {str(self.node_id)[:80]!r}: must be {NODE_ID_RULE}")
        if self.heartbeat_interval_ms <= 0:
            raise ConfigError("--heartbeat-interval-ms must be positive")
        if self.election_timeout_ms < 2 * self.heartbeat_interval_ms:
            raise ConfigError(
                "--election-timeout-ms must be at least twice --heartbeat-interval-ms "
                f"(got {self.election_timeout_ms} and {self.heartbeat_interval_ms})"
            )
        if self.initial_cluster and self.node_id not in self.initial_cluster:
            raise ConfigError(
                f"--id {self.node_id} is not in --initial-cluster "
                f"({', '.join(sorted(self.initial_cluster))})"
            )
        if self.initial_cluster_state not in INITIAL_CLUSTER_STATES:
            raise ConfigError(
                f"--initial-cluster-state must be new or existing, "
                f"got {self.initial_cluster_state!r}"
            )
        if self.log_format not in ("text", "json"):
            raise ConfigError("--log-format must be text or json")
        if self.snapshot_entries <= 0:
            raise ConfigError("snapshot_entries must be positive")
        if self.max_body_bytes <= 0:
            raise ConfigError("max_body_bytes must be positive")
        if not 1 <= self.max_key_bytes <= MAX_KEY_BYTES:
            raise ConfigError(f"--max-key-bytes must be in 1..{MAX_KEY_BYTES}")
        if min(self.max_value_bytes, self.max_multi_put_pairs, self.max_concurrent_requests) < 1:
            raise ConfigError(
                "--max-value-bytes, --max-multi-put-pairs and --max-concurrent-requests "
                "must be positive"
            )
        if self.quota_bytes < 1:
            raise ConfigError("--quota-bytes must be positive")
        if self.auto_compaction_retention < 0:
            raise ConfigError("--auto-compaction-retention must be 0 (off) or positive")
        if self.max_connections is not None and self.max_connections < 1:
            raise ConfigError("--max-connections must be positive")
        if self.watch_progress_interval_s <= 0 or self.watch_buffer_bytes < 1:
            raise ConfigError(
                "--watch-progress-interval-s and --watch-buffer-bytes must be positive"
            )
        if self.max_watchers < 1 or self.max_watchers_per_stream < 1:
            raise ConfigError("--max-watchers and --max-watchers-per-stream must be positive")
        timeouts = (
            self.http_head_timeout_s,
            self.http_body_timeout_s,
            self.http_idle_timeout_s,
            self.http_write_timeout_s,
        )
        if min(timeouts) <= 0:
            raise ConfigError("the HTTP timeouts must be positive")
        # A peer frame must hold a snapshot chunk (1 MiB) and a full batch.
        if not 1 << 21 <= self.max_peer_frame_bytes < 2**32:
            raise ConfigError("--max-peer-frame-bytes must be in 2 MiB .. 4 GiB - 1")
        tls_files = (self.tls_cert_file, self.tls_key_file, self.tls_ca_file)
        if any(f is not None for f in tls_files) and not all(f is not None for f in tls_files):
            raise ConfigError("TLS needs all three of --tls-cert, --tls-key and --tls-ca")
        if self.tls_api_client_auth and not self.tls:
            raise ConfigError("--tls-api-client-auth needs --tls-cert, --tls-key and --tls-ca")


def parse_host_port(text: str, *, what: str = "address") -> HostPort:
    """Parse ``HOST:PORT`` (or ``[v6]:PORT``) by :func:`raftkv.limits.parse_host_port`.

    Raises:
        ConfigError: not of that form, a bad host, or the port is out of range.
    """
    try:
        return limits.parse_host_port(text, what=what)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def parse_initial_cluster(spec: str) -> dict[NodeId, Member]:
    """Parse ``n1=RAFTHOST:PORT/APIHOST:PORT,n2=...``.

    Raises:
        ConfigError: malformed, empty, or a duplicate id or address.
    """
    members: dict[NodeId, Member] = {}
    seen: set[HostPort] = set()
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        node, eq, addrs = part.partition("=")
        node = node.strip()
        if not eq or not node:
            raise ConfigError(
                f"--initial-cluster: expected ID=RAFTHOST:PORT/APIHOST:PORT, got {part!r}"
            )
        raft_text, slash, api_text = addrs.partition("/")
        if not slash:
            raise ConfigError(
                f"--initial-cluster: {node} needs RAFTHOST:PORT/APIHOST:PORT, got {addrs!r}"
            )
        if not is_node_id(node):
            raise ConfigError(f"--initial-cluster: bad id {node[:80]!r}: must be {NODE_ID_RULE}")
        if node in members:
            raise ConfigError(f"--initial-cluster: duplicate id {node!r}")
        raft = parse_host_port(raft_text, what=f"--initial-cluster {node} raft address")
        api = parse_host_port(api_text, what=f"--initial-cluster {node} api address")
        for addr in (raft, api):
            if addr in seen:
                raise ConfigError(
                    f"--initial-cluster: address {format_host_port(addr)} is used twice"
                )
            seen.add(addr)
        members[NodeId(node)] = Member(raft, api)
    if not members:
        raise ConfigError("--initial-cluster is empty")
    return members


def format_initial_cluster(members: dict[NodeId, Member]) -> str:
    """The inverse of :func:`parse_initial_cluster`."""
    return ",".join(
        f"{n}={format_host_port(m.raft)}/{format_host_port(m.api)}"
        for n, m in sorted(members.items())
    )


# ------------------------------------------------------------------- StatefulSet identities

# A StatefulSet pod is named NAME-ORDINAL (Kubernetes' rule; NAME may contain '-').
_POD_NAME = re.compile(r"(?P<name>[a-z0-9]([a-z0-9.-]*[a-z0-9])?)-(?P<ordinal>0|[1-9][0-9]*)")


def parse_pod_ordinal(pod_name: str) -> tuple[str, int]:
    """Split a StatefulSet pod name ``NAME-ORDINAL`` into ``(NAME, ORDINAL)``.

    Raises:
        ConfigError: the name does not end in ``-<ordinal>``.
    """
    m = _POD_NAME.fullmatch(pod_name)
    if m is None:
        raise ConfigError(
            f"--peers-from-statefulset: --id {pod_name!r} is not a StatefulSet pod name "
            "NAME-ORDINAL (set RAFTKV_ID from the pod's metadata.name)"
        )
    return m.group("name"), int(m.group("ordinal"))


def statefulset_initial_cluster(
    pod_name: str,
    *,
    peer_host: str,
    initial_cluster_size: int,
    raft_port: int,
    api_port: int,
) -> tuple[dict[NodeId, Member], str]:
    """The ``--initial-cluster`` and ``--initial-cluster-state`` of StatefulSet pod ``pod_name``.

    Pods ``NAME-0 .. NAME-(initial_cluster_size - 1)`` found the cluster
    (``new``); they all compute the same founding membership. A pod with a
    higher ordinal was added by scaling up: it joins (``existing``) and must be
    added with ``raftkv members add`` (before or after it starts). Its initial
    cluster is the founders plus every pod up to itself -- only an address
    book, since a joiner learns its voters from the leader. The keys are pod
    names; a joining pod with an empty data dir then runs as the member id
    registered at its address (:func:`raftkv.server.identity.resolve_pod_identity`),
    which is the pod name only for its first member. Every pod listens on the
    same ports; ``peer_host`` names pod ``i`` with ``{pod}`` (``NAME-i``) and
    ``{ordinal}`` (``i``) replaced,
    e.g. ``{pod}.raftkv-peers.default.svc.cluster.local`` (the headless
    Service's per-pod DNS name).

    Raises:
        ConfigError: bad pod name, size or template.
    """
    name, ordinal = parse_pod_ordinal(pod_name)
    if initial_cluster_size < 1:
        raise ConfigError("--initial-cluster-size must be at least 1")
    if "{pod}" not in peer_host and "{ordinal}" not in peer_host:
        raise ConfigError(
            f"--peer-host {peer_host!r} must contain {{pod}} or {{ordinal}} "
            "(e.g. {pod}.raftkv-peers.default.svc.cluster.local)"
        )
    members: dict[NodeId, Member] = {}
    for i in range(max(initial_cluster_size, ordinal + 1)):
        pod = f"{name}-{i}"
        host = peer_host.replace("{pod}", pod).replace("{ordinal}", str(i))
        members[NodeId(pod)] = Member((host, raft_port), (host, api_port))
    state = "new" if ordinal < initial_cluster_size else "existing"
    return members, state
