"""Hostile bytes on the Raft port of real nodes (TcpTransport, cluster secret on).

Every connection below is refused -- closed by the node -- and afterwards the
cluster has the same leader, term and log as before, keeps committing writes,
and has counted and logged (once) what it refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import struct
from pathlib import Path

import pytest

from raftkv.core.messages import AppendEntries, RequestVote
from raftkv.core.types import Entry, NodeId
from raftkv.replica.kv import Put, encode_command
from raftkv.transport.codec import (
    NONCE_LEN,
    PROTOCOL_VERSION,
    Auth,
    Hello,
    encode_batch,
    encode_control,
    encode_frame,
)
from raftkv.transport.tcp import TcpTransport
from tests.security.conftest import SECRET, TcpCluster, run

pytestmark = pytest.mark.cluster


def put_cmd(key: str, value: object) -> bytes:
    return encode_command(Put(key=key, value=value, time_ms=1))  # type: ignore[arg-type]


def evil_append(term: int, sender: str, to: str) -> bytes:
    """A well-formed AppendEntries batch frame that would overwrite the log."""
    entry = Entry(term=term, index=1, data=put_cmd("pwned", True))
    msg = AppendEntries(
        term=term,
        sender=NodeId(sender),
        to=NodeId(to),
        prev_log_index=0,
        prev_log_term=0,
        entries=(entry,),
        commit=1,
    )
    return encode_frame(encode_batch([msg]))


def hello(sender: str, to: str) -> bytes:
    frame = Hello(
        version=PROTOCOL_VERSION,
        cluster_id="raftkv",
        node_id=NodeId(sender),
        to=NodeId(to),
        nonce=secrets.token_bytes(NONCE_LEN),
    )
    return encode_frame(encode_control(frame))


def attacks(sender: str, to: str) -> dict[str, list[bytes]]:
    """Name -> the chunks one connection sends, in order."""
    return {
        "garbage": [secrets.token_bytes(4096)],
        "http": [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"],
        "huge length prefix": [struct.pack(">I", 0xFFFFFFFF), b"\x00" * 64],
        "truncated frame": [struct.pack(">I", 1000), b"\x93\x01\x02"],
        "truncated header": [b"\x00\x00"],
        "raft message without handshake": [evil_append(99, sender, to)],
        "vote without handshake": [
            encode_frame(
                encode_batch(
                    [
                        RequestVote(
                            term=1000,
                            sender=NodeId(sender),
                            to=NodeId(to),
                            last_log_index=10**6,
                            last_log_term=999,
                        )
                    ]
                )
            )
        ],
        "hello then raft message": [hello(sender, to), evil_append(99, sender, to)],
        "hello, forged proof, raft message": [
            hello(sender, to),
            encode_frame(encode_control(Auth(proof=b"\x00" * NONCE_LEN))),
            evil_append(99, sender, to),
        ],
        "hello from an unknown node": [hello("intruder", to), evil_append(99, "intruder", to)],
    }


async def attack(port: int, chunks: list[bytes]) -> bytes:
    """Send ``chunks``; return what the node sent back before closing (it must close)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = b""
    try:
        for chunk in chunks:
            writer.write(chunk)
            try:
                await writer.drain()
            except ConnectionError:
                break
            await asyncio.sleep(0.02)
        async with asyncio.timeout(5):  # the node closes; never a hang
            while True:
                try:
                    data = await reader.read(65536)
                except ConnectionError:
                    break
                if not data:
                    break
                received += data
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return received


def log_view(c: TcpCluster) -> dict[NodeId, tuple[int, int, int]]:
    return {
        n: (node.term, node.status().last_index, node.status().commit_index)
        for n, node in c.nodes.items()
    }


def test_hostile_bytes_on_the_raft_port_change_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="raftkv.transport.tcp")

    async def main() -> None:
        c = TcpCluster(tmp_path, overrides={"cluster_secret": SECRET})
        await c.start()
        try:
            leader = await c.leader()
            for i in range(5):
                await c.nodes[leader].propose(put_cmd(f"k{i}", i))
            await asyncio.sleep(0.3)  # followers apply; heartbeats settle
            before = log_view(c)
            follower = next(n for n in c.nodes if n != leader)
            for target in (leader, follower):
                port = c.members[target].raft[1]
                sender = next(n for n in c.nodes if n != target)
                for name, chunks in attacks(sender, target).items():
                    answer = await attack(port, chunks)
                    assert b"pwned" not in answer, name
            await asyncio.sleep(0.3)
            assert log_view(c) == before, "a refused connection changed a log or term"
            assert await c.leader() == leader
            for node in c.nodes.values():
                assert node.state_machine.read("pwned").found is False  # type: ignore[attr-defined]
            # The nodes keep serving.
            result = await c.nodes[leader].propose(put_cmd("after", 1))
            assert result.ok  # type: ignore[attr-defined]
            for target in (leader, follower):
                stats = c.nodes[target]._transport.stats  # type: ignore[union-attr]
                assert stats.auth_failures >= 5, stats  # no handshake, bad proof, unknown
                assert stats.decode_errors >= 3, stats  # garbage, HTTP, huge length
                assert stats.handshakes_incomplete >= 2, stats  # truncated
                text = c.nodes[target].metrics.render().decode()
                assert 'raftkv_transport_events_total{event="auth_failures"' in text
        finally:
            await c.stop()

    run(main())
    # Logged once per kind (refused handshake / undecodable frame) and remote
    # address, not once per attempt: 10 attacks, at most 2 warnings per node.
    for node_id in ("n1", "n2", "n3"):
        warned = [
            r.message
            for r in caplog.records
            if r.message.startswith(f"{node_id}: ") and "from 127.0.0.1" in r.message
        ]
        assert len(warned) <= 2, warned
    assert any("a Raft message before the handshake" in r.message for r in caplog.records)


