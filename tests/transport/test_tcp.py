"""TcpTransport on 127.0.0.1 with ephemeral ports: delivery, order, reconnects,
bounded queues, authentication, hostile input, clean shutdown."""

from __future__ import annotations

import asyncio
import gc
import secrets
import socket
import struct
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest

from raftkv.core.messages import AppendEntries, Heartbeat, Message, RequestVote
from raftkv.core.types import Entry, NodeId
from raftkv.transport import TcpTransport, TransportClosed, handshake
from raftkv.transport.codec import (
    PROTOCOL_VERSION,
    Auth,
    Challenge,
    Hello,
    Reject,
    Welcome,
    decode_control,
    encode_batch,
    encode_control,
    encode_frame,
    frame_length,
)
from raftkv.transport.forward import ForwardRequest

LOCAL = "127.0.0.1"
SECRET = b"correct horse battery staple"
FAST: dict[str, Any] = {"reconnect_base": 0.01, "reconnect_cap": 0.1}


def run(coro: Coroutine[Any, Any, None], timeout: float = 8.0) -> None:
    async def guarded() -> None:
        async with asyncio.timeout(timeout):
            await coro

    asyncio.run(guarded())
    gc.collect()  # surface unclosed-transport ResourceWarnings in this test


def hb(src: str, dst: str, commit: int) -> Heartbeat:
    return Heartbeat(term=1, sender=NodeId(src), to=NodeId(dst), commit=commit)


async def eventually(pred: Callable[[], bool], timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.005)


class Inbox:
    def __init__(self) -> None:
        self.batches: list[list[Message]] = []

    def __call__(self, msgs: list[Message]) -> None:
        self.batches.append(msgs)

    @property
    def msgs(self) -> list[Message]:
        return [m for b in self.batches for m in b]

    def commits_from(self, sender: str) -> list[int]:
        return [m.commit for m in self.msgs if isinstance(m, Heartbeat) and m.sender == sender]


async def cluster(
    names: list[str], secrets_: dict[str, bytes | None] | None = None, **kwargs: Any
) -> tuple[dict[str, TcpTransport], dict[str, Inbox]]:
    """Start one transport per name on ephemeral ports, then tell each about the others."""
    inboxes = {n: Inbox() for n in names}
    nodes = {}
    for n in names:
        secret = secrets_.get(n, SECRET) if secrets_ is not None else SECRET
        t = TcpTransport(
            NodeId(n), (LOCAL, 0), {}, inboxes[n], cluster_secret=secret, **{**FAST, **kwargs}
        )
        await t.start()
        assert t.port != 0
        nodes[n] = t
    for n, t in nodes.items():
        t.update_peers({NodeId(m): o.address for m, o in nodes.items() if m != n})
    return nodes, inboxes


async def stop_all(nodes: dict[str, TcpTransport]) -> None:
    for t in nodes.values():
        await t.stop()


def assert_no_other_tasks() -> None:
    others = asyncio.all_tasks() - {asyncio.current_task()}
    assert not others, others


# --------------------------------------------------------------------------- delivery


def test_three_nodes_exchange_batches_both_ways_in_order() -> None:
    async def main() -> None:
        nodes, inboxes = await cluster(["a", "b", "c"])
        n = 300
        for src in nodes:
            for dst in nodes:
                if src != dst:
                    nodes[src].send([hb(src, dst, i) for i in range(n)])
        await eventually(lambda: all(len(i.msgs) == 2 * n for i in inboxes.values()))
        for dst, inbox in inboxes.items():
            for src in nodes:
                if src != dst:
                    assert inbox.commits_from(src) == list(range(n))
            assert all(m.to == dst for m in inbox.msgs)
        for t in nodes.values():
            assert t.stats.msgs_out == 2 * n
            assert t.stats.msgs_in == 2 * n
            # Batching: one send() of 300 messages leaves as a handful of frames.
            assert t.stats.frames_out <= 2 * 4
            assert t.stats.connects == 2
            assert t.stats.accepts == 2
        await stop_all(nodes)
        assert_no_other_tasks()

    run(main())


