#!/usr/bin/env python3
"""Send JSON pairs to a raftkv cluster as one atomic multi-put.

    python send.py '{"y": 7}'
    committed {"y": 7} at index 12 (leader n2)

Rule: standard library only (it imports :mod:`raftkv.client`, which is stdlib
only, from this checkout). Every failure -- bad JSON, not an object, an
unreachable cluster -- prints one ``send.py: error: ...`` line to stderr and
exits with status 1; never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from raftkv.client import (
    DEFAULT_ENDPOINTS,
    ENDPOINTS_ENV,
    Client,
    ClientError,
    make_ssl_context,
    parse_endpoints,
)
from raftkv.client._sansio import wants_https


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="send.py",
        description="Send JSON pairs to a raftkv cluster as ONE atomic multi-put "
        "(POST /v1/kv) and print what was committed.",
        epilog=f'example: python send.py \'{{"y": 7, "z": [1, 2]}}\'  '
        f"(endpoints: --endpoints, else ${ENDPOINTS_ENV}, else {','.join(DEFAULT_ENDPOINTS)})",
    )
    parser.add_argument("pairs", metavar="JSON", help="a JSON object of key/value pairs")
    parser.add_argument(
        "--endpoints",
        metavar="HOST:PORT,...",
        default=None,
        help=f"API addresses of the nodes (default: ${ENDPOINTS_ENV} or the local 3-node cluster)",
    )
    parser.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=float,
        default=10.0,
        help="give up after this many seconds, retries included (default: 10)",
    )
    parser.add_argument(
        "--token",
        metavar="TOKEN",
        default=os.environ.get("RAFTKV_TOKEN"),
        help="bearer token for a cluster with --client-token-file (default: $RAFTKV_TOKEN)",
    )
    parser.add_argument(
        "--ca-file",
        metavar="PEM",
        default=os.environ.get("RAFTKV_CA_FILE"),
        help="CA certificate to verify the nodes with; turns on HTTPS (default: $RAFTKV_CA_FILE)",
    )
    parser.add_argument(
        "--cert-file",
        metavar="PEM",
        default=os.environ.get("RAFTKV_CERT_FILE"),
        help="client certificate for --tls-api-client-auth (default: $RAFTKV_CERT_FILE)",
    )
    parser.add_argument(
        "--key-file",
        metavar="PEM",
        default=os.environ.get("RAFTKV_KEY_FILE"),
        help="private key of --cert-file (default: $RAFTKV_KEY_FILE)",
    )
    return parser


def _fail(message: str) -> int:
    print(f"send.py: error: {message}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        pairs = json.loads(args.pairs)
    except ValueError as exc:
        return _fail(f"invalid JSON: {exc}")
    if not isinstance(pairs, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean"}.get(type(pairs), "a scalar")
        return _fail(f'expected a JSON object of pairs like {{"y": 7}}, got {kind}')
    if not pairs:
        return _fail("the JSON object is empty: nothing to send")
    if args.timeout <= 0:
        return _fail("--timeout must be positive")
    auth = {
        "token": args.token,
        "ca_file": args.ca_file,
        "cert_file": args.cert_file,
        "key_file": args.key_file,
    }
    try:
        endpoints = parse_endpoints(args.endpoints)
        if wants_https(args.endpoints):
            auth["ssl_context"] = make_ssl_context(args.ca_file, args.cert_file, args.key_file)
        client = Client(endpoints, deadline=args.timeout, timeout=min(5.0, args.timeout), **auth)
    except ValueError as exc:
        return _fail(str(exc))
    try:
        result = client.multi_put(pairs)
    except ClientError as exc:
        return _fail(str(exc))
    leader = result.leader
    if leader is None:
        try:
            probe = Client([result.endpoint], deadline=min(2.0, args.timeout), timeout=1.0, **auth)
            status = probe.status()
            answer = status.get("leader")
            leader = answer if isinstance(answer, str) and answer else None
        except ClientError:
            pass
    index = "an unknown index" if result.index is None else f"index {result.index}"
    where = f"leader {leader}" if leader else f"via {result.endpoint}"
    print(f"committed {json.dumps(pairs)} at {index} ({where})")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(_fail("interrupted"))