def test_a_node_with_the_wrong_secret_cannot_move_the_term(tmp_path: Path) -> None:
    """An impostor that knows the member ids and addresses but not the secret: it
    campaigns in term 1000 as a member and as an outsider; nobody listens."""

    async def main() -> None:
        c = TcpCluster(tmp_path, overrides={"cluster_secret": SECRET})
        await c.start()
        impostors: list[TcpTransport] = []
        try:
            leader = await c.leader()
            await c.nodes[leader].propose(put_cmd("x", 1))
            await asyncio.sleep(0.2)
            before = log_view(c)
            peers = {n: m.raft for n, m in c.members.items()}
            for claimed in (next(n for n in c.nodes if n != leader), NodeId("n9")):
                t = TcpTransport(
                    claimed,
                    ("127.0.0.1", 0),
                    peers,
                    lambda msgs: None,
                    cluster_secret=b"the wrong secret, but long enough",
                    reconnect_base=0.01,
                    reconnect_cap=0.05,
                )
                await t.start()
                impostors.append(t)
            for _ in range(20):  # two seconds of votes and appends in term 1000
                for t in impostors:
                    for target in c.nodes:
                        if target == t.node_id:
                            continue
                        vote = RequestVote(
                            term=1000,
                            sender=t.node_id,
                            to=target,
                            last_log_index=10**6,
                            last_log_term=999,
                        )
                        t.send([vote])
                await asyncio.sleep(0.1)
            assert log_view(c) == before
            assert await c.leader() == leader
            for t in impostors:
                assert t.stats.connects == 0 and t.stats.msgs_out == 0, t.stats
                assert t.stats.auth_failures > 0
            refused = sum(
                n._transport.stats.auth_failures  # type: ignore[union-attr]
                for n in c.nodes.values()
            )
            assert refused > 0
        finally:
            for t in impostors:
                await t.stop()
            await c.stop()

    run(main())


async def _hold_idle(port: int, source: str, stop: asyncio.Event) -> None:
    """One attacker socket from ``source`` that sends nothing, renewed every
    second, and reopened at once when the node closes it."""
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=(source, 0)
            )
        except OSError:
            await asyncio.sleep(0.01)
            continue
        with contextlib.suppress(TimeoutError, OSError):
            async with asyncio.timeout(1.0):
                await reader.read(1)  # b"": the node closed it
        writer.transport.abort()
        await asyncio.sleep(0.01)


def test_a_connection_flood_does_not_cut_a_follower_off(tmp_path: Path) -> None:
    """100 idle sockets (no secret needed) from 20 addresses, renewed every
    second, against a follower's Raft port; the leader's link to it breaks and
    the leader reconnects through the flood: the follower keeps committing."""

    async def main() -> None:
        c = TcpCluster(tmp_path, overrides={"cluster_secret": SECRET})
        await c.start()
        stop = asyncio.Event()
        flood: list[asyncio.Task[None]] = []
        try:
            leader = await c.leader()
            follower = next(n for n in c.nodes if n != leader)
            port = c.members[follower].raft[1]
            loop = asyncio.get_running_loop()
            flood = [
                loop.create_task(_hold_idle(port, f"127.0.0.{2 + i % 20}", stop))
                for i in range(100)
            ]
            await asyncio.sleep(0.3)
            transport = c.nodes[follower]._transport
            transport._inbound[leader].transport.abort()  # type: ignore[union-attr]
            result = await c.nodes[leader].propose(put_cmd("through", 1))
            assert result.ok  # type: ignore[attr-defined]
            committed = c.nodes[leader].status().commit_index
            deadline = loop.time() + 3.0
            while c.nodes[follower].status().commit_index < committed:
                assert loop.time() < deadline, "the leader did not get through the flood"
                await asyncio.sleep(0.05)
            assert transport.stats.handshakes_evicted_global > 0  # type: ignore[union-attr]
        finally:
            stop.set()
            await asyncio.gather(*flood, return_exceptions=True)
            await c.stop()

    run(main())