def test_order_is_kept_per_link_across_many_sends() -> None:
    async def main() -> None:
        nodes, inboxes = await cluster(["a", "b"], max_queue=100_000)
        a = nodes["a"]
        for i in range(2000):
            a.send([hb("a", "b", i)])
            if i % 7 == 0:
                await asyncio.sleep(0)
        await eventually(lambda: len(inboxes["b"].msgs) == 2000)
        assert inboxes["b"].commits_from("a") == list(range(2000))
        assert a.stats.dropped_queue_full == 0
        await stop_all(nodes)

    run(main())


def test_all_message_kinds_cross_the_wire() -> None:
    async def main() -> None:
        nodes, inboxes = await cluster(["a", "b"])
        ae = AppendEntries(
            term=3,
            sender=NodeId("a"),
            to=NodeId("b"),
            prev_log_index=1,
            prev_log_term=1,
            entries=(Entry(3, 2, b"cmd"),),
            commit=1,
        )
        rv = RequestVote(
            term=4, sender=NodeId("a"), to=NodeId("b"), last_log_index=2, last_log_term=3
        )
        nodes["a"].send([ae, rv])
        await eventually(lambda: len(inboxes["b"].msgs) == 2)
        assert inboxes["b"].msgs == [ae, rv]
        await stop_all(nodes)

    run(main())


def test_large_batches_are_split_and_oversized_messages_dropped() -> None:
    async def main() -> None:
        nodes, inboxes = await cluster(["a", "b"], max_frame_size=10_000, max_batch_bytes=10**9)

        def append(i: int, size: int) -> AppendEntries:
            return AppendEntries(
                term=1,
                sender=NodeId("a"),
                to=NodeId("b"),
                prev_log_index=i,
                prev_log_term=1,
                entries=(Entry(1, i + 1, b"x" * size),),
                commit=0,
            )

        # 20 x 3 KB do not fit one 10 KB frame: they must be split, not lost.
        nodes["a"].send([append(i, 3000) for i in range(20)])
        nodes["a"].send([append(100, 20_000), append(101, 10)])  # the first can never fit
        await eventually(lambda: len(inboxes["b"].msgs) == 21)
        got = [m.prev_log_index for m in inboxes["b"].msgs if isinstance(m, AppendEntries)]
        assert got == [*range(20), 101]
        assert nodes["a"].stats.dropped_oversize == 1
        assert nodes["b"].stats.decode_errors == 0
        await stop_all(nodes)

    run(main())


# --------------------------------------------------------------------------- failures


def test_peer_down_then_up_gets_later_messages() -> None:
    async def main() -> None:
        inbox_b = Inbox()
        b = TcpTransport(NodeId("b"), (LOCAL, 0), {}, inbox_b, cluster_secret=SECRET, **FAST)
        await b.start()
        port_b = b.port
        await b.stop()  # b is down; its port is now free

        a = TcpTransport(
            NodeId("a"),
            (LOCAL, 0),
            {NodeId("b"): (LOCAL, port_b)},
            Inbox(),
            cluster_secret=SECRET,
            **FAST,
        )
        await a.start()
        a.send([hb("a", "b", i) for i in range(5)])  # may be lost: b is down
        await asyncio.sleep(0.15)  # a few failed connection attempts
        assert a.stats.connects == 0

        b2 = TcpTransport(
            NodeId("b"),
            (LOCAL, port_b),
            {NodeId("a"): a.address},
            inbox_b,
            cluster_secret=SECRET,
            **FAST,
        )
        await b2.start()
        commit = 100
        # Keep sending until something arrives, then check that a later message does.
        while not inbox_b.msgs:
            a.send([hb("a", "b", commit)])
            commit += 1
            await asyncio.sleep(0.02)
        a.send([hb("a", "b", 10_000)])
        await eventually(lambda: 10_000 in inbox_b.commits_from("a"))
        commits = inbox_b.commits_from("a")
        assert commits == sorted(commits)
        assert a.stats.connects == 1
        await a.stop()
        await b2.stop()
        assert_no_other_tasks()

    run(main())


