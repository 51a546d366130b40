"""The MVCC store on a real 3-node cluster (issue 16's "Done when"): prefix
reads with revisions, a transaction whose compare fails, reads at an old
revision, compaction, and the NOSPACE alarm -- through the HTTP API and the CLI."""

from __future__ import annotations

import json
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from raftkv.core.types import NodeId
from tests.cluster.harness import ProcCluster, http, proc_cluster

pytestmark = pytest.mark.cluster

QUOTA = 4096
BIG = "x" * 1000


def statuses(c: ProcCluster) -> list[dict[str, Any]]:
    return [s for s in (c.status(n) for n in c.members) if s is not None]


def wait_alarm(c: ProcCluster, alarm: str | None, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sts = statuses(c)
        if len(sts) == len(c.members) and all(s["alarm"] == alarm for s in sts):
            return
        time.sleep(0.05)
    raise AssertionError(f"alarm is not {alarm} everywhere: {statuses(c)}")


def test_the_store_on_a_real_cluster(tmp_path: Path) -> None:
    extra = ["--quota-bytes", str(QUOTA)]
    with proc_cluster(tmp_path, election_ms=500, heartbeat_ms=50, extra_args=extra) as c:
        leader = c.wait_leader()
        follower = next(n for n in c.members if n != leader)
        f = c.url(follower)

        def ok(*args: str) -> str:
            done = c.cli(*args)
            assert done.returncode == 0, (args, done.stdout, done.stderr, c.logs())
            return done.stdout

        # put a/1, a/2, b -> the prefix a/ lists the two, with their revisions.
        assert ok("put", "a/1", "1").startswith("ok index=")
        ok("put", "a/2", '"two"')
        ok("put", "b", "3")
        code, body = http("GET", f"{f}/v1/kv?prefix=a/")
        assert code == 200, body
        assert body == {
            "kvs": [
                {"key": "a/1", "value": 1, "create_revision": 2, "mod_revision": 2, "version": 1},
                {
                    "key": "a/2",
                    "value": "two",
                    "create_revision": 3,
                    "mod_revision": 3,
                    "version": 1,
                },
            ],
            "count": 2,
            "more": False,
            "revision": 4,
        }
        assert json.loads(ok("get", "--prefix", "a/")) == body

        # A transaction with a failing compare changes nothing.
        txn = {
            "compare": [{"key": "a/1", "target": "value", "op": "==", "value": 99}],
            "success": [{"put": {"key": "a/1", "value": 100}}, {"delete": {"key": "b"}}],
            "failure": [{"range": {"key": "a/", "prefix": True, "count_only": True}}],
        }
        path = tmp_path / "txn.json"
        path.write_text(json.dumps(txn))
        answer = json.loads(ok("txn", str(path)))
        assert (answer["succeeded"], answer["revision"]) == (False, 4), answer
        assert answer["responses"] == [{"range": {"kvs": [], "count": 2, "more": False}}]
        for node in c.members:
            code, body = http("GET", f"{c.url(node)}/v1/kv?prefix=&consistency=stale")
            assert code == 200 and body["revision"] in (3, 4), body  # a follower may lag
        code, body = http("GET", f"{f}/v1/kv?prefix=")
        assert [(kv["key"], kv["value"]) for kv in body["kvs"]] == [
            ("a/1", 1),
            ("a/2", "two"),
            ("b", 3),
        ]
        assert body["revision"] == 4

        # A read at an old revision returns the old value.
        ok("put", "a/1", "10")  # revision 5
        assert ok("get", "a/1", "--rev", "4") == "1\n"
        code, body = http("GET", f"{f}/v1/kv/a%2F1?revision=4")
        assert (code, body["value"], body["mod_revision"], body["revision"]) == (200, 1, 2, 5)

        # After compaction, the old revision is a clear 4xx.
        assert ok("compact", "5").startswith("ok compact_revision=5 revision=5")
        code, body = http("GET", f"{f}/v1/kv/a%2F1?revision=4")
        assert code == 410, body
        assert body == {
            "error": "required revision has been compacted",
            "compact_revision": 5,
            "revision": 5,
        }
        done = c.cli("get", "a/1", "--rev", "4")
        assert done.returncode == 1 and "has been compacted" in done.stderr, done

        # Over the quota: writes get NOSPACE, reads still work.
        refused: tuple[int, Any] | None = None
        for i in range(12):
            code, body = http("PUT", f"{f}/v1/kv/big{i}", BIG)
            if code != 200:
                refused = (code, body)
                break
        assert refused == (507, {"error": "database space exceeded", "alarm": "NOSPACE"})
        wait_alarm(c, "NOSPACE")
        st = c.status(leader)
        assert st is not None and st["size_bytes"] > QUOTA and st["quota_bytes"] == QUOTA
        assert c.metric(leader, "raftkv_store_nospace_alarm") == 1.0
        done = c.cli("put", "a/1", "11")
        assert done.returncode == 1 and "database space exceeded" in done.stderr, done
        assert ok("get", "a/1") == "10\n"
        assert json.loads(ok("get", "--prefix", "big", "--count-only"))["count"] >= 3

        # Deletes and compaction free the space; the alarm clears; writes work again.
        assert ok("delete", "--prefix", "big").startswith("ok deleted=")
        st = c.status(leader)
        assert st is not None and st["alarm"] == "NOSPACE"
        ok("compact", str(st["revision"]))
        wait_alarm(c, None)
        assert c.metric(leader, "raftkv_store_nospace_alarm") == 0.0
        assert ok("put", "a/1", "12").startswith("ok index=")
        code, body = http("GET", f"{f}/v1/kv/a%2F1")
        assert (code, body["value"]) == (200, 12)
        status = c.cli("status").stdout
        assert "alarm=" not in status and f"revision={body['revision']}" in status


def test_status_shows_the_alarm(tmp_path: Path) -> None:
    with proc_cluster(tmp_path, n=1, extra_args=["--quota-bytes", "100"]) as c:
        node = NodeId("n1")
        c.wait_leader()
        code, body = http("PUT", f"{c.url(node)}/v1/kv/k", BIG)
        assert code == 200, body
        wait_alarm(c, "NOSPACE")
        status = c.cli("status")
        assert status.returncode == 0 and "alarm=NOSPACE" in status.stdout, status
        query = urllib.parse.urlencode({"prefix": "k", "keys_only": "true"})
        code, body = http("GET", f"{c.url(node)}/v1/kv?{query}")
        assert code == 200 and [kv["key"] for kv in body["kvs"]] == ["k"], body
