"""Structured logging for real nodes: human text or JSON lines.

Rule: modules log through ``logging.getLogger(__name__)`` and pass structure as
``extra={"fields": {...}}``; only :func:`setup_logging` decides the format.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

__all__ = ["setup_logging", "JsonFormatter", "TextFormatter"]


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, node, msg and any ``fields``."""

    def __init__(self, node_id: str) -> None:
        super().__init__()
        self.node_id = node_id

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "node": self.node_id,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            obj.update(fields)
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        return json.dumps(obj, default=str)


class TextFormatter(logging.Formatter):
    """``2024-01-01T00:00:00.123 INFO n1 raftkv.server.node: message key=value``."""

    def __init__(self, node_id: str) -> None:
        super().__init__()
        self.node_id = node_id

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created))
        line = (
            f"{ts}.{int(record.msecs):03d} {record.levelname:<5} {self.node_id} "
            f"{record.name}: {record.getMessage()}"
        )
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict) and fields:
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(node_id: str, fmt: str = "text", level: str = "INFO") -> None:
    """Send every ``raftkv`` (and aiohttp) log line to stderr in ``fmt``.

    Args:
        node_id: stamped on every line.
        fmt: ``text`` or ``json``.
        level: a level name such as ``INFO`` or ``DEBUG``.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(node_id) if fmt == "json" else TextFormatter(node_id))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # aiohttp's access log is noisy at INFO; keep it for DEBUG runs.
    if level.upper() != "DEBUG":
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