def test_refused_connection_reports_the_peer_unreachable() -> None:
    """A connection refused (nothing listens at the peer's address) is reported,
    the established link breaking and the redial refused too; a live peer is not."""

    async def main() -> None:
        refused: list[NodeId] = []
        b = TcpTransport(NodeId("b"), (LOCAL, 0), {}, Inbox(), cluster_secret=SECRET, **FAST)
        c = TcpTransport(NodeId("c"), (LOCAL, 0), {}, Inbox(), cluster_secret=SECRET, **FAST)
        await b.start()
        await c.start()
        a = TcpTransport(
            NodeId("a"),
            (LOCAL, 0),
            {NodeId("b"): b.address, NodeId("c"): c.address},
            Inbox(),
            cluster_secret=SECRET,
            on_unreachable=refused.append,
            **FAST,
        )
        await a.start()
        b.update_peers({NodeId("a"): a.address})
        c.update_peers({NodeId("a"): a.address})
        a.send([hb("a", "b", 1), hb("a", "c", 1)])
        await eventually(lambda: a.is_connected(NodeId("b")) and a.is_connected(NodeId("c")))
        await asyncio.sleep(0.1)
        assert refused == []
        await b.stop()  # b's process "dies": its port refuses connections now
        await eventually(lambda: NodeId("b") in refused)
        assert set(refused) == {NodeId("b")}
        await a.stop()
        await c.stop()
        assert_no_other_tasks()

    run(main())


def test_queue_is_bounded_while_peer_is_down() -> None:
    async def main() -> None:
        with socket.socket() as s:  # a port with nothing listening
            s.bind((LOCAL, 0))
            dead_port = s.getsockname()[1]
        a = TcpTransport(
            NodeId("a"),
            (LOCAL, 0),
            {NodeId("b"): (LOCAL, dead_port)},
            Inbox(),
            max_queue=10,
            **FAST,
        )
        await a.start()
        a.send([hb("a", "b", i) for i in range(100)])
        assert a.queued(NodeId("b")) == 10
        assert a.stats.dropped_queue_full == 90
        a.send([hb("a", "nobody", 1)])
        assert a.stats.dropped_unroutable == 1
        await asyncio.sleep(0.05)
        assert a.stats.msgs_out == 0
        await a.stop()
        assert_no_other_tasks()

    run(main())


def test_queue_is_bounded_in_bytes() -> None:
    async def main() -> None:
        a = TcpTransport(
            NodeId("a"),
            (LOCAL, 0),
            {NodeId("b"): (LOCAL, 9)},
            Inbox(),
            max_queue_bytes=50_000,
            **FAST,
        )
        big = [
            AppendEntries(
                term=1,
                sender=NodeId("a"),
                to=NodeId("b"),
                prev_log_index=i,
                prev_log_term=1,
                entries=(Entry(1, i + 1, b"x" * 10_000),),
                commit=0,
            )
            for i in range(20)
        ]
        a.send(big)  # before start(): queued, still bounded
        assert a.queued(NodeId("b")) < 5
        assert a.stats.dropped_queue_full > 15
        await a.stop()

    run(main())


