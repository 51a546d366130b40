"""The guard in front of every route but the health probes.

Rule: before any work, a request is refused when -- with
``--client-token-file`` -- it has no known bearer token (401) or has a
read-only token on a write (403), or when ``--max-concurrent-requests`` are in
flight already (503). The status token (``TokenTable.status_token``) opens
``GET /v1/status`` only. A request forwarded over HTTP carries the client's
``Authorization`` header, so the leader checks it again (docs/security.md).
Both front ends call :meth:`Guard.check` and then count the request in
:attr:`Guard.inflight` while it is served.
"""

from __future__ import annotations

import logging
from typing import Final

from raftkv.etcd.gateway import READ_ROUTES
from raftkv.server.config import ServerConfig
from raftkv.server.errors import Forbidden, Overloaded, ServerError, Unauthenticated
from raftkv.server.fasthttp import Answer
from raftkv.server.http.answers import answer_for
from raftkv.server.metrics import NodeMetrics
from raftkv.server.security import bearer_token

__all__ = ["Guard", "Slot", "STATUS_ROUTE", "UNGUARDED"]

logger = logging.getLogger(__name__)

STATUS_ROUTE: Final = "/v1/status"
UNGUARDED: Final = frozenset({"/v1/health/live", "/v1/health/ready", "/", "/health", "/version"})
"""Routes served without a token and outside the concurrency limit (probes)."""
_MAX_LOGGED_REFUSALS: Final = 256


class Guard:
    """The token check and the concurrency limit (one per node's API)."""

    __slots__ = ("metrics", "config", "inflight", "served", "_logged")

    def __init__(self, metrics: NodeMetrics, config: ServerConfig) -> None:
        self.metrics = metrics
        self.config = config
        # Requests being served (every route but the probes). Invariant: each
        # let through adds one while it is served (a watch until it streams).
        self.inflight = 0
        # Requests let through: the dashboard's rate.
        self.served = 0
        self._logged: set[tuple[str, str]] = set()

    def check(
        self, method: str, path: str, authorization: str | None, remote: str
    ) -> Answer | None:
        """The refusal of a guarded request, or None to let it through (then the
        caller counts it in ``inflight`` and ``served`` while it is served)."""
        tokens = self.config.client_tokens
        if tokens is not None:
            token = bearer_token(authorization)
            if token is None:
                return self._refuse(method, path, remote, Unauthenticated("missing bearer token"))
            entry = tokens.lookup(token)
            if entry is None:
                if not (method == "GET" and path == STATUS_ROUTE and tokens.is_status_token(token)):
                    return self._refuse(method, path, remote, Unauthenticated("invalid token"))
            elif method not in ("GET", "HEAD") and path not in READ_ROUTES and not entry.can_write:
                return self._refuse(method, path, remote, Forbidden("this token is read-only"))
        if self.inflight >= self.config.max_concurrent_requests:
            return self._refuse(method, path, remote, Overloaded("too many requests in flight"))
        return None

    def _refuse(self, method: str, path: str, remote: str, exc: ServerError) -> Answer:
        reason = exc.code.value
        self.metrics.refused(reason)
        key = (reason, remote)
        if key not in self._logged and len(self._logged) < _MAX_LOGGED_REFUSALS:
            self._logged.add(key)
            logger.warning("refused %s %s from %s: %s", method, path, remote, exc.message)
        return answer_for(exc)


class Slot:
    """A request's place in the concurrency limit, held while it is served; a
    watch gives it up once it streams (its bound is then the connection
    limit, ``--max-connections``)."""

    __slots__ = ("_guard", "_held")

    def __init__(self, guard: Guard) -> None:
        self._guard = guard
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._guard.inflight -= 1
