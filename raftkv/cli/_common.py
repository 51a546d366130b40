"""What the client commands share: the ``--endpoints``, credential and
``--timeout`` options, the calls through :class:`raftkv.client.Client`, JSON
arguments and output, and :func:`_fail`.

Rule: user mistakes and unreachable clusters print one line (no traceback) and
exit 1. The commands that run or talk to real processes import raftkv.server
and raftkv.client lazily, inside the command, so ``raftkv sim`` does not load
aiohttp.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click

DEFAULT_ENDPOINTS = "127.0.0.1:8001,127.0.0.1:8002,127.0.0.1:8003"


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def _show(payload: Any) -> None:
    """Print an admin answer's JSON."""
    import json as _json

    click.echo(_json.dumps(payload, indent=2, sort_keys=True))


def _scheme(endpoints: str | None) -> str:
    """``https://`` with a CA or client certificate or an https:// endpoint, else ``http://``."""
    auth = _auth()
    https = auth["ca_file"] or auth["cert_file"] or "https://" in (endpoints or "")
    return "https://" if https else "http://"


def _admin_call(endpoints: str | None, timeout: float, call: Callable[[Any], Any]) -> Any:
    """Run ``call(client)`` for an admin command: a refusal prints the node's
    own message and the HTTP status, a cluster that does not answer each
    endpoint's failure."""
    from raftkv.client import Client, ClientError, Unavailable

    auth = _auth()
    try:
        client = Client(endpoints, deadline=timeout, timeout=timeout, **auth)
    except ValueError as exc:
        _fail(str(exc))
    scheme = _scheme(endpoints)
    try:
        return call(client)
    except ClientError as exc:
        if exc.status:  # the node's refusal, or the last 503/504 before the deadline
            _fail(f"{exc.reason} (HTTP {exc.status})")
        if isinstance(exc, Unavailable) and exc.failures:
            failures = "; ".join(f"{scheme}{endpoint}: {error}" for endpoint, error in exc.failures)
            _fail(f"cluster unreachable ({failures})")
        _fail(str(exc))


def _json_arg(text: str, what: str) -> Any:
    import json as _json

    try:
        return _json.loads(text)
    except ValueError:
        raise click.BadParameter(
            f"not JSON: {text!r} (quote strings: '\"text\"')", param_hint=what
        ) from None


_endpoints_flag = click.option(
    "--endpoints",
    envvar="RAFTKV_ENDPOINTS",
    default=None,
    help=f"Comma-separated API addresses HOST:PORT or https://HOST:PORT "
    f"(default: {DEFAULT_ENDPOINTS}).",
)


def _endpoints_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """--endpoints plus the credentials options (every client command takes both)."""
    return _endpoints_flag(_auth_options(f))


_timeout_option = click.option("--timeout", type=float, default=5.0, show_default=True)


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    ctx.meta[f"raftkv.{param.name}"] = value
    return value


def _auth_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--token/--ca-file/--cert-file/--key-file, kept in the click context's meta."""
    for opt in reversed(
        [
            click.option(
                "--token",
                envvar="RAFTKV_TOKEN",
                default=None,
                expose_value=False,
                callback=_remember,
                help="Bearer token for a cluster with --client-token-file (prefer the env var).",
            ),
            click.option(
                "--ca-file",
                envvar="RAFTKV_CA_FILE",
                default=None,
                expose_value=False,
                callback=_remember,
                help="CA certificate to verify the nodes with; turns on HTTPS "
                "(as does an https:// endpoint).",
            ),
            click.option(
                "--cert-file",
                envvar="RAFTKV_CERT_FILE",
                default=None,
                expose_value=False,
                callback=_remember,
                help="Client certificate (PEM), for nodes with --tls-api-client-auth.",
            ),
            click.option(
                "--key-file",
                envvar="RAFTKV_KEY_FILE",
                default=None,
                expose_value=False,
                callback=_remember,
                help="Private key of --cert-file (PEM).",
            ),
        ]
    ):
        f = opt(f)
    return f


def _auth() -> dict[str, Any]:
    """The --token/--ca-file/--cert-file/--key-file of the running command."""
    ctx = click.get_current_context(silent=True)
    meta = ctx.meta if ctx is not None else {}
    return {
        name: meta.get(f"raftkv.{name}") for name in ("token", "ca_file", "cert_file", "key_file")
    }


def _client_call(endpoints: str | None, timeout: float, call: Callable[[Any], Any]) -> Any:
    """Run ``call(client)`` with helper errors turned into one-line messages."""
    from raftkv.client import Client, ClientError

    try:
        client = Client(endpoints, deadline=timeout, timeout=min(timeout, 5.0), **_auth())
    except ValueError as exc:
        _fail(str(exc))
    try:
        return call(client)
    except ClientError as exc:
        _fail(str(exc))


def _show_write(result: Any) -> None:
    click.echo(f"ok index={result.index} revision={result.revision} leader={result.leader}")


def _show_json(body: dict[str, Any]) -> None:
    """Print a JSON object a field per line, and each item of a list field
    (keys, responses) on a line of its own."""
    import json as _json

    def dumps(value: Any) -> str:
        return _json.dumps(value, ensure_ascii=False)

    fields = []
    for name, value in body.items():
        text = dumps(value)
        if isinstance(value, list) and value:
            text = "[\n" + ",\n".join(f"    {dumps(item)}" for item in value) + "\n  ]"
        fields.append(f"  {dumps(name)}: {text}")
    click.echo("{\n" + ",\n".join(fields) + "\n}")


def _kv_text(kv: Any) -> str:
    import json as _json

    return _json.dumps(kv.value, ensure_ascii=False)