def test_a_stalled_peer_does_not_block_others() -> None:
    async def main() -> None:
        # "slow" accepts TCP connections but never reads or answers the handshake.
        stalled: list[asyncio.StreamWriter] = []
        server = await asyncio.start_server(lambda r, w: stalled.append(w), LOCAL, 0)
        slow_port = server.sockets[0].getsockname()[1]
        nodes, inboxes = await cluster(["a", "b"], max_queue=50)
        a = nodes["a"]
        a.update_peers({NodeId("b"): nodes["b"].address, NodeId("slow"): (LOCAL, slow_port)})
        await eventually(lambda: a.stats.connects == 1 and bool(stalled))
        for i in range(500):
            a.send([hb("a", "slow", i), hb("a", "b", i)])
            if i % 10 == 0:
                await asyncio.sleep(0)
        await eventually(lambda: len(inboxes["b"].msgs) == 500)
        assert a.queued(NodeId("slow")) == 50
        assert a.stats.dropped_queue_full == 450
        await stop_all(nodes)
        server.close()
        for w in stalled:
            w.close()
        await server.wait_closed()

    run(main())


# --------------------------------------------------------------------------- authentication


def test_wrong_cluster_secret_is_refused_both_ways() -> None:
    async def main() -> None:
        nodes, inboxes = await cluster(["a", "b"], secrets_={"a": SECRET, "b": b"other secret"})
        nodes["a"].send([hb("a", "b", 1)])
        nodes["b"].send([hb("b", "a", 1)])
        await eventually(
            lambda: all(t.stats.auth_failures >= 2 for t in nodes.values())  # in and out
        )
        await asyncio.sleep(0.05)
        for n, t in nodes.items():
            assert inboxes[n].msgs == []
            assert t.stats.connects == 0 and t.stats.accepts == 0
            assert t.stats.msgs_in == 0
        await stop_all(nodes)

    run(main())


@pytest.mark.parametrize("secrets_", [{"a": None}, {"b": None}], ids=["client-none", "server-none"])
def test_secret_on_one_side_only_is_refused(secrets_: dict[str, bytes | None]) -> None:
    async def main() -> None:
        nodes, inboxes = await cluster(["a", "b"], secrets_=secrets_)
        nodes["a"].send([hb("a", "b", 1)])
        await eventually(lambda: nodes["a"].stats.auth_failures >= 1)
        assert inboxes["b"].msgs == []
        await stop_all(nodes)

    run(main())


def test_no_secret_on_either_side_works() -> None:
    async def main() -> None:
        nodes, inboxes = await cluster(["a", "b"], secrets_={"a": None, "b": None})
        nodes["a"].send([hb("a", "b", 1)])
        await eventually(lambda: inboxes["b"].commits_from("a") == [1])
        await stop_all(nodes)

    run(main())


def test_unknown_node_and_wrong_cluster_id_are_refused() -> None:
    async def main() -> None:
        nodes, inboxes = await cluster(["a", "b"])
        b = nodes["b"]
        stranger = TcpTransport(
            NodeId("zed"),
            (LOCAL, 0),
            {NodeId("b"): b.address},
            Inbox(),
            cluster_secret=SECRET,
            **FAST,
        )
        other_cluster = TcpTransport(
            NodeId("a"),
            (LOCAL, 0),
            {NodeId("b"): b.address},
            Inbox(),
            cluster_secret=SECRET,
            cluster_id="other",
            **FAST,
        )
        await stranger.start()
        await other_cluster.start()
        stranger.send([hb("zed", "b", 1)])
        other_cluster.send([hb("a", "b", 2)])
        await eventually(
            lambda: stranger.stats.auth_failures >= 1 and other_cluster.stats.auth_failures >= 1
        )
        assert b.stats.auth_failures >= 2
        assert inboxes["b"].msgs == []
        await stranger.stop()
        await other_cluster.stop()
        await stop_all(nodes)

    run(main())


# --------------------------------------------------------------------------- hostile input


