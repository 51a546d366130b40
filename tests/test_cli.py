"""The CLI's KV commands for the MVCC store (get --prefix / --rev, delete --prefix,
txn, compact) against scripted fake nodes: what they send and what they print;
and that a command loads only its own module."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from raftkv.cli import main
from tests.client.fakeserver import FakeNode, fake_nodes

KV = {"key": "a/1", "value": 1, "create_revision": 2, "mod_revision": 5, "version": 2}
LISTING = {"kvs": [KV], "count": 3, "more": True, "revision": 7}


def invoke(node: FakeNode, *args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(
        main, [*args, "--endpoints", node.address, "--timeout", "2"], input=stdin
    )


def query(path: str) -> dict[str, list[str]]:
    return urllib.parse.parse_qs(urllib.parse.urlsplit(path).query, keep_blank_values=True)


def test_get_a_prefix_and_a_key_at_a_revision() -> None:
    read = {**KV, "index": 9, "revision": 7}
    with fake_nodes([(200, LISTING), (200, read), (200, LISTING)]) as (node,):
        listed = invoke(node, "get", "--prefix", "a/", "--limit", "1", "--keys-only", "--rev", "6")
        got = invoke(node, "get", "a/1", "--rev", "5")
        counted = invoke(node, "get", "--prefix", "", "--count-only", "--stale")
    assert listed.exit_code == 0, listed.output
    keys_only = {name: value for name, value in KV.items() if name != "value"}
    assert json.loads(listed.output) == {**LISTING, "kvs": [keys_only]}
    assert query(node.seen[0].path) == {
        "prefix": ["a/"],
        "limit": ["1"],
        "revision": ["6"],
        "keys_only": ["true"],
    }
    assert (got.exit_code, got.output) == (0, "1\n")
    assert node.seen[1].path == "/v1/kv/a%2F1?revision=5"
    assert counted.exit_code == 0, counted.output
    assert query(node.seen[2].path) == {
        "prefix": [""],
        "count_only": ["true"],
        "consistency": ["stale"],
    }


def test_get_usage_errors() -> None:
    with fake_nodes([(200, LISTING)]) as (node,):
        for args, words in [
            ((), "give KEY or --prefix"),
            (("k", "--prefix", "a"), "not both"),
            (("k", "--limit", "2"), "only with --prefix"),
            (("k", "--keys-only"), "only with --prefix"),
        ]:
            result = invoke(node, "get", *args)
            assert result.exit_code == 2 and words in result.output, (args, result.output)
        assert node.seen == []


def test_put_and_delete_print_the_revision() -> None:
    write = {"ok": True, "index": 4, "revision": 3, "leader": "n1"}
    deleted = {"ok": True, "deleted": 2, "revision": 8, "index": 11, "leader": "n1"}
    with fake_nodes([(200, write), (200, write), (200, deleted)]) as (node,):
        put = invoke(node, "put", "x", "1")
        delete = invoke(node, "delete", "x")
        prefix = invoke(node, "delete", "--prefix", "a/")
        neither = invoke(node, "delete")
        both = invoke(node, "delete", "x", "--prefix", "a/")
    assert put.output == "ok index=4 revision=3 leader=n1\n"
    assert delete.output == "ok index=4 revision=3 leader=n1\n"
    assert (prefix.exit_code, prefix.output) == (0, "ok deleted=2 revision=8 leader=n1\n")
    assert (node.seen[2].method, query(node.seen[2].path)) == ("DELETE", {"prefix": ["a/"]})
    assert neither.exit_code == 2 and "give KEY or --prefix" in neither.output
    assert both.exit_code == 2 and "not both" in both.output
    assert len(node.seen) == 3


TXN = {
    "compare": [{"key": "x", "target": "value", "op": "==", "value": 1}],
    "success": [{"put": {"key": "y", "value": 2}}],
    "failure": [{"range": {"key": "x"}}],
}


def test_txn_from_a_file_or_stdin(tmp_path: Path) -> None:
    answer: dict[str, Any] = {
        "succeeded": True,
        "revision": 9,
        "index": 12,
        "leader": "n1",
        "responses": [{"put": {"revision": 9}}],
    }
    path = tmp_path / "txn.json"
    path.write_text(json.dumps(TXN))
    with fake_nodes([(200, answer)]) as (node,):
        from_file = invoke(node, "txn", str(path))
        from_dash = invoke(node, "txn", "-", stdin=json.dumps(TXN))
        from_stdin = invoke(node, "txn", stdin=json.dumps({"success": []}))
        bad_json = invoke(node, "txn", stdin="{nope")
        bad_field = invoke(node, "txn", stdin='{"sucess": []}')
        not_object = invoke(node, "txn", stdin="[]")
    assert from_file.exit_code == 0, from_file.output
    assert json.loads(from_file.output) == answer
    assert from_dash.exit_code == 0 and from_stdin.exit_code == 0
    assert [s.body for s in node.seen] == [
        TXN,
        TXN,
        {"compare": [], "success": [], "failure": []},
    ]
    assert all(s.path == "/v1/txn" and s.method == "POST" for s in node.seen)
    assert bad_json.exit_code == 2 and "not JSON" in bad_json.output
    assert bad_field.exit_code == 2 and "unknown field 'sucess'" in bad_field.output
    assert not_object.exit_code == 2 and "JSON object" in not_object.output


def test_compact_and_its_errors() -> None:
    done = {"ok": True, "revision": 9, "compact_revision": 5, "index": 13, "leader": "n1"}
    compacted = {
        "error": "required revision has been compacted",
        "compact_revision": 5,
        "revision": 9,
    }
    with fake_nodes([(200, done), (410, compacted)]) as (node,):
        ok = invoke(node, "compact", "5")
        again = invoke(node, "compact", "5")
        zero = invoke(node, "compact", "0")
    assert (ok.exit_code, ok.output) == (0, "ok compact_revision=5 revision=9 leader=n1\n")
    assert node.seen[0].body == {"revision": 5}
    assert again.exit_code == 1
    assert "required revision has been compacted (compacted to 5, now at 9)" in again.output
    assert zero.exit_code == 2 and len(node.seen) == 2


def test_help_texts_name_the_new_options() -> None:
    runner = CliRunner()
    get = runner.invoke(main, ["get", "--help"]).output
    for words in ("--prefix", "--rev", "--limit", "--keys-only", "--count-only", "--stale"):
        assert words in get
    assert "--prefix" in runner.invoke(main, ["delete", "--help"]).output
    assert "stdin" in runner.invoke(main, ["txn", "--help"]).output
    assert "REVISION" in runner.invoke(main, ["compact", "--help"]).output


def test_cluster_grpc_ports_are_etcds_local_cluster_ports() -> None:
    from raftkv.cli.local_cluster import _etcd_port

    assert [_etcd_port(i, 7000) for i in (1, 2, 3)] == [2379, 22379, 32379]
    # Another --base-port moves them too (parallel clusters on one machine).
    assert [_etcd_port(i, 20000) for i in (1, 2, 3)] == [22001, 22002, 22003]


def test_a_client_command_does_not_import_the_simulator() -> None:
    """Commands load their module when they run: ``raftkv get`` starts without
    the simulator's imports (about 0.3 s)."""
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from raftkv.cli import main\n"
        "assert CliRunner().invoke(main, ['get', '--help']).exit_code == 0\n"
        "print(sorted(m for m in sys.modules if m.startswith('raftkv.sim')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]", out
    assert "sim" in CliRunner().invoke(main, ["--help"]).output.split()
