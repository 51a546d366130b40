"""Secrets, client tokens and TLS contexts of one node (docs/security.md).

Rule 1: every file is read once, at start, and every mistake in one is a
:class:`~raftkv.server.errors.ConfigError` naming the file and line -- never a
traceback, and never the secret itself.

Rule 2: secrets are compared in constant time. A token lookup compares the
presented token's SHA-256 with *every* known token's (:func:`hmac.compare_digest`,
no early exit), so timing reveals neither a token nor how many characters of
one were right.

Token file format (``--client-token-file``), one token per line, ``#`` comments::

    # ROLE  TOKEN                             [NAME]
    rw      3f1c0d...(at least 16 characters)  deploy-bot
    ro      9ab2e4...                          grafana

``rw`` tokens may read and write; ``ro`` tokens may only read (``GET``). Tokens
are printable ASCII without spaces; the optional name appears in logs.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import ssl
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from raftkv.server.errors import ConfigError

if TYPE_CHECKING:
    from raftkv.server.config import ServerConfig

__all__ = [
    "MIN_SECRET_BYTES",
    "MIN_TOKEN_CHARS",
    "ROLE_READ",
    "ROLE_WRITE",
    "ClientToken",
    "TokenTable",
    "bearer_token",
    "read_secret_file",
    "secret_file_is_exposed",
    "read_token_file",
    "read_request_token",
    "parse_tokens",
    "server_ssl_context",
    "client_ssl_context",
    "peer_ssl_contexts",
    "api_ssl_contexts",
]

MIN_SECRET_BYTES: Final = 16
"""Shortest cluster secret accepted from a file (``openssl rand -hex 32`` gives 64)."""
MIN_TOKEN_CHARS: Final = 16
"""Shortest client token accepted."""
ROLE_READ: Final = "ro"
ROLE_WRITE: Final = "rw"
_ROLES: Final = (ROLE_READ, ROLE_WRITE)


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what} {path}: {exc.strerror or exc}") from None


def _group_or_world_readable(path: str) -> bool:
    try:
        return bool(os.stat(path).st_mode & (stat.S_IRWXG | stat.S_IRWXO))
    except OSError:
        return False


def read_secret_file(path: str) -> bytes:
    """The cluster secret in ``path``: its bytes without trailing whitespace.

    Raises:
        ConfigError: unreadable, or shorter than :data:`MIN_SECRET_BYTES`.
    """
    secret = _read(path, "--cluster-secret-file").rstrip()
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"--cluster-secret-file {path}: the secret must be at least {MIN_SECRET_BYTES} "
            f"bytes (got {len(secret)}); generate one with `openssl rand -hex 32`"
        )
    return secret


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientToken:
    """One client token: its SHA-256 (the token itself is not kept), role and name."""

    digest: bytes
    role: str
    name: str

    @property
    def can_write(self) -> bool:
        return self.role == ROLE_WRITE

    @property
    def owner(self) -> str:
        """The token's name for the sessions it creates (``Session.owner``).

        The first 16 hex digits of SHA-256 over the stored digest: the same on
        every node with the same token file, independent of the token's position
        and name, and of no use for finding the token.
        """
        return hashlib.sha256(self.digest).hexdigest()[:16]


class TokenTable:
    """The tokens of ``--client-token-file``; :meth:`lookup` runs in constant time."""

    __slots__ = ("_tokens", "status_token")

    def __init__(self, tokens: tuple[ClientToken, ...]) -> None:
        if not tokens:
            raise ValueError("a token table needs at least one token")
        self._tokens = tokens
        # What members send each other for GET /v1/status (the dashboard's
        # /v1/cluster), instead of the client's token: derived from the table,
        # so every node with the same token file knows it, and good for that
        # one route only -- a member address that is not what it claims (a
        # learner added with an address of someone's choosing) learns nothing
        # a status page does not show.
        key = b"".join(sorted(t.digest for t in tokens))
        self.status_token = hmac.new(key, b"raftkv member status v1", "sha256").hexdigest()

    def __len__(self) -> int:
        return len(self._tokens)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TokenTable) and self._tokens == other._tokens

    def __hash__(self) -> int:
        return hash(self._tokens)

    def __repr__(self) -> str:  # never shows a digest
        return f"TokenTable({len(self._tokens)} tokens)"

    def lookup(self, token: str) -> ClientToken | None:
        """The entry for ``token``, or None; compares against every entry."""
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        found: ClientToken | None = None
        for entry in self._tokens:
            if hmac.compare_digest(entry.digest, digest):
                found = entry
        return found

    def is_status_token(self, token: str) -> bool:
        """Whether ``token`` is :attr:`status_token` (constant time)."""
        return hmac.compare_digest(
            token.encode("utf-8", "surrogateescape"), self.status_token.encode()
        )


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header value, or None."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def parse_tokens(text: str, *, source: str = "--client-token-file") -> TokenTable:
    """Parse the token file format of the module docstring.

    Raises:
        ConfigError: a malformed line, an unknown role, a short or duplicate
            token, or no token at all.
    """
    entries: list[ClientToken] = []
    seen: set[bytes] = set()
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        where = f"{source} line {number}"
        if len(parts) not in (2, 3):
            raise ConfigError(f"{where}: expected ROLE TOKEN [NAME]")
        role, token = parts[0].lower(), parts[1]
        if role not in _ROLES:
            raise ConfigError(f"{where}: role must be ro or rw, not {parts[0]!r}")
        if len(token) < MIN_TOKEN_CHARS or not token.isascii() or not token.isprintable():
            raise ConfigError(
                f"{where}: a token must be at least {MIN_TOKEN_CHARS} printable ASCII characters"
            )
        digest = hashlib.sha256(token.encode()).digest()
        if digest in seen:
            raise ConfigError(f"{where}: duplicate token")
        seen.add(digest)
        name = parts[2] if len(parts) == 3 else f"token{len(entries) + 1}"
        entries.append(ClientToken(digest=digest, role=role, name=name))
    if not entries:
        raise ConfigError(f"{source}: no tokens")
    return TokenTable(tuple(entries))


def read_token_file(path: str) -> TokenTable:
    """Read and parse ``--client-token-file``.

    Raises:
        ConfigError: unreadable or malformed.
    """
    raw = _read(path, "--client-token-file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"--client-token-file {path}: not UTF-8") from None
    return parse_tokens(text, source=f"--client-token-file {path}")


def read_request_token(path: str) -> str:
    """A token of ``--client-token-file`` for the node's own requests to its peers' APIs.

    The first read-only token (all such a request needs: a ``GET``), else the
    first. Used by a StatefulSet pod that asks the members which id to run as
    (:mod:`raftkv.server.identity`); the node serves with :func:`read_token_file`.

    Raises:
        ConfigError: unreadable or malformed (the same checks as :func:`read_token_file`).
    """
    read_token_file(path)  # validates every line
    tokens: list[tuple[str, str]] = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        parts = line.split("#", 1)[0].split()
        if parts:
            tokens.append((parts[0].lower(), parts[1]))
    return next((t for role, t in tokens if role == ROLE_READ), tokens[0][1])


def secret_file_is_exposed(path: str) -> bool:
    """Whether group or others may read (or write) ``path`` (worth a warning)."""
    return _group_or_world_readable(path)


def server_ssl_context(
    cert_file: str, key_file: str, ca_file: str | None, *, require_client_cert: bool
) -> ssl.SSLContext:
    """A TLS 1.2+ server context; with ``require_client_cert``, mutual TLS against ``ca_file``.

    Raises:
        ConfigError: a file is unreadable or not a matching certificate/key/CA.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"--tls-cert/--tls-key ({cert_file}, {key_file}): {exc}") from None
    if require_client_cert:
        if ca_file is None:
            raise ConfigError("requiring client certificates needs --tls-ca")
        _load_ca(ctx, ca_file)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_ssl_context(
    ca_file: str | None, cert_file: str | None = None, key_file: str | None = None
) -> ssl.SSLContext:
    """A TLS client context verifying the server (and its host name) against ``ca_file``.

    ``ca_file=None`` trusts the system's CAs. ``cert_file``/``key_file`` present a
    client certificate (mutual TLS).

    Raises:
        ConfigError: a file is unreadable or invalid.
    """
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file is not None:
        _load_ca(ctx, ca_file)
    if cert_file is not None:
        try:
            ctx.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"client certificate ({cert_file}, {key_file}): {exc}") from None
    return ctx


