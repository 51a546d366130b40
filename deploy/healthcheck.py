#!/usr/bin/env python3
"""Container health check: GET the node's /v1/health/live (or /ready) endpoint.

Rule: standard library only -- it runs in the image's HEALTHCHECK, where
nothing but Python is guaranteed. The port comes from ``$RAFTKV_API_ADDR``
(the same variable ``raftkv serve`` reads), so it follows the configuration.
Exit status 0 = healthy, 1 = not (Docker's HEALTHCHECK contract).

    python healthcheck.py            # liveness: the process serves and its Raft loop runs
    python healthcheck.py --ready    # readiness: a leader is known and this node caught up
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def url(api_addr: str, path: str) -> str:
    """The URL of ``path`` on the API listening at ``api_addr`` (HOST:PORT)."""
    host, _, port = api_addr.strip().rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"  # a wildcard bind is reachable on loopback
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}{path}"


def main(argv: list[str]) -> int:
    path = "/v1/health/ready" if "--ready" in argv else "/v1/health/live"
    target = url(os.environ.get("RAFTKV_API_ADDR", "127.0.0.1:8001"), path)
    try:
        with urllib.request.urlopen(target, timeout=3) as resp:
            return 0 if resp.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"unhealthy: {target}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
