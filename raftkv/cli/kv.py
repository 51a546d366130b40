"""The key/value commands ``put``, ``get``, ``delete``, ``cas``, ``txn``,
``compact`` and ``watch``: each is a call of :class:`raftkv.client.Client`
and prints its answer.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from raftkv.cli._common import (
    _client_call,
    _endpoints_option,
    _json_arg,
    _kv_text,
    _show_json,
    _show_write,
    _timeout_option,
)


@click.command()
@click.argument("key")
@click.argument("value")
@click.option(
    "--lease",
    type=click.IntRange(0, 2**63 - 1),
    default=0,
    help="Attach KEY to this lease (raftkv lease grant): it is deleted when the lease ends.",
)
@_endpoints_option
@_timeout_option
def put(key: str, value: str, lease: int, endpoints: str | None, timeout: float) -> None:
    """Set KEY to the JSON VALUE (e.g. raftkv put x 7, raftkv put s '"text"')."""
    v = _json_arg(value, "VALUE")
    _show_write(_client_call(endpoints, timeout, lambda c: c.put(key, v, lease=lease)))


def _key_or_prefix(key: str | None, prefix: str | None) -> None:
    if key is None and prefix is None:
        raise click.UsageError("give KEY or --prefix PREFIX")
    if key is not None and prefix is not None:
        raise click.UsageError("give KEY or --prefix PREFIX, not both")


@click.command()
@click.argument("key", required=False)
@click.option("--prefix", default=None, help="List every key starting with PREFIX ('' = all).")
@click.option(
    "--rev",
    "revision",
    type=click.IntRange(0),
    default=0,
    help="Read as of this store revision (a 4xx once compacted away) [default: now].",
)
@click.option("--limit", type=click.IntRange(0), default=0, help="With --prefix: at most N keys.")
@click.option("--keys-only", is_flag=True, help="With --prefix: no values.")
@click.option("--count-only", is_flag=True, help="With --prefix: only the count.")
@click.option("--stale", is_flag=True, help="Serve from the contacted node without a ReadIndex.")
@_endpoints_option
@_timeout_option
def get(
    key: str | None,
    prefix: str | None,
    revision: int,
    limit: int,
    keys_only: bool,
    count_only: bool,
    stale: bool,
    endpoints: str | None,
    timeout: float,
) -> None:
    """Print the JSON value of KEY, or list the keys under --prefix.

    Linearizable unless --stale. With --prefix it prints the JSON answer of
    GET /v1/kv: {"kvs": [{"key", "value", "create_revision", "mod_revision",
    "version"}...], "count", "more", "revision"} ("more": --limit cut the list).
    """
    import json as _json

    _key_or_prefix(key, prefix)
    consistency = "stale" if stale else "linearizable"
    if key is not None:
        if limit or keys_only or count_only:
            raise click.UsageError("--limit, --keys-only and --count-only go only with --prefix")
        value = _client_call(
            endpoints, timeout, lambda c: c.get(key, consistency, revision=revision)
        )
        click.echo(_json.dumps(value))
        return
    listing = _client_call(
        endpoints,
        timeout,
        lambda c: c.range(
            prefix=prefix,
            limit=limit,
            revision=revision,
            keys_only=keys_only,
            count_only=count_only,
            consistency=consistency,
        ),
    )
    kvs = []
    for kv in listing.kvs:
        item = {"key": kv.key, "value": kv.value}
        if keys_only:
            del item["value"]
        item.update(
            create_revision=kv.create_revision, mod_revision=kv.mod_revision, version=kv.version
        )
        kvs.append(item)
    _show_json(
        {"kvs": kvs, "count": listing.count, "more": listing.more, "revision": listing.revision}
    )


@click.command()
@click.argument("key", required=False)
@click.option("--prefix", default=None, help="Delete every key starting with PREFIX ('' = all).")
@_endpoints_option
@_timeout_option
def delete(key: str | None, prefix: str | None, endpoints: str | None, timeout: float) -> None:
    """Delete KEY (an error if it is absent), or every key under --prefix (in
    one revision; none is no error)."""
    _key_or_prefix(key, prefix)
    if key is not None:
        _show_write(_client_call(endpoints, timeout, lambda c: c.delete(key)))
        return
    result = _client_call(endpoints, timeout, lambda c: c.delete_range(prefix=prefix))
    deleted = "?" if result.deleted is None else result.deleted  # a replayed retry
    click.echo(f"ok deleted={deleted} revision={result.revision} leader={result.leader}")


@click.command()
@click.argument("key")
@click.argument("expect")
@click.argument("new")
@_endpoints_option
@_timeout_option
def cas(key: str, expect: str, new: str, endpoints: str | None, timeout: float) -> None:
    """Set KEY to NEW if it holds EXPECT (JSON; null means "absent")."""
    e, n = _json_arg(expect, "EXPECT"), _json_arg(new, "NEW")
    _show_write(_client_call(endpoints, timeout, lambda c: c.cas(key, e, n)))


@click.command()
@click.argument("file", type=click.File("r"), default="-")
@_endpoints_option
@_timeout_option
def txn(file: Any, endpoints: str | None, timeout: float) -> None:
    """Run the transaction in FILE (JSON; '-' or none: stdin) and print the answer.

    The JSON is POST /v1/txn's (docs/api.md): {"compare": [{"key", "target":
    "value|version|create_revision|mod_revision", "op": "==|!=|<|>", "value"}],
    "success": [{"put": {"key", "value"}} | {"delete": {"key"}} | {"range":
    {"key"}}], "failure": [...]}; a range or delete also takes "range_end" or
    "prefix": true. Prints {"succeeded", "revision", "index", "leader",
    "responses"} (a retry the cluster had applied already: "replayed": true
    and no responses); a compare
    that fails is no error (exit 0, "succeeded": false).
    """
    import json as _json

    text = file.read()
    try:
        body = _json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="FILE") from None
    if not isinstance(body, dict):
        raise click.BadParameter("must hold a JSON object", param_hint="FILE")
    for name in body:
        if name not in ("compare", "success", "failure"):
            raise click.BadParameter(
                f"unknown field {name!r} (compare, success, failure)", param_hint="FILE"
            )
    result = _client_call(
        endpoints,
        timeout,
        lambda c: c.txn(body.get("compare", []), body.get("success", []), body.get("failure", [])),
    )
    answer: dict[str, Any] = {
        "succeeded": result.succeeded,
        "revision": result.revision,
        "index": result.index,
        "leader": result.leader,
    }
    if result.replayed:
        answer["replayed"] = True
    else:
        answer["responses"] = list(result.responses)
    _show_json(answer)


@click.command()
@click.argument("revision", type=click.IntRange(1))
@_endpoints_option
@_timeout_option
def compact(revision: int, endpoints: str | None, timeout: float) -> None:
    """Drop the history below REVISION: reads before it fail from then on, and the
    space it held is freed (the NOSPACE alarm clears once the store is back
    under --quota-bytes). REVISION: e.g. the "revision" of `raftkv status`."""
    result = _client_call(endpoints, timeout, lambda c: c.compact(revision))
    click.echo(
        f"ok compact_revision={result.compact_revision} revision={result.revision} "
        f"leader={result.leader}"
    )


def _show_event(event: Any, prev_kv: bool) -> None:
    kv = event.kv
    if event.type == "put":
        line = f"{kv.mod_revision} PUT {kv.key} {_kv_text(kv)}"
        if kv.lease:
            line += f" lease={kv.lease}"
    else:
        line = f"{kv.mod_revision} DELETE {kv.key}"
    if prev_kv and event.prev_kv is not None:
        line += f" (was {_kv_text(event.prev_kv)})"
    click.echo(line)


@click.command()
@click.argument("key", required=False)
@click.option("--prefix", default=None, help="Watch every key starting with PREFIX ('' = all).")
@click.option(
    "--rev",
    "revision",
    type=click.IntRange(0),
    default=0,
    help="Start at this store revision (a 4xx once compacted away) [default: the next one].",
)
@click.option("--prev-kv", is_flag=True, help="Show each key's value before the change.")
@_endpoints_option
@_timeout_option
def watch(
    key: str | None,
    prefix: str | None,
    revision: int,
    prev_kv: bool,
    endpoints: str | None,
    timeout: float,
) -> None:
    """Print every change of KEY (or under --prefix) as it happens, one line each:
    REVISION PUT KEY VALUE, or REVISION DELETE KEY. Reconnects on its own and
    resumes after the last revision printed; Ctrl-C stops.

    --timeout is how long it keeps trying while no node accepts the watch."""

    def run(client: Any) -> None:
        with client.watch(key, prefix=prefix, start_revision=revision, prev_kv=prev_kv) as w:
            for response in w:
                for event in response.events:
                    _show_event(event, prev_kv)

    _key_or_prefix(key, prefix)
    try:
        _client_call(endpoints, timeout, run)
    except KeyboardInterrupt:
        sys.exit(130)