def _load_ca(ctx: ssl.SSLContext, ca_file: str) -> None:
    try:
        ctx.load_verify_locations(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"--tls-ca {ca_file}: {exc}") from None


def peer_ssl_contexts(
    config: ServerConfig,
) -> tuple[ssl.SSLContext | None, ssl.SSLContext | None]:
    """(server, client) contexts for mutual TLS between peers; (None, None) without TLS.

    Both sides present this node's certificate and verify the other's against
    ``--tls-ca``, host name included: a member's certificate must name the host
    of its ``raft_addr`` (a DNS name or an IP address in subjectAltName).
    """
    if not config.tls:
        return None, None
    assert config.tls_cert_file and config.tls_key_file and config.tls_ca_file
    server = server_ssl_context(
        config.tls_cert_file, config.tls_key_file, config.tls_ca_file, require_client_cert=True
    )
    client = client_ssl_context(config.tls_ca_file, config.tls_cert_file, config.tls_key_file)
    return server, client


def api_ssl_contexts(
    config: ServerConfig,
) -> tuple[ssl.SSLContext | None, ssl.SSLContext | None]:
    """(server, client) contexts for the HTTP API and for forwarding to the leader's API.

    The server requires client certificates only with ``--tls-api-client-auth``;
    forwarding always presents this node's certificate.
    """
    if not config.tls:
        return None, None
    assert config.tls_cert_file and config.tls_key_file and config.tls_ca_file
    server = server_ssl_context(
        config.tls_cert_file,
        config.tls_key_file,
        config.tls_ca_file,
        require_client_cert=config.tls_api_client_auth,
    )
    client = client_ssl_context(config.tls_ca_file, config.tls_cert_file, config.tls_key_file)
    return server, client
