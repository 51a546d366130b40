"""Watch, leases and locks on real nodes (issue 17): the CLI end to end; a watcher
on a follower keeps watching through a leader kill and the loss of its own node
and has every event exactly once; a lock held by a SIGSTOPped client is lost
only after its TTL, and the next holder never overlaps the first one's lease."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from raftkv.client import Client, ClientError
from raftkv.core.types import NodeId
from tests.cluster.harness import REPO_ROOT, ProcCluster, http, proc_cluster


def endpoints(c: ProcCluster, ids: list[NodeId] | None = None) -> list[str]:
    return [f"{c.members[n].api[0]}:{c.members[n].api[1]}" for n in ids or list(c.members)]


def raftkv(c: ProcCluster, *args: str) -> subprocess.Popen[str]:
    """``raftkv --endpoints ... ARGS`` in the background (stdout piped, line-buffered)."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), RAFTKV_ENDPOINTS=",".join(endpoints(c)))
    return subprocess.Popen(
        [sys.executable, "-u", "-m", "raftkv.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
    )


def test_the_cli_watches_grants_renews_and_revokes(tmp_path: Path) -> None:
    with proc_cluster(tmp_path, fsync=False) as c:
        c.wait_leader()
        watch = raftkv(c, "watch", "--prefix", "svc/", "--prev-kv")
        try:
            out = c.cli("lease", "grant", "30")
            assert out.returncode == 0, out.stderr
            lease = out.stdout.split()[1]
            assert out.stdout == f"lease {lease} granted with TTL 30s\n"
            out = c.cli("put", "svc/a", '"10.0.0.1"', "--lease", lease)
            assert out.returncode == 0, out.stderr
            out = c.cli("lease", "ttl", lease, "--keys")
            assert out.stdout.startswith(f"lease {lease} granted with TTL 30s, remaining ")
            assert out.stdout.endswith(", keys: svc/a\n"), out.stdout
            out = c.cli("lease", "keep-alive", lease, "--once")
            assert out.stdout == f"lease {lease} kept alive with TTL 30s\n", out.stderr
            out = c.cli("lease", "list")
            assert out.stdout == f"1 lease(s)\n{lease} (TTL 30s)\n", out.stdout
            out = c.cli("lease", "revoke", lease)
            assert out.returncode == 0 and out.stdout.startswith(f"lease {lease} revoked")
            out = c.cli("lease", "ttl", lease)
            assert out.returncode == 1 and "not found" in out.stderr, out.stderr
            assert watch.stdout is not None
            first = watch.stdout.readline().split(" ", 1)[1]
            second = watch.stdout.readline().split(" ", 1)[1]
            assert first == f'PUT svc/a "10.0.0.1" lease={lease}\n'
            assert second == 'DELETE svc/a (was "10.0.0.1")\n'
        finally:
            watch.send_signal(signal.SIGINT)
            _, err = watch.communicate(timeout=10)
        assert watch.returncode == 130, err


def test_a_watch_on_a_follower_survives_a_leader_kill_and_its_own_node(tmp_path: Path) -> None:
    with proc_cluster(tmp_path, fsync=False) as c:
        leader = c.wait_leader()
        follower, other = [n for n in c.members if n != leader]
        watcher = Client(endpoints(c, [follower, other]), deadline=30.0, timeout=2.0)
        writer = Client(endpoints(c), deadline=30.0, timeout=2.0)
        seen: list[tuple[int, str]] = []
        stop = threading.Event()
        watch = watcher.watch(prefix="w/", start_revision=2)  # a fresh store: every write

        def consume() -> None:
            for response in watch:
                seen.extend((e.revision, e.kv.key) for e in response.events if e.type == "put")

        written = [0]

        def write() -> None:
            while not stop.is_set():
                with contextlib.suppress(ClientError):  # unknown: the final history tells
                    writer.put(f"w/{written[0]}", written[0])
                written[0] += 1
                time.sleep(0.005)

        consumer = threading.Thread(target=consume, daemon=True)
        consumer.start()
        producer = threading.Thread(target=write, daemon=True)
        producer.start()
        time.sleep(0.5)
        c.kill(leader)
        c.wait_leader(among=[follower, other])
        time.sleep(0.5)
        c.start_node(leader)
        time.sleep(1.0)
        c.kill(follower)  # the watched node: the watch resumes on another
        c.wait_leader(among=[leader, other])
        time.sleep(0.5)
        stop.set()
        producer.join()
        final = writer.range(prefix="w/")
        deadline = time.monotonic() + 10
        while len(seen) < final.count and time.monotonic() < deadline:
            time.sleep(0.05)
        watch.close()
        keys = [k for _, k in seen]
        assert len(keys) == len(set(keys)), "an event delivered twice"
        revisions = [r for r, _ in seen]
        assert revisions == sorted(revisions)
        # Every put the cluster kept, once, in revision order (no gap).
        assert sorted(seen) == sorted((kv.mod_revision, kv.key) for kv in final.kvs)
        assert final.count > 50, final.count


def test_a_stopped_lock_holder_loses_the_lock_only_after_its_ttl(tmp_path: Path) -> None:
    ttl = 3
    with proc_cluster(tmp_path, fsync=False) as c:
        c.wait_leader()
        first = raftkv(c, "lock", "jobs/x", "--ttl", str(ttl))
        assert first.stdout is not None
        key = first.stdout.readline().strip()
        assert key.startswith("jobs/x/"), key
        first_lease = int(key.rsplit("/", 1)[1], 16)
        time.sleep(ttl / 2)  # it renews meanwhile
        first.send_signal(signal.SIGSTOP)
        stopped_at = time.monotonic()
        # The next holder checks, while it holds, that the first lease is gone.
        url = c.url(next(iter(c.members))) + f"/v1/leases/{first_lease}"
        second = raftkv(
            c,
            "lock",
            "jobs/x",
            "--ttl",
            str(ttl),
            "--",
            sys.executable,
            "-c",
            "import json, sys, urllib.request, urllib.error\n"
            "try:\n"
            f"    urllib.request.urlopen({url!r}); print('alive')\n"
            "except urllib.error.HTTPError as e: print(e.code)\n",
        )
        out, err = second.communicate(timeout=30)
        acquired_after = time.monotonic() - stopped_at
        assert second.returncode == 0, err
        assert out == "404\n", out  # the first lease had ended
        # It renewed every ttl/3 until stopped: at least 2/3 of a TTL was left.
        assert acquired_after >= 2 * ttl / 3, acquired_after
        assert acquired_after < ttl + 5, acquired_after
        first.send_signal(signal.SIGCONT)
        _, err = first.communicate(timeout=30)  # also closes its pipes
        assert first.returncode == 1 and "lost" in err, err
        code, _ = http("GET", url)
        assert code == 404
