"""The old home of the HTTP API, kept for ``raftkv.cli``: see :mod:`raftkv.server.http`."""

from __future__ import annotations

from raftkv.server.http.server import run_event_loop, serve

__all__ = ["run_event_loop", "serve"]
