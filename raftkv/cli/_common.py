"""What the client commands share: the ``--endpoints``, credential and
``--timeout`` options, the calls through :class:`raftkv.client.Client` (and the
small :class:`_Http` client that ``status``, ``members`` and
``transfer-leader`` use), JSON arguments and output, and :func:`_fail`.

Rule: user mistakes and unreachable clusters print one line (no traceback) and
exit 1. The commands that run or talk to real processes import raftkv.server
and raftkv.client lazily, inside the command, so ``raftkv sim`` does not load
aiohttp.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn

import click

DEFAULT_ENDPOINTS = "127.0.0.1:8001,127.0.0.1:8002,127.0.0.1:8003"


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


class _Http:
    """A tiny blocking HTTP client over the cluster's endpoints (stdlib only)."""

    def __init__(self, endpoints: str | None, timeout: float) -> None:
        from raftkv.client import make_ssl_context

        endpoints = endpoints or DEFAULT_ENDPOINTS
        auth = _auth()
        self.ssl = None
        if auth["ca_file"] or auth["cert_file"] or "https://" in endpoints:
            try:
                self.ssl = make_ssl_context(auth["ca_file"], auth["cert_file"], auth["key_file"])
            except ValueError as exc:
                _fail(str(exc))
        scheme = "https://" if self.ssl is not None else "http://"
        self.endpoints = [e.strip().rstrip("/") for e in endpoints.split(",") if e.strip()]
        self.endpoints = [e if "://" in e else scheme + e for e in self.endpoints]
        if not self.endpoints:
            _fail("no endpoints given")
        self.timeout = timeout
        self.headers = {"Authorization": f"Bearer {auth['token']}"} if auth["token"] else {}

    def request(
        self, method: str, path: str, body: object = None, *, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        """Try each endpoint until one answers with something other than 503."""
        import json as _json
        import urllib.error
        import urllib.request

        data = None if body is None else _json.dumps(body).encode()
        last: tuple[int, Any] | None = None
        errors: list[str] = []
        for _attempt in range(3):
            for base in self.endpoints:
                req = urllib.request.Request(base + path, data=data, method=method)
                req.add_header("Content-Type", "application/json")
                for k, v in {**self.headers, **(headers or {})}.items():
                    req.add_header(k, v)
                try:
                    with urllib.request.urlopen(
                        req, timeout=self.timeout, context=self.ssl
                    ) as resp:
                        return resp.status, _decode(resp.read())
                except urllib.error.HTTPError as exc:
                    status, payload = exc.code, _decode(exc.read())
                    if status != 503:
                        return status, payload
                    last = (status, payload)
                except (urllib.error.URLError, OSError) as exc:
                    reason = getattr(exc, "reason", exc)
                    errors.append(f"{base}: {reason}")
            time.sleep(0.3)
        if last is not None:
            return last
        _fail("cluster unreachable (" + "; ".join(errors[: len(self.endpoints)]) + ")")

    def request_one(self, method: str, path: str) -> tuple[int, Any]:
        """One request to the first endpoint; status 0 when it is unreachable."""
        import urllib.error
        import urllib.request

        req = urllib.request.Request(self.endpoints[0] + path, method=method, headers=self.headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self.ssl) as resp:
                return resp.status, _decode(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, _decode(exc.read())
        except (urllib.error.URLError, OSError) as exc:
            return 0, str(getattr(exc, "reason", exc))


def _decode(raw: bytes) -> Any:
    import json as _json

    try:
        return _json.loads(raw) if raw else None
    except ValueError:
        return raw.decode("utf-8", "replace")


def _show(status: int, payload: Any) -> None:
    import json as _json

    if 200 <= status < 300:
        click.echo(_json.dumps(payload, indent=2, sort_keys=True))
        return
    message = payload.get("error") if isinstance(payload, dict) else payload
    _fail(f"{message} (HTTP {status})")


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


def _quote(key: str) -> str:
    from urllib.parse import quote

    return quote(key, safe="")


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