async def raw_connect(
    server: TcpTransport, me: str, secret: bytes | None = SECRET
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A hand-rolled client that completes the handshake as node ``me``."""
    reader, writer = await asyncio.open_connection(LOCAL, server.port)
    try:
        final = await _raw_handshake(server, me, secret, reader, writer)
        assert isinstance(final, Welcome), final
    except BaseException:
        writer.close()
        await writer.wait_closed()
        raise
    return reader, writer


async def _raw_handshake(
    server: TcpTransport,
    me: str,
    secret: bytes | None,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> object:

    async def read() -> object:
        n = frame_length(await reader.readexactly(4))
        return decode_control(await reader.readexactly(n))

    cn = secrets.token_bytes(32)
    hello = Hello(
        version=PROTOCOL_VERSION,
        cluster_id="raftkv",
        node_id=NodeId(me),
        to=server.node_id,
        nonce=cn,
    )
    writer.write(encode_frame(encode_control(hello)))
    challenge = await read()
    assert isinstance(challenge, Challenge)
    proof = handshake.session_proof(
        secret, handshake.CLIENT_LABEL, "raftkv", me, server.node_id, cn, challenge.nonce
    )
    writer.write(encode_frame(encode_control(Auth(proof=proof))))
    return await read()


async def closed_by_peer(reader: asyncio.StreamReader) -> bool:
    async with asyncio.timeout(2.0):
        return await reader.read(100) == b""


GOOD = encode_frame(encode_batch([hb("c", "b", 7)]))


@pytest.mark.parametrize(
    ("bad", "counter"),
    [
        pytest.param(struct.pack(">I", 5) + b"\xc1\xc1\xc1\xc1\xc1", "decode_errors", id="garbage"),
        pytest.param(b"\xff\xff\xff\xff", "decode_errors", id="huge-length"),
        pytest.param(GOOD[:-3], "decode_errors", id="truncated"),
        pytest.param(GOOD[:2], "decode_errors", id="truncated-header"),
        pytest.param(
            encode_frame(encode_batch([hb("a", "b", 9)])), "dropped_bad_sender", id="forged-sender"
        ),
        pytest.param(
            encode_frame(encode_batch([hb("c", "a", 9)])), "dropped_bad_sender", id="wrong-to"
        ),
    ],
)
def test_bad_frames_after_handshake(bad: bytes, counter: str) -> None:
    async def main() -> None:
        nodes, inboxes = await cluster(["a", "b", "c"])
        b = nodes["b"]
        await nodes["c"].stop()  # "c" is now played by a raw socket
        reader, writer = await raw_connect(b, "c")
        writer.write(GOOD)  # a good frame first: it is delivered
        await eventually(lambda: inboxes["b"].commits_from("c") == [7])
        writer.write(bad)
        if counter == "decode_errors" and bad != b"\xff\xff\xff\xff":
            writer.write_eof()  # truncation: the rest never comes
        if counter == "decode_errors":
            # The connection is closed at once -- for a huge length, without waiting
            # for (or allocating) the announced payload.
            assert await closed_by_peer(reader)
        else:
            await eventually(lambda: getattr(b.stats, counter) == 1)
        await eventually(lambda: getattr(b.stats, counter) == 1)
        assert inboxes["b"].commits_from("c") == [7]
        assert 9 not in inboxes["b"].commits_from("a")
        writer.close()
        await writer.wait_closed()
        # Good peers are unaffected.
        nodes["a"].send([hb("a", "b", 1)])
        await eventually(lambda: inboxes["b"].commits_from("a") == [1])
        await stop_all(nodes)
        assert_no_other_tasks()

    run(main())


@pytest.mark.parametrize(
    "first_bytes",
    [
        pytest.param(b"GET / HTTP/1.1\r\n\r\n", id="http"),
        pytest.param(b"\xff\xff\xff\xff", id="huge-length"),
        pytest.param(encode_frame(encode_batch([hb("c", "b", 1)])), id="data-before-hello"),
    ],
)
def test_garbage_before_handshake_is_refused(first_bytes: bytes) -> None:
    async def main() -> None:
        nodes, inboxes = await cluster(["a", "b"])
        b = nodes["b"]
        reader, writer = await asyncio.open_connection(LOCAL, b.port)
        writer.write(first_bytes)
        assert await closed_by_peer(reader)
        assert b.stats.decode_errors + b.stats.auth_failures == 1
        writer.close()
        await writer.wait_closed()
        nodes["a"].send([hb("a", "b", 1)])
        await eventually(lambda: inboxes["b"].commits_from("a") == [1])
        assert b.stats.msgs_in == 1
        await stop_all(nodes)

    run(main())


def test_wrong_proof_from_a_raw_client_is_counted() -> None:
    async def main() -> None:
        nodes, _ = await cluster(["a", "b"])
        b = nodes["b"]
        reader, writer = await asyncio.open_connection(LOCAL, b.port)
        final = await _raw_handshake(b, "a", b"guess", reader, writer)
        assert isinstance(final, Reject)
        assert final.reason == "authentication failed"
        assert await closed_by_peer(reader)
        assert b.stats.auth_failures == 1
        writer.close()
        await writer.wait_closed()
        await stop_all(nodes)

    run(main())


def test_silent_client_is_dropped_after_the_handshake_timeout() -> None:
    async def main() -> None:
        nodes, _ = await cluster(["a", "b"], handshake_timeout=0.1)
        reader, writer = await asyncio.open_connection(LOCAL, nodes["b"].port)
        assert await closed_by_peer(reader)
        writer.close()
        await writer.wait_closed()
        await stop_all(nodes)

    run(main())


# --------------------------------------------------------------------------- lifecycle


def test_stop_is_clean_idempotent_and_final() -> None:
    async def main() -> None:
        nodes, inboxes = await cluster(["a", "b", "c"])
        for src in nodes:
            nodes[src].send([hb(src, d, 1) for d in nodes if d != src])
        await eventually(lambda: all(len(i.msgs) == 2 for i in inboxes.values()))
        # A connection in the middle of a handshake while stopping.
        reader, writer = await asyncio.open_connection(LOCAL, nodes["a"].port)
        await stop_all(nodes)
        await stop_all(nodes)
        assert_no_other_tasks()
        assert await closed_by_peer(reader)
        writer.close()
        await writer.wait_closed()
        with pytest.raises(TransportClosed):
            nodes["a"].send([hb("a", "b", 2)])
        with pytest.raises(TransportClosed):
            await nodes["a"].start()
        with pytest.raises(OSError):  # the listening socket is closed
            await asyncio.open_connection(LOCAL, nodes["a"].port)

    run(main())


def test_update_peers_adds_and_removes_links() -> None:
    async def main() -> None:
        nodes, inboxes = await cluster(["a", "b"])
        a, b = nodes["a"], nodes["b"]
        a.send([hb("a", "b", 1)])
        await eventually(lambda: inboxes["b"].commits_from("a") == [1])
        b.update_peers({})  # a is removed from b's membership
        a.update_peers({})
        a.send([hb("a", "b", 2)])
        assert a.stats.dropped_unroutable == 1
        a.update_peers({NodeId("b"): b.address})
        a.send([hb("a", "b", 3)])
        await eventually(lambda: a.stats.auth_failures >= 1)  # b refuses a non-member
        b.update_peers({NodeId("a"): a.address})
        # a's message 3 waited in its queue while b refused it; now it goes through.
        await eventually(lambda: 3 in inboxes["b"].commits_from("a"))
        a.send([hb("a", "b", 4)])
        await eventually(lambda: inboxes["b"].commits_from("a") == [1, 3, 4])
        await stop_all(nodes)
        assert_no_other_tasks()

    run(main())


def test_backoff_is_jittered_and_capped() -> None:
    import random

    t = TcpTransport(
        NodeId("a"),
        (LOCAL, 0),
        {},
        Inbox(),
        reconnect_base=0.05,
        reconnect_cap=1.0,
        rng=random.Random(1),
    )
    delays = [t._backoff(n) for n in range(40)]
    assert all(0.025 <= d <= 0.05 for d in delays[:1])
    assert all(0.5 <= d <= 1.0 for d in delays[6:])
    assert len(set(delays)) == len(delays)  # jittered


_: Callable[..., Awaitable[None]] = eventually  # keep type checkers honest about the helper


def test_send_on_an_idle_connected_link_writes_at_once_and_carries_forwards() -> None:
    async def main() -> None:
        nodes, inboxes = await cluster(["a", "b"])
        nodes["a"].send([hb("a", "b", 0)])  # the first send connects
        await eventually(lambda: len(inboxes["b"].msgs) == 1)
        assert nodes["a"].is_connected(NodeId("b"))
        assert not nodes["a"].is_connected(NodeId("nobody"))
        frames = nodes["a"].stats.frames_out
        # Connected and idle: the frame is written inside send(), nothing stays queued.
        nodes["a"].send(
            [
                hb("a", "b", 1),
                ForwardRequest(
                    term=1, sender=NodeId("a"), to=NodeId("b"), request_id=7, payload=b"cmd"
                ),
            ]
        )
        assert nodes["a"].queued(NodeId("b")) == 0
        assert nodes["a"].stats.frames_out == frames + 1
        await eventually(lambda: len(inboxes["b"].msgs) == 3)
        got = inboxes["b"].msgs[-1]
        assert isinstance(got, ForwardRequest) and got.payload == b"cmd" and got.request_id == 7
        await stop_all(nodes)
        assert_no_other_tasks()

    run(main())


# --------------------------------------------------------------------------- handshake floods


class Flood:
    """An attacker without the secret: ``len(sources)`` connections to ``port``,
    the i-th bound to ``sources[i]`` (127.0.0.x: distinct source addresses;
    real peers use 127.0.0.1). Each connection either sends nothing and is
    renewed every ``renew`` seconds (so it never reaches a deadline), or
    trickles ``trickle`` one byte per 100 ms until the node closes it; a
    connection the node closes is reopened at once (after 10 ms)."""

    def __init__(
        self,
        port: int,
        sources: list[str],
        *,
        renew: float = 1.0,
        trickle: bytes | None = None,
    ) -> None:
        self.port = port
        self.sources = sources
        self.renew = renew
        self.trickle = trickle
        self.open = 0
        self.opened = 0
        self.lifetimes: list[float] = []  # connect -> closed by the node, in seconds
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Flood:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._slot(s)) for s in self.sources]
        await eventually(lambda: self.opened >= len(self.sources))
        await asyncio.sleep(0.1)  # the node has accepted them all
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _slot(self, source: str) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                reader, writer = await asyncio.open_connection(
                    LOCAL, self.port, local_addr=(source, 0)
                )
            except OSError:
                await asyncio.sleep(0.01)
                continue
            started = loop.time()
            self.open += 1
            self.opened += 1
            try:
                if await self._hold(reader, writer):
                    self.lifetimes.append(loop.time() - started)
            finally:
                self.open -= 1
                writer.transport.abort()
            await asyncio.sleep(0.01)

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Hold the connection; True if the node closed it."""
        try:
            if self.trickle is None:
                async with asyncio.timeout(self.renew):
                    return await reader.read(1) == b""
            for byte in self.trickle:
                writer.write(bytes([byte]))
                try:
                    async with asyncio.timeout(0.1):
                        if await reader.read(1) == b"":
                            return True
                except TimeoutError:
                    pass
            return False
        except TimeoutError:
            return False
        except OSError:
            return True


def flood_sources(count: int, addresses: int) -> list[str]:
    """``count`` connections spread over 127.0.0.2 .. 127.0.0.(addresses + 1)."""
    return [f"127.0.0.{2 + i % addresses}" for i in range(count)]


async def peer_through_flood(b: TcpTransport, inbox: Inbox, peer_host: str = LOCAL) -> None:
    """A real peer "a" (with the secret) connects to ``b`` under a flood and
    delivers a message; then its link breaks and it reconnects and delivers
    again. Each within a bounded time."""
    a = TcpTransport(NodeId("a"), (LOCAL, 0), {}, Inbox(), cluster_secret=SECRET, **FAST)
    await a.start()
    try:
        b.update_peers({NodeId("a"): (peer_host, a.port)})
        a.update_peers({NodeId("b"): b.address})
        a.send([hb("a", "b", 1)])
        await eventually(lambda: inbox.commits_from("a") == [1], timeout=2.0)
        b._inbound[NodeId("a")].transport.abort()  # the link breaks; a reconnects
        await eventually(lambda: not a.is_connected(NodeId("b")), timeout=2.0)
        a.send([hb("a", "b", 2)])
        await eventually(lambda: inbox.commits_from("a") == [1, 2], timeout=2.0)
    finally:
        await a.stop()


async def flooded_node(**kwargs: Any) -> tuple[TcpTransport, Inbox]:
    inbox = Inbox()
    b = TcpTransport(
        NodeId("b"), (LOCAL, 0), {}, inbox, cluster_secret=SECRET, **{**FAST, **kwargs}
    )
    await b.start()
    return b, inbox


def test_a_peer_gets_through_an_idle_flood_from_one_source() -> None:
    async def main() -> None:
        b, inbox = await flooded_node()
        try:
            async with Flood(b.port, flood_sources(100, 1)) as flood:
                await peer_through_flood(b, inbox)
                assert flood.open > 0
            assert b.stats.handshakes_evicted_per_source > 0
        finally:
            await b.stop()

    run(main())


@pytest.mark.parametrize("peer_host", [LOCAL, "localhost"], ids=["member-ip", "member-name"])
def test_a_peer_gets_through_an_idle_flood_from_many_sources(peer_host: str) -> None:
    """From 20 addresses, 5 each: under the per-source limit, over the global one.
    With a member's address as an IP the peer's source is known; as a host name
    it is not, and the peer still gets through (the oldest pending one goes)."""

    async def main() -> None:
        b, inbox = await flooded_node()
        try:
            async with Flood(b.port, flood_sources(100, 20)):
                await peer_through_flood(b, inbox, peer_host)
            assert b.stats.handshakes_evicted_global > 0
            assert b.stats.handshakes_evicted_per_source == 0
        finally:
            await b.stop()

    run(main())


def test_a_trickle_flood_holds_no_slot_past_the_handshake_deadline() -> None:
    """One byte per 100 ms (of a real Hello frame) does not extend the deadline
    from accept; and over the limits such a flood does not lock a peer out."""
    trickle = encode_frame(
        encode_control(
            Hello(
                version=PROTOCOL_VERSION,
                cluster_id="raftkv",
                node_id=NodeId("a"),
                to=NodeId("b"),
                nonce=secrets.token_bytes(32),
            )
        )
    )

    async def main() -> None:
        deadline = 0.5
        b, inbox = await flooded_node(handshake_timeout=deadline)
        try:
            # Under both limits nothing is evicted: each one is closed at its deadline.
            async with Flood(b.port, flood_sources(48, 8), trickle=trickle) as flood:
                await eventually(lambda: len(flood.lifetimes) >= 48, timeout=2.0)
            assert all(deadline - 0.05 < t < deadline + 0.3 for t in flood.lifetimes), sorted(
                flood.lifetimes
            )
            assert b.stats.handshakes_incomplete >= 48
            # Over the global limit: the peer still gets through.
            async with Flood(b.port, flood_sources(128, 16), trickle=trickle) as flood:
                await peer_through_flood(b, inbox)
            assert max(flood.lifetimes, default=0.0) < deadline + 0.3
        finally:
            await b.stop()

    run(main())
