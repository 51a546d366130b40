"""The markdown table of a run: one line per point, each system's numbers side by side."""

from __future__ import annotations

from typing import Any


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """One line per (op, concurrency): each system's ops/s, p50, p99, and raftkv/other ratios.

    With several runs of a point (``--repeat``) each cell shows the run of
    median throughput; with an even number of runs, the lower of the middle
    two (use an odd ``--repeat``).
    """
    systems = list(dict.fromkeys(r["system"] for r in rows))
    points = list(dict.fromkeys((r["op"], r.get("concurrency")) for r in rows))
    runs: dict[tuple[str, str, int | None], list[dict[str, Any]]] = {}
    for row in rows:
        runs.setdefault((row["system"], row["op"], row.get("concurrency")), []).append(row)
    # With --repeat, each cell shows the run of median throughput (the lower median).
    by: dict[tuple[str, str, int | None], dict[str, Any] | None] = {
        k: sorted(v, key=lambda r: float(r.get("ops_per_s", 0.0)))[(len(v) - 1) // 2]
        for k, v in runs.items()
    }
    head = ["op", "conc"]
    for sy in systems:
        head += [f"{sy} ops/s", f"{sy} p50 ms", f"{sy} p99 ms"]
    others = [sy for sy in systems if sy != "raftkv"]
    if "raftkv" in systems:
        head += [f"ops ratio raftkv/{sy}" for sy in others]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for op, conc in points:
        if op == "failover":
            cells = ["leader kill -9 → first write", ""]
            for sy in systems:
                r = by.get((sy, op, conc))
                cells += [f"median {r['median_s']:.3f} s" if r else "", "", ""]
            if "raftkv" in systems:
                cells += [""] * len(others)
        else:
            cells = [op, str(conc)]
            for sy in systems:
                r = by.get((sy, op, conc))
                cells += (
                    [f"{r['ops_per_s']:,.0f}", f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.1f}"]
                    if r
                    else ["", "", ""]
                )
            if "raftkv" in systems:
                mine = by.get(("raftkv", op, conc))
                for sy in others:
                    theirs = by.get((sy, op, conc))
                    ok = mine and theirs and theirs["ops_per_s"]
                    cells.append(
                        f"{mine['ops_per_s'] / theirs['ops_per_s']:.2f}×"  # type: ignore[index]
                        if ok
                        else ""
                    )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
