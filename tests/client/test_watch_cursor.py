"""The watch cursor (raftkv.client._watch): stream lines in, responses out, and
where a reopened stream starts -- no gap, no duplicate, compaction is final."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from raftkv.client._watch import StreamLost, WatchCursor
from raftkv.client.errors import BadRequest, Compacted


def cursor(**kwargs: Any) -> WatchCursor:
    args: dict[str, Any] = {
        "prefix": "a/",
        "key": None,
        "range_end": None,
        "start_revision": 0,
        "prev_kv": False,
        "filters": (),
        "progress_notify": True,
    }
    args.update(kwargs)
    return WatchCursor.of(**args)


def line(**body: Any) -> bytes:
    return json.dumps(body).encode() + b"\n"


def put(key: str, rev: int, value: Any = 1) -> dict[str, Any]:
    kv = {"key": key, "value": value, "create_revision": rev, "mod_revision": rev, "version": 1}
    return {"type": "put", "kv": {**kv, "lease": 0}}


def query(c: WatchCursor) -> dict[str, str]:
    request = c.request()
    parts = urlsplit(request.path)
    assert parts.path == "/v1/watch"
    return dict(parse_qsl(parts.query))


def test_the_first_stream_starts_now_and_the_next_after_the_last_delivered() -> None:
    c = cursor(prev_kv=True, filters=("nodelete",))
    assert query(c) == {
        "prefix": "a/",
        "prev_kv": "true",
        "filters": "nodelete",
        "progress_notify": "true",
    }
    assert c.feed(line(watch_id=1, created=True, revision=7)) is None
    assert c.next_revision == 8
    r = c.feed(line(watch_id=1, revision=9, events=[put("a/x", 8), put("a/y", 9)]))
    assert r is not None and [e.kv.key for e in r.events] == ["a/x", "a/y"]
    assert r.revision == 9 and not r.progress and r.events[0].revision == 8
    assert c.next_revision == 10
    assert query(c)["start_revision"] == "10"
    # Reopened: the new stream's created line does not move the cursor back.
    assert c.feed(line(watch_id=4, created=True, revision=12)) is None
    assert c.next_revision == 10 and c.watch_id == 4


def test_events_already_delivered_are_dropped_and_progress_moves_the_cursor() -> None:
    c = cursor(start_revision=5)
    assert query(c)["start_revision"] == "5"
    r = c.feed(line(watch_id=1, revision=6, events=[put("a/x", 5), put("a/x", 6)]))
    assert r is not None and [e.revision for e in r.events] == [5, 6]
    # A server that repeated revision 6 (it never should): delivered once.
    r = c.feed(line(watch_id=1, revision=7, events=[put("a/x", 6), put("a/y", 7)]))
    assert r is not None and [e.revision for e in r.events] == [7]
    assert c.feed(line(watch_id=1, revision=7, events=[put("a/y", 7)])) is None
    p = c.feed(line(watch_id=1, revision=20, events=[], progress=True))
    assert p is not None and p.progress and p.revision == 20 and p.events == ()
    assert c.next_revision == 21
    # An older progress notification says nothing new.
    assert c.feed(line(watch_id=1, revision=15, events=[], progress=True)) is None
    assert c.feed(b"\n") is None and c.feed(b"") is None  # keep-alive lines


def test_a_compacted_cancel_is_final_other_cancels_reopen() -> None:
    c = cursor(start_revision=3)
    with pytest.raises(StreamLost, match="no leader"):
        c.feed(line(watch_id=1, revision=9, events=[], canceled=True, cancel_reason="no leader"))
    assert c.next_revision == 3
    with pytest.raises(Compacted) as info:
        c.feed(
            line(
                watch_id=2,
                revision=9,
                events=[],
                canceled=True,
                cancel_reason="compacted",
                compact_revision=6,
            )
        )
    assert info.value.compact_revision == 6
    with pytest.raises(StreamLost):
        c.feed(b"not json\n")


def test_bad_arguments_are_refused_before_sending() -> None:
    with pytest.raises(BadRequest):
        cursor(prefix=None)
    with pytest.raises(BadRequest):
        cursor(key="k")  # both key and prefix
    with pytest.raises(BadRequest):
        cursor(start_revision=-1)
    with pytest.raises(BadRequest, match="filter"):
        cursor(filters=("noputs",))
    c = cursor(prefix=None, key="k", range_end="l", progress_notify=False)
    assert query(c) == {"key": "k", "range_end": "l"}
