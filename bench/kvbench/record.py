"""What a result row records beside the numbers: the machine, the run, the system."""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

from context import cpu_model

if TYPE_CHECKING:
    from kvbench.systems import Cluster

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench" / "results" / "kv_bench.jsonl"


def _filesystem(path: Path) -> str:
    """The type of the filesystem holding ``path`` (from /proc/mounts; Linux only)."""
    try:
        mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return "unknown"
    best, fstype = "", "unknown"
    resolved = str(path.resolve())
    for parts in mounts:
        if len(parts) >= 3 and resolved.startswith(parts[1]) and len(parts[1]) > len(best):
            best, fstype = parts[1], parts[2]
    return fstype


def machine_info(data_dir: Path) -> dict[str, Any]:
    return {
        "host": platform.node(),
        "os": f"{platform.system()} {platform.release()}",
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "data_fs": _filesystem(data_dir),
    }


def row_head(base: dict[str, Any], cluster: Cluster, load_before: float) -> dict[str, Any]:
    """The fields every result row starts with: the run's, the system's, when, the load."""
    return {
        **base,
        "system": cluster.name,
        "version": cluster.version(),
        "fsync": cluster.fsync,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "loadavg_1m_before": round(load_before, 2),
        "loadavg_1m_after": round(os.getloadavg()[0], 2),
    }
