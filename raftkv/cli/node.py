"""``raftkv serve``: one node. Its flags (each also ``$RAFTKV_<FLAG>``) are
assembled into a :class:`raftkv.server.config.ServerConfig`, checked, and the
node runs until SIGTERM/SIGINT.

Rule: a bad flag or a start-up error exits 1 with one line; a node that fails
while running exits :data:`EXIT_NODE_FAILED` at once, for a supervisor to
restart it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import click

from raftkv.cli._common import _fail

EXIT_NODE_FAILED = 70
"""``raftkv serve``'s exit code when its node failed (EX_SOFTWARE): restart it."""


@click.command()
@click.option(
    "--id",
    "node_id",
    default=None,
    envvar="RAFTKV_ID",
    help="This node's member id (required). With --peers-from-statefulset: the pod name "
    "NAME-ORDINAL, which is the member id unless the data dir records another one, or the "
    "pod joins with an empty data dir (then it adopts the id registered at its address).",
)
@click.option(
    "--data-dir",
    required=True,
    envvar="RAFTKV_DATA_DIR",
    type=click.Path(file_okay=False),
    help="Where the WAL and snapshots live.",
)
@click.option("--raft-addr", required=True, envvar="RAFTKV_RAFT_ADDR", help="HOST:PORT for peers.")
@click.option("--api-addr", required=True, envvar="RAFTKV_API_ADDR", help="HOST:PORT for HTTP.")
@click.option(
    "--grpc-addr",
    default=None,
    envvar="RAFTKV_GRPC_ADDR",
    help="HOST:PORT for the etcd v3 gRPC API (etcdctl, etcd client libraries; docs/etcd.md). "
    "Same TLS and client tokens as the HTTP API. Default: not served (the JSON gateway "
    "under /v3/ on --api-addr is served either way).",
)
@click.option(
    "--initial-cluster",
    default=None,
    envvar="RAFTKV_INITIAL_CLUSTER",
    help="n1=RAFTHOST:PORT/APIHOST:PORT,n2=... With 'new': every founding member, this one "
    "included. With 'existing': the current members plus this one (their addresses). "
    "Read only when the data dir is empty. Required unless --peers-from-statefulset.",
)
@click.option(
    "--initial-cluster-state",
    type=click.Choice(["new", "existing"]),
    default=None,
    envvar="RAFTKV_INITIAL_CLUSTER_STATE",
    help="'new' (default): found a cluster from --initial-cluster. 'existing': join a running "
    "cluster after `raftkv members add` (learns the membership from the leader). "
    "Ignored when the data dir already holds state: the node restarts from it. "
    "With --peers-from-statefulset the default is derived from the ordinal.",
)
@click.option(
    "--peers-from-statefulset",
    is_flag=True,
    envvar="RAFTKV_PEERS_FROM_STATEFULSET",
    help="Derive --initial-cluster (and --initial-cluster-state) from the pod name --id "
    "NAME-ORDINAL: pods NAME-0..NAME-(SIZE-1) found the cluster, higher ordinals join. "
    "Peers listen on this node's --raft-addr/--api-addr ports at --peer-host. A pod that "
    "joins with an empty data dir runs as the member id the cluster registered at its Raft "
    "address (`raftkv members add ID --raft-addr ...`), waiting, not ready, until there is one.",
)
@click.option(
    "--peer-host",
    default="{pod}",
    show_default=True,
    envvar="RAFTKV_PEER_HOST",
    help="With --peers-from-statefulset: pod i's host name; {pod} is NAME-i, {ordinal} is i "
    "(e.g. {pod}.raftkv-peers.default.svc.cluster.local).",
)
@click.option(
    "--initial-cluster-size",
    type=click.IntRange(1),
    default=3,
    show_default=True,
    envvar="RAFTKV_INITIAL_CLUSTER_SIZE",
    help="With --peers-from-statefulset: how many pods (ordinals 0..SIZE-1) found the cluster. "
    "Keep it at the founding size when scaling.",
)
@click.option(
    "--heartbeat-interval-ms",
    type=click.IntRange(1),
    default=100,
    show_default=True,
    envvar="RAFTKV_HEARTBEAT_INTERVAL_MS",
    help="One tick; the leader heartbeats every tick.",
)
@click.option(
    "--election-timeout-ms",
    type=click.IntRange(2),
    default=1000,
    show_default=True,
    envvar="RAFTKV_ELECTION_TIMEOUT_MS",
    help="Base election timeout (randomized up to twice this).",
)
@click.option(
    "--no-fsync",
    is_flag=True,
    envvar="RAFTKV_NO_FSYNC",
    help="UNSAFE, for tests/benchmarks only: do not fsync the WAL (a crash can lose "
    "acknowledged writes).",
)
@click.option(
    "--snapshot-entries",
    type=click.IntRange(1),
    default=100_000,
    show_default=True,
    envvar="RAFTKV_SNAPSHOT_ENTRIES",
    help="Snapshot the state machine every this many applied entries.",
)
@click.option(
    "--max-body-bytes",
    type=click.IntRange(1),
    default=1 << 20,
    show_default=True,
    envvar="RAFTKV_MAX_BODY_BYTES",
    help="Largest HTTP request body (413 above).",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    envvar="RAFTKV_LOG_FORMAT",
)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default="INFO",
    show_default=True,
    envvar="RAFTKV_LOG_LEVEL",
)
@click.option(
    "--cluster-secret",
    default=None,
    envvar="RAFTKV_CLUSTER_SECRET",
    help="Shared secret authenticating peer connections (prefer --cluster-secret-file).",
)
@click.option(
    "--cluster-secret-file",
    default=None,
    envvar="RAFTKV_CLUSTER_SECRET_FILE",
    type=click.Path(dir_okay=False),
    help="File holding the cluster secret (at least 16 bytes; `openssl rand -hex 32`). "
    "Peers prove it with HMAC-SHA256 over fresh nonces before any Raft message is accepted. "
    "Default: no peer authentication (trusted networks only; docs/security.md).",
)
@click.option(
    "--tls-cert",
    default=None,
    envvar="RAFTKV_TLS_CERT",
    type=click.Path(dir_okay=False),
    help="This node's certificate (PEM). With --tls-key and --tls-ca: mutual TLS between "
    "peers, HTTPS on the API. Its subjectAltName must name the hosts of its addresses.",
)
@click.option(
    "--tls-key",
    default=None,
    envvar="RAFTKV_TLS_KEY",
    type=click.Path(dir_okay=False),
    help="The private key of --tls-cert (PEM).",
)
@click.option(
    "--tls-ca",
    default=None,
    envvar="RAFTKV_TLS_CA",
    type=click.Path(dir_okay=False),
    help="CA certificate(s) (PEM) that sign the members' (and clients') certificates.",
)
@click.option(
    "--tls-api-client-auth",
    is_flag=True,
    envvar="RAFTKV_TLS_API_CLIENT_AUTH",
    help="Also require a client certificate signed by --tls-ca on the HTTP API.",
)
@click.option(
    "--client-token-file",
    default=None,
    envvar="RAFTKV_CLIENT_TOKEN_FILE",
    type=click.Path(dir_okay=False),
    help="Require bearer tokens on the HTTP API (but health probes): lines 'ro|rw TOKEN "
    "[NAME]'; ro tokens may only read. 401 without a known token, 403 for ro on a write.",
)
@click.option(
    "--max-key-bytes",
    type=click.IntRange(1, 1024),
    default=1024,
    show_default=True,
    envvar="RAFTKV_MAX_KEY_BYTES",
    help="Longest key, in bytes of UTF-8 (400 above).",
)
@click.option(
    "--max-value-bytes",
    type=click.IntRange(1),
    default=1 << 20,
    show_default=True,
    envvar="RAFTKV_MAX_VALUE_BYTES",
    help="Largest value, as JSON bytes (413 above).",
)
@click.option(
    "--max-multi-put-pairs",
    type=click.IntRange(1),
    default=1000,
    show_default=True,
    envvar="RAFTKV_MAX_MULTI_PUT_PAIRS",
    help="Most pairs in one multi-put (413 above).",
)
@click.option(
    "--max-concurrent-requests",
    type=click.IntRange(1),
    default=1024,
    show_default=True,
    envvar="RAFTKV_MAX_CONCURRENT_REQUESTS",
    help="HTTP requests in flight on this node (503 above). Each connection is served "
    "one request at a time.",
)
@click.option(
    "--max-connections",
    type=click.IntRange(1),
    default=None,
    envvar="RAFTKV_MAX_CONNECTIONS",
    help="HTTP connections open at once; one more is answered 503 and closed. "
    "[default: 4096, lowered to what the open file limit leaves; a value given must fit]",
)
@click.option(
    "--max-peer-frame-bytes",
    type=click.IntRange(1 << 21, 2**32 - 1),
    default=64 << 20,
    show_default=True,
    envvar="RAFTKV_MAX_PEER_FRAME_BYTES",
    help="Largest frame accepted from a peer, checked before it is read (the connection is "
    "closed above). Must be the same on every member.",
)
@click.option(
    "--quota-bytes",
    type=click.IntRange(1),
    default=2 * 1024**3,
    show_default=True,
    envvar="RAFTKV_QUOTA_BYTES",
    help="Space quota of the KV store, on its logical size (every kept version of every key: "
    "key + value + 192 bytes). Past it the leader raises the NOSPACE alarm: writes that add "
    "data are refused (HTTP 507) until deletes and a compaction bring the size back under it "
    "(docs/operations.md). Give every member the same value.",
)
@click.option(
    "--auto-compaction-retention",
    type=click.IntRange(0),
    default=10_000,
    show_default=True,
    envvar="RAFTKV_AUTO_COMPACTION_RETENTION",
    help="Revisions of history to keep: the leader compacts everything older once the store is "
    "a tenth past it (etcd's revision mode). Reads at older revisions then answer 410. "
    "0 keeps all history until `raftkv compact`.",
)
@click.option(
    "--watch-progress-interval-s",
    type=click.FloatRange(0.01),
    default=600.0,
    show_default=True,
    envvar="RAFTKV_WATCH_PROGRESS_INTERVAL_S",
    help="How often a watch that asked for progress notifications (progress_notify=true) "
    "gets one: the revision it has every event up to (etcd: 10 minutes).",
)
@click.option(
    "--watch-buffer-bytes",
    type=click.IntRange(1024),
    default=4 << 20,
    show_default=True,
    envvar="RAFTKV_WATCH_BUFFER_BYTES",
    help="Events one watcher may have waiting for a client that does not read them; past "
    "this the watch is cancelled ('slow watcher') and the client resumes from its last revision.",
)
@click.option(
    "--max-watchers",
    type=click.IntRange(1),
    default=10_000,
    show_default=True,
    envvar="RAFTKV_MAX_WATCHERS",
    help="Watchers this node serves, GET /v1/watch and etcd API watchers alike; one more "
    "is refused (/v1: 429; etcd: 'etcdserver: too many requests').",
)
@click.option(
    "--max-watchers-per-stream",
    type=click.IntRange(1),
    default=1_000,
    show_default=True,
    envvar="RAFTKV_MAX_WATCHERS_PER_STREAM",
    help="Watchers one etcd Watch stream (gRPC or /v3/watch) may hold.",
)
@click.option(
    "--no-leader-hints",
    is_flag=True,
    envvar="RAFTKV_NO_LEADER_HINTS",
    help="Wait a whole election timeout after the leader dies, even when its address "
    "refuses connections (by default a follower then campaigns within a tick or two).",
)
def serve(
    node_id: str | None,
    data_dir: str,
    raft_addr: str,
    api_addr: str,
    grpc_addr: str | None,
    initial_cluster: str | None,
    initial_cluster_state: str | None,
    peers_from_statefulset: bool,
    peer_host: str,
    initial_cluster_size: int,
    heartbeat_interval_ms: int,
    election_timeout_ms: int,
    no_fsync: bool,
    snapshot_entries: int,
    max_body_bytes: int,
    log_format: str,
    log_level: str,
    cluster_secret: str | None,
    cluster_secret_file: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    tls_ca: str | None,
    tls_api_client_auth: bool,
    client_token_file: str | None,
    max_key_bytes: int,
    max_value_bytes: int,
    max_multi_put_pairs: int,
    max_concurrent_requests: int,
    max_connections: int | None,
    max_peer_frame_bytes: int,
    quota_bytes: int,
    auto_compaction_retention: int,
    watch_progress_interval_s: float,
    watch_buffer_bytes: int,
    max_watchers: int,
    max_watchers_per_stream: int,
    no_leader_hints: bool,
) -> None:
    """Run one raftkv node (Raft peer transport, HTTP API; etcd v3 gRPC with
    --grpc-addr) until SIGTERM/SIGINT.

    Every flag can also come from an environment variable RAFTKV_<FLAG>,
    e.g. RAFTKV_ID=n1, RAFTKV_INITIAL_CLUSTER=...

    A data dir that already holds state restarts from it; --initial-cluster and
    --initial-cluster-state matter only on the very first start.

    If the node fails (its WAL or snapshot store cannot write, or its drive
    loop breaks), it logs why and exits with code 70 at once, for a supervisor
    to restart it; a bad flag or a start-up error exits with code 1.

    \b
    Example (one of three founding members):
      raftkv serve --id n1 --data-dir data/n1 \\
        --raft-addr 127.0.0.1:7001 --api-addr 127.0.0.1:8001 \\
        --initial-cluster n1=127.0.0.1:7001/127.0.0.1:8001,n2=127.0.0.1:7002/...,n3=...
    \b
    In a Kubernetes StatefulSet (deploy/k8s), every pod runs the same command:
      RAFTKV_ID=raftkv-1 RAFTKV_PEERS_FROM_STATEFULSET=1 RAFTKV_INITIAL_CLUSTER_SIZE=3 \\
      RAFTKV_PEER_HOST={pod}.raftkv-peers.default.svc.cluster.local \\
      raftkv serve --data-dir /var/lib/raftkv --raft-addr 0.0.0.0:7001 --api-addr 0.0.0.0:8001
    The data dir records the member id; a pod that joins with an empty one asks the
    members which id is registered at its Raft address (docs/deploy.md).
    \b
    Adding n4 to a running cluster:
      raftkv members add n4 --raft-addr 127.0.0.1:7004 --api-addr 127.0.0.1:8004
      raftkv serve --id n4 --data-dir data/n4 --initial-cluster-state existing \\
        --raft-addr 127.0.0.1:7004 --api-addr 127.0.0.1:8004 \\
        --initial-cluster n1=...,n2=...,n3=...,n4=127.0.0.1:7004/127.0.0.1:8004
    """
    import asyncio
    import signal

    from raftkv.core.errors import RaftKVError
    from raftkv.server.config import ServerConfig
    from raftkv.server.errors import ConfigError
    from raftkv.server.logging import setup_logging
    from raftkv.server.security import read_request_token, secret_file_is_exposed

    try:
        config = ServerConfig.from_flags(
            node_id=node_id,
            data_dir=data_dir,
            raft_addr=raft_addr,
            api_addr=api_addr,
            grpc_addr=grpc_addr,
            initial_cluster=initial_cluster,
            initial_cluster_state=initial_cluster_state,
            peers_from_statefulset=peers_from_statefulset,
            peer_host=peer_host,
            initial_cluster_size=initial_cluster_size,
            no_fsync=no_fsync,
            cluster_secret=cluster_secret,
            cluster_secret_file=cluster_secret_file,
            tls_cert=tls_cert,
            tls_key=tls_key,
            tls_ca=tls_ca,
            client_token_file=client_token_file,
            no_leader_hints=no_leader_hints,
            log_level=log_level,
            heartbeat_interval_ms=heartbeat_interval_ms,
            election_timeout_ms=election_timeout_ms,
            snapshot_entries=snapshot_entries,
            max_body_bytes=max_body_bytes,
            log_format=log_format,
            tls_api_client_auth=tls_api_client_auth,
            max_key_bytes=max_key_bytes,
            max_value_bytes=max_value_bytes,
            max_multi_put_pairs=max_multi_put_pairs,
            max_concurrent_requests=max_concurrent_requests,
            max_connections=max_connections,
            max_peer_frame_bytes=max_peer_frame_bytes,
            quota_bytes=quota_bytes,
            auto_compaction_retention=auto_compaction_retention,
            watch_progress_interval_s=watch_progress_interval_s,
            watch_buffer_bytes=watch_buffer_bytes,
            max_watchers=max_watchers,
            max_watchers_per_stream=max_watchers_per_stream,
        )
        # A pod that asks its peers which member id to run as needs a token too.
        own_token = (
            read_request_token(client_token_file)
            if peers_from_statefulset and client_token_file
            else None
        )
    except ConfigError as exc:
        _fail(exc.message)
    setup_logging(config.node_id, log_format, log_level)
    _warn_exposed(config, cluster_secret_file, client_token_file, secret_file_is_exposed)
    if no_fsync:
        logging.getLogger("raftkv.server").warning(
            "--no-fsync: UNSAFE, a crash can lose acknowledged writes"
        )

    async def run() -> None:
        from raftkv.server.http.server import serve as serve_node
        from raftkv.server.identity import resolve_pod_identity

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        cfg = config
        if peers_from_statefulset:
            # The pod name is the first member id of a pod only (identity.py).
            resolved = await resolve_pod_identity(
                config, initial_cluster_size=initial_cluster_size, token=own_token, stop=stop
            )
            if resolved is None:
                return  # stopped while waiting for a member id
            cfg = resolved
            if cfg.node_id != config.node_id:
                setup_logging(cfg.node_id, log_format, log_level)
        await serve_node(cfg, stop)

    from raftkv.server.errors import NodeFailed
    from raftkv.server.http.server import run_event_loop

    try:
        run_event_loop(run())
    except NodeFailed as exc:
        # Crash-stop: the cause and its traceback are logged already. Exit now,
        # without waiting for threads (a WAL sync may hang on a broken disk).
        click.echo(f"error: {node_id}: {exc}", err=True)
        logging.shutdown()
        os._exit(EXIT_NODE_FAILED)
    except OSError as exc:
        _fail(f"{node_id}: {exc.strerror or exc}" + (f" ({exc.filename})" if exc.filename else ""))
    except RaftKVError as exc:
        _fail(f"{node_id}: {exc}")


def _warn_exposed(
    config: Any,
    secret_file: str | None,
    token_file: str | None,
    exposed: Callable[[str], bool],
) -> None:
    """Warn about open ports without protection, and about readable secret files."""
    log = logging.getLogger("raftkv.server")
    loopback = ("127.", "localhost", "::1")
    if not config.raft_addr[0].startswith(loopback) and config.cluster_secret is None:
        log.warning(
            "peer port %s:%d accepts any peer: no --cluster-secret-file (docs/security.md)",
            *config.raft_addr,
        )
    if not config.api_addr[0].startswith(loopback) and config.client_tokens is None:
        log.warning(
            "HTTP API %s:%d serves anyone: no --client-token-file (docs/security.md)",
            *config.api_addr,
        )
    grpc_addr = getattr(config, "grpc_addr", None)
    if (
        grpc_addr is not None
        and not grpc_addr[0].startswith(loopback)
        and config.client_tokens is None
    ):
        log.warning(
            "etcd gRPC API %s:%d serves anyone: no --client-token-file (docs/security.md)",
            *grpc_addr,
        )
    for path in (secret_file, token_file):
        if path and exposed(path):
            log.warning("%s is readable by group or others; chmod 600 it", path)
