"""The lease routes (issue 17): grant, keep-alive, time-to-live, list, revoke,
put with a lease -- on the leader and through a follower -- expiry by the
leader's clock, and the errors."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest

from raftkv.replica.lessor import Lessor
from raftkv.server.node.leases import LeaseRequest, min_ttl_s
from raftkv.server.security import parse_tokens
from tests.cluster.harness import eventually
from tests.security.conftest import RO_TOKEN, RW_TOKEN, TOKENS_TEXT, HubCluster, run
from tests.server.test_api_store import Session, call, leader_and_follower, q
from tests.server.test_api_watch import open_watch


def test_min_ttl_is_one_and_a_half_election_timeouts_rounded_up() -> None:
    assert min_ttl_s(1000) == 2
    assert min_ttl_s(200) == 1
    assert min_ttl_s(3000) == 5


def test_a_forwarded_lease_request_is_an_array_never_a_command() -> None:
    request = LeaseRequest(kind="keepalive", lease_id=7)
    assert LeaseRequest.decode(request.encode()) == request
    assert LeaseRequest.decode(b"\x81\xa2op\xa3put") is None  # a map: a command


def test_lease_lifecycle_through_the_leader_and_a_follower(tmp_path: Path) -> None:
    async def main() -> None:
        async with HubCluster(tmp_path, election_ms=1000, heartbeat_ms=50) as c:
            lead, follow, leader = await leader_and_follower(c)
            async with Session() as s:
                # The TTL is raised to the minimum (2 s with a 1 s election timeout).
                status, body = await call(s, "POST", f"{follow}/v1/leases", {"ttl": 1})
                assert status == 200, body
                assert body["ttl"] == 2 and body["leader"] == leader and body["id"] > 0
                lease = body["id"]
                status, body = await call(s, "POST", f"{lead}/v1/leases", {"ttl": 60, "id": 42})
                assert (status, body["id"], body["ttl"]) == (200, 42, 60), body
                status, body = await call(s, "POST", f"{lead}/v1/leases", {"ttl": 60, "id": 42})
                assert status == 409 and body["error"] == "lease already exists", body
                # Keys with leases, in a put and in a transaction.
                status, body = await call(s, "PUT", f"{follow}/v1/kv/a{q(lease=lease)}", 1)
                assert status == 200, body
                txn = {"success": [{"put": {"key": "b", "value": 2, "lease": lease}}]}
                status, body = await call(s, "POST", f"{follow}/v1/txn", txn)
                assert status == 200 and body["succeeded"], body
                await call(s, "PUT", f"{lead}/v1/kv/c{q(lease=42)}", 3)
                for base in (lead, follow):
                    status, body = await call(s, "GET", f"{base}/v1/leases/{lease}{q(keys='true')}")
                    assert status == 200, body
                    assert body["id"] == lease and body["granted_ttl"] == 2
                    assert 0 <= body["ttl"] <= 2 and body["keys"] == ["a", "b"]
                    status, body = await call(s, "POST", f"{base}/v1/leases/{lease}/keepalive")
                    assert (status, body) == (200, {"id": lease, "ttl": 2}), body
                    status, body = await call(s, "GET", f"{base}/v1/leases")
                    assert status == 200, body
                    assert body["leases"] == sorted(
                        [{"id": lease, "granted_ttl": 2}, {"id": 42, "granted_ttl": 60}],
                        key=lambda x: x["id"],
                    )
                # Revoking deletes every key of the lease in one revision.
                watch, _ = await open_watch(s, f"{follow}/v1/watch{q(prefix='')}")
                status, body = await call(s, "DELETE", f"{follow}/v1/leases/{lease}")
                assert status == 200 and body["deleted"] == 2, body
                line = await watch.line()
                assert [(e["type"], e["kv"]["key"]) for e in line["events"]] == [
                    ("delete", "a"),
                    ("delete", "b"),
                ]
                assert line["revision"] == body["revision"]
                watch.resp.close()
                # It is gone: every route says 404.
                for method, path in [
                    ("POST", f"/v1/leases/{lease}/keepalive"),
                    ("GET", f"/v1/leases/{lease}"),
                    ("DELETE", f"/v1/leases/{lease}"),
                ]:
                    for base in (lead, follow):
                        status, body = await call(s, method, f"{base}{path}")
                        assert status == 404 and body["error"] == "lease not found", (path, body)
                status, body = await call(s, "PUT", f"{follow}/v1/kv/d{q(lease=lease)}", 1)
                assert status == 404 and body["error"] == "lease not found", body

    run(main())


def test_bad_lease_requests_are_400(tmp_path: Path) -> None:
    async def main() -> None:
        async with HubCluster(tmp_path) as c:
            lead, _, _ = await leader_and_follower(c)
            async with Session() as s:
                for body, words in [
                    ({}, "ttl"),
                    ({"ttl": 0}, "ttl"),
                    ({"ttl": "5"}, "ttl"),
                    ({"ttl": 5, "id": -1}, "id"),
                    ({"ttl": 5, "foo": 1}, "unknown field"),
                    ([5], "JSON object"),
                ]:
                    status, answer = await call(s, "POST", f"{lead}/v1/leases", body)
                    assert status == 400 and words in answer["error"], (body, answer)
                for path in ["/v1/leases/0", "/v1/leases/x", f"/v1/leases/{2**63}"]:
                    status, answer = await call(s, "GET", f"{lead}{path}")
                    assert status == 400 and "lease id" in answer["error"], answer
                status, answer = await call(s, "PUT", f"{lead}/v1/kv/k{q(lease='x')}", 1)
                assert status == 400 and "lease" in answer["error"], answer
                status, answer = await call(s, "PUT", f"{lead}/v1/kv/k{q(other=1)}", 1)
                assert status == 400, answer

    run(main())


def test_an_unrenewed_lease_expires_by_the_leaders_clock_and_a_renewed_one_does_not(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with HubCluster(tmp_path) as c:  # election 200 ms: the minimum TTL is 1 s
            lead, follow, _ = await leader_and_follower(c)
            async with Session() as s:
                _, short = await call(s, "POST", f"{lead}/v1/leases", {"ttl": 1})
                _, kept = await call(s, "POST", f"{lead}/v1/leases", {"ttl": 1})
                await call(s, "PUT", f"{lead}/v1/kv/short{q(lease=short['id'])}", 1)
                await call(s, "PUT", f"{lead}/v1/kv/kept{q(lease=kept['id'])}", 1)
                watch, _ = await open_watch(s, f"{follow}/v1/watch{q(key='short')}")
                start = time.monotonic()
                deleted = None
                while deleted is None:
                    status, body = await call(
                        s, "POST", f"{follow}/v1/leases/{kept['id']}/keepalive"
                    )
                    assert status == 200, body
                    with contextlib.suppress(TimeoutError):
                        deleted = await watch.line(timeout=0.3)
                elapsed = time.monotonic() - start
                assert deleted["events"][0]["type"] == "delete", deleted
                assert 0.9 <= elapsed < 3.0, elapsed
                status, body = await call(s, "GET", f"{follow}/v1/kv/kept")
                assert status == 200, body
                status, body = await call(s, "GET", f"{lead}/v1/leases/{short['id']}")
                assert status == 404, body
                watch.resp.close()

    run(main())


def test_a_new_leader_extends_leases_and_keeps_timing_them(tmp_path: Path) -> None:
    async def main() -> None:
        async with HubCluster(tmp_path) as c:
            leader = await c.leader()
            async with Session() as s:
                _, body = await call(s, "POST", f"{c.url(leader)}/v1/leases", {"ttl": 2})
                lease = body["id"]
                await call(s, "PUT", f"{c.url(leader)}/v1/kv/k{q(lease=lease)}", 1)
                await c.stop_node(leader)
                await eventually(lambda: any(n.is_leader for n in c.nodes.values()), "a leader")
                new = await c.leader()
                status, body = await call(s, "GET", f"{c.url(new)}/v1/leases/{lease}")
                assert status == 200 and body["ttl"] >= 2, body
                status, body = await call(s, "POST", f"{c.url(new)}/v1/leases/{lease}/keepalive")
                assert status == 200, body
                # ... and ends it when it is not renewed.
                await eventually(
                    lambda: lease not in [le.id for le in c.nodes[new].leases.leases()],
                    "expired",
                    5.0,
                )

    run(main())


def test_lease_routes_with_tokens(tmp_path: Path) -> None:
    async def main() -> None:
        overrides = {"client_tokens": parse_tokens(TOKENS_TEXT)}
        async with HubCluster(tmp_path, overrides=overrides) as c:
            _, follow, _ = await leader_and_follower(c)
            rw = {"Authorization": f"Bearer {RW_TOKEN}"}
            ro = {"Authorization": f"Bearer {RO_TOKEN}"}
            async with Session() as s:
                status, body = await call(s, "POST", f"{follow}/v1/leases", {"ttl": 5}, headers=rw)
                assert status == 200, body
                lease = body["id"]
                # Through a follower over HTTP (the leader checks the token again).
                url = f"{follow}/v1/leases/{lease}/keepalive"
                status, body = await call(s, "POST", url, headers=rw)
                assert status == 200 and body["ttl"] == 5, body
                status, body = await call(s, "POST", url, headers=ro)
                assert status == 403, body
                status, body = await call(s, "POST", url)
                assert status == 401, body
                status, body = await call(s, "GET", f"{follow}/v1/leases/{lease}", headers=ro)
                assert status == 200 and body["granted_ttl"] == 5, body
                status, body = await call(s, "GET", f"{follow}/v1/watch{q(key='k')}")
                assert status == 401, body

    run(main())


def test_a_broken_lessor_stops_the_leader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        async with HubCluster(tmp_path) as c:
            leader = await c.leader()

            def broken(self: Lessor, now_ms: int, *, time_ms: int) -> list[object]:
                raise RuntimeError("broken lessor")

            monkeypatch.setattr(Lessor, "tick", broken)
            failure = await asyncio.wait_for(c.nodes[leader].failed, 5)
            assert "broken lessor" in str(failure) and "ticker" in str(failure)

    run(main())
