"""Plot bench/kv_bench.py results: throughput and p99 latency against concurrency, per system.

Reads the JSON lines that bench/kv_bench.py appends to
``bench/results/kv_bench.jsonl``, picks one run (see "Which rows" below) and
draws one PNG: a column per operation present (``put``, linearizable ``get``,
``stale`` get), ops/s on top and p99 latency (log scale) below, concurrency on
a log2 axis, one line per system (raftkv, etcd, a ``--variant`` name, ...).
With several repeats of a point (``--repeat``) the line goes through the
median and the bar spans min..max. Failover rows are ignored. The title gives
the date range (UTC), commit(s), load generator, node count, value size and
fsync setting.

Which rows. Without ``--since``/``--until``/``--commit``: the most recent run.
A run is a maximal block of consecutive lines of the file (kv_bench writes an
invocation's rows together, at its end) that share the commit and the
invocation's settings (load generator, nodes, keys, value size,
heartbeat/election, warmup, host), with no more than 30 minutes between
neighbouring rows and no point (system, op, concurrency, repeat) twice -- so
two invocations back to back at the same commit with the same options are two
runs, while ``--ops put`` then ``--ops get`` at the same commit make one.
``--load`` first keeps the rows of that load generator only (rows without a
``load`` field are ``asyncio``). With ``--since``, ``--until`` or ``--commit``:
every row they (and ``--load``) select, possibly several runs and commits,
reduced to the rows whose load generator, node count and value size match
the newest selected row (the others are counted on stderr), so
one figure never mixes those.

:func:`plot` draws given rows as they are (bench/kv_bench.py can pass the
rows it just measured) and returns the path written.

Usage: python bench/plot_kv.py [--results bench/results/kv_bench.jsonl]
       [--since ISO-DATE-OR-DATETIME] [--until ISO-DATE-OR-DATETIME]
       [--commit PREFIX] [--load asyncio|wrk] [--systems raftkv,etcd,...]
       [--out docs/img/kv_throughput.png] [--title TEXT]

Needs matplotlib (``pip install 'raftkv[bench]'`` or ``pip install
matplotlib``); renders with the Agg backend, no display. The output is
deterministic: same rows, same bytes (no timestamp or software version in the
PNG). Not run by tests.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import statistics
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.typing import RcKeyType

Row = dict[str, Any]

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "kv_bench.jsonl"
OUT = REPO / "docs" / "img" / "kv_throughput.png"

RUN_GAP = datetime.timedelta(minutes=30)
# Fields kv_bench.py writes once per invocation (its ``base`` dict): a change starts a new run.
RUN_FIELDS = (
    "commit",
    "load",
    "nodes",
    "keys",
    "value_bytes",
    "heartbeat_ms",
    "election_ms",
    "warmup_s",
)
# What one figure must not mix (it is in the title once). Not fsync: it is a
# property of each system (PySyncObj never fsyncs), shown in the system's name.
PLOT_FIELDS = ("load", "nodes", "value_bytes")
_ALWAYS_UNSYNCED = frozenset({"pysyncobj", "noop"})

OPS = ("put", "get", "stale")
OP_TITLES = {"put": "put", "get": "get (linearizable)", "stale": "get (stale, any node)"}

# Okabe & Ito's colour-blind-safe palette; markers and dashes differ too, for greyscale.
COLORS = {"raftkv": "#0072B2", "etcd": "#D55E00", "pysyncobj": "#009E73"}
SPARE_COLORS = ("#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "h")
DASHES = ("-", "--", "-.", ":")

TITLE_WIDTH = 100  # characters per line of the generated title
FIGSIZE = (10.0, 6.0)
DPI = 120
FONT: dict[RcKeyType, Any] = {
    "font.size": 9.5,
    "axes.titlesize": 10.5,
    "axes.labelsize": 9.5,
    "legend.fontsize": 9.5,
}

MATPLOTLIB_MISSING = (
    "bench/plot_kv.py needs matplotlib: pip install 'raftkv[bench]' (or pip install matplotlib)"
)


# --------------------------------------------------------------------------- rows


def load_rows(path: Path) -> list[Row]:
    """The JSON lines of ``path``, in file order (blank lines skipped)."""
    rows: list[Row] = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise SystemExit(f"{path}:{n}: not JSON: {e}") from e
    return rows


def parse_when(text: str) -> datetime.datetime:
    """An ISO date or date-time; without a zone it is UTC."""
    when = datetime.datetime.fromisoformat(text)
    return when if when.tzinfo else when.replace(tzinfo=datetime.UTC)


def _date(row: Row) -> datetime.datetime:
    return parse_when(row["date"])


def _load(row: Row) -> str:
    return str(row.get("load", "asyncio"))  # rows from before --load were all asyncio


def _system(row: Row) -> str:
    name = str(row.get("system", "raftkv"))  # rows from before --systems were all raftkv
    if row.get("fsync") is False and name not in _ALWAYS_UNSYNCED:
        name += " (no fsync)"
    return name


def _run_key(row: Row) -> tuple[Any, ...]:
    host = (row.get("machine") or {}).get("host")
    return (*(_load(row) if f == "load" else row.get(f) for f in RUN_FIELDS), host)


def _plot_key(row: Row) -> tuple[Any, ...]:
    return tuple(_load(row) if f == "load" else row.get(f) for f in PLOT_FIELDS)


def _point(row: Row) -> tuple[Any, ...]:
    return (_system(row), row.get("op"), row.get("concurrency"), row.get("repeat", 0))


def split_runs(rows: Sequence[Row]) -> list[list[Row]]:
    """Consecutive rows grouped into runs (see the module docstring), in file order."""
    runs: list[list[Row]] = []
    seen: set[tuple[Any, ...]] = set()
    for row in rows:
        if runs:
            last = runs[-1][-1]
            gap = _date(row) - _date(last)
            same = (
                _run_key(row) == _run_key(last)
                and datetime.timedelta(0) <= gap <= RUN_GAP
                and _point(row) not in seen
            )
        else:
            same = False
        if not same:
            runs.append([])
            seen = set()
        runs[-1].append(row)
        seen.add(_point(row))
    return runs


def select_rows(
    rows: Sequence[Row],
    *,
    since: datetime.datetime | None = None,
    until: datetime.datetime | None = None,
    commit: str | None = None,
    load: str | None = None,
) -> list[Row]:
    """The rows to plot, by the rules of the module docstring (failover rows included)."""
    picked = [r for r in rows if load is None or _load(r) == load]
    if since is None and until is None and commit is None:
        runs = split_runs(picked)
        return runs[-1] if runs else []
    picked = [
        r
        for r in picked
        if (since is None or _date(r) >= since)
        and (until is None or _date(r) < until)
        and (commit is None or str(r.get("commit", "")).startswith(commit))
    ]
    if not picked:
        return []
    newest = max(picked, key=_date)
    keep = [r for r in picked if _plot_key(r) == _plot_key(newest)]
    if len(keep) < len(picked):
        print(
            f"plot_kv: left out {len(picked) - len(keep)} rows whose "
            f"{'/'.join(PLOT_FIELDS)} differ from the newest selected row's "
            f"{'/'.join(map(str, _plot_key(newest)))}",
            file=sys.stderr,
        )
    return keep


# --------------------------------------------------------------------------- figure


def _values(rows: Iterable[Row], field: str) -> list[Any]:
    return list(dict.fromkeys(r.get(field) for r in rows))


def _fmt_set(values: Sequence[Any], fmt: str = "{}") -> str:
    return "/".join(fmt.format(v) for v in values)


def describe(rows: Sequence[Row]) -> str:
    """The generated title: what is compared, then when, where, how (wrapped, plain text)."""
    rows = [r for r in rows if r.get("op") != "failover"]
    systems = list(dict.fromkeys(_system(r) for r in rows))
    dates = sorted(_date(r) for r in rows)
    first, last = dates[0], dates[-1]
    when = f"{first:%Y-%m-%d %H:%M}–" + (
        f"{last:%H:%M}" if last.date() == first.date() else f"{last:%Y-%m-%d %H:%M}"
    )
    commits = [
        str(c)[:8] + ("-dirty" if str(c).endswith("-dirty") else "")
        for c in _values(rows, "commit")
    ]
    loads = [{"asyncio": "asyncio client", "wrk": "wrk"}.get(x, x) for x in map(_load, rows)]
    unsynced = list(dict.fromkeys(_system(r) for r in rows if r.get("fsync") is False))
    synced = any(r.get("fsync") is not False for r in rows)
    fsync = (
        ("fsync on, not " if synced else "no fsync: ") + ", ".join(unsynced)
        if unsynced
        else "fsync on"
    )
    seconds = sorted({round(float(r["seconds"])) for r in rows if r.get("seconds")})
    cpus = _values((r.get("machine") or {} for r in rows), "cpus")
    counts: dict[tuple[str, Any, Any], int] = {}
    for r in rows:
        key = (_system(r), r.get("op"), r.get("concurrency"))
        counts[key] = counts.get(key, 0) + 1
    repeats = sorted(set(counts.values()))
    parts = [
        f"{when} UTC",
        f"commit {', '.join(commits)}" if len(commits) < 4 else f"{len(commits)} commits",
        *([f"{_fmt_set(cpus)} CPUs"] if cpus and None not in cpus else []),
        f"load: {_fmt_set(list(dict.fromkeys(loads)))}",
        f"{_fmt_set(_values(rows, 'nodes'))} nodes",
        f"{_fmt_set(_values(rows, 'value_bytes'))} B values",
        fsync,
        *([f"{_fmt_set(seconds)} s per point"] if seconds else []),
        (
            f"median of {_fmt_set(repeats)} runs, bars min–max"
            if max(repeats) > 1
            else "one run per point"
        ),
    ]
    rounded = {
        (int(r["concurrency"]), int(r["connections"]))
        for r in rows
        if r.get("connections") and r["connections"] != r.get("concurrency")
    }
    if rounded:
        parts.append("wrk connections " + ", ".join(f"{n} for {c}" for c, n in sorted(rounded)))
    failed = sum(1 for r in rows if sum((r.get("errors") or {}).values()))
    if failed:
        parts.append(f"errors in {failed} measurements")
    lines = [f"KV throughput and p99 latency vs concurrency: {' vs '.join(systems)}", ""]
    for part in parts:
        if lines[-1] and len(lines[-1]) + len(part) > TITLE_WIDTH:
            lines.append("")
        lines[-1] += (" · " if lines[-1] else "") + part
    return "\n".join(lines)


def _style(systems: Sequence[str]) -> dict[str, tuple[str, str, str]]:
    """(colour, marker, line style) per system: fixed for the known ones."""
    spare = iter(SPARE_COLORS)
    out: dict[str, tuple[str, str, str]] = {}
    for i, name in enumerate(systems):
        color = COLORS.get(name) or next(spare, "#777777")
        out[name] = (color, MARKERS[i % len(MARKERS)], DASHES[i % len(DASHES)])
    return out


def _matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError as e:
        raise ModuleNotFoundError(MATPLOTLIB_MISSING) from e


def plot(rows: Sequence[Row], out_path: Path | str, title: str | None = None) -> Path:
    """Draw ``rows`` (kv_bench.py result rows) into the PNG ``out_path``; return its path.

    Rows of op ``failover`` (or without ``ops_per_s``) are ignored; the others
    are drawn as given, so pass one run (:func:`select_rows`). ``title``
    defaults to :func:`describe`'s. Raises ValueError when nothing is left to
    draw and ModuleNotFoundError (with the pip command) without matplotlib.
    """
    _matplotlib()
    from matplotlib import rc_context
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    rows = [r for r in rows if r.get("op") != "failover" and r.get("ops_per_s") is not None]
    if not rows:
        raise ValueError("no put/get/stale rows to plot")
    present = list(dict.fromkeys(r["op"] for r in rows))
    ops = [op for op in OPS if op in present] + [op for op in present if op not in OPS]
    systems = list(dict.fromkeys(_system(r) for r in rows))
    style = _style(systems)
    groups: dict[tuple[str, str, int], list[Row]] = {}
    for r in rows:
        groups.setdefault((_system(r), r["op"], int(r["concurrency"])), []).append(r)
    concs = sorted({c for _, _, c in groups})
    repeats = sorted({len(g) for g in groups.values()})

    with rc_context(FONT):
        fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
        axes = fig.subplots(2, len(ops), sharex=True, sharey="row", squeeze=False)
        # Systems side by side at one concurrency: a small dodge on the log2 axis.
        dodge = {s: 2 ** (0.07 * (i - (len(systems) - 1) / 2)) for i, s in enumerate(systems)}
        for col, op in enumerate(ops):
            top: Axes = axes[0][col]
            bottom: Axes = axes[1][col]
            top.set_title(OP_TITLES.get(op, op))
            for system in systems:
                color, marker, dash = style[system]
                points = sorted(
                    (c, g) for (s, o, c), g in groups.items() if s == system and o == op
                )
                if not points:
                    continue
                xs = [c * dodge[system] for c, _ in points]
                for ax, field in ((top, "ops_per_s"), (bottom, "p99_ms")):
                    vals = [[float(r[field]) for r in g] for _, g in points]
                    mid = [statistics.median(v) for v in vals]
                    below = [m - min(v) for m, v in zip(mid, vals, strict=True)]
                    above = [max(v) - m for m, v in zip(mid, vals, strict=True)]
                    ax.errorbar(
                        xs,
                        mid,
                        yerr=[below, above] if max(repeats) > 1 else None,
                        color=color,
                        marker=marker,
                        linestyle=dash,
                        linewidth=1.8,
                        markersize=6,
                        capsize=3,
                        label=system if (ax is top and col == 0) else None,
                    )
            for ax in (top, bottom):
                ax.set_xscale("log", base=2)
                ax.xaxis.set_major_locator(FixedLocator(concs))
                ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
                ax.xaxis.set_minor_locator(NullLocator())
                ax.set_xlim(min(concs) / 1.6, max(concs) * 1.6)
                ax.grid(True, which="major", color="#dddddd", linewidth=0.8)
                ax.set_axisbelow(True)
            bottom.set_yscale("log")
            bottom.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
            bottom.set_xlabel("concurrency (clients in a closed loop)")
        axes[0][0].set_ylim(bottom=0)
        axes[0][0].yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:,.0f}"))
        axes[0][0].set_ylabel("ops/s")
        p99 = [float(r["p99_ms"]) for r in rows if r.get("p99_ms") is not None]
        p99 = [v for v in p99 if math.isfinite(v) and v > 0]  # NaN: a point with no answers
        if p99:
            low, high = min(p99) / 1.25, max(p99) * 1.25
            axes[1][0].set_ylim(low, high)
            axes[1][0].yaxis.set_major_locator(FixedLocator(_ticks_125(low, high)))
            axes[1][0].yaxis.set_minor_locator(NullLocator())
        axes[1][0].set_ylabel("p99 latency, ms (log)")
        fig.suptitle(title if title is not None else describe(rows))
        fig.legend(loc="outside lower center", ncols=len(systems), frameon=False)
        out = Path(out_path)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, format="png", metadata={"Software": None})
    return out


def _ticks_125(low: float, high: float) -> list[float]:
    """1-2-5 ticks within [low, high] for a log axis; finer steps if that gives fewer than 2."""
    ticks: list[float] = []
    for mantissas in ((1, 2, 5), (1, 1.5, 2, 3, 4, 5, 6, 8)):
        ticks = []
        exp = math.floor(math.log10(low))
        while 10**exp <= high:
            ticks += [m * 10**exp for m in mantissas if low <= m * 10**exp <= high]
            exp += 1
        if len(ticks) >= 2:
            break
    return ticks


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS, help="kv_bench.py's JSON lines")
    parser.add_argument(
        "--since", type=parse_when, help="rows dated at or after this ISO date/time (UTC)"
    )
    parser.add_argument("--until", type=parse_when, help="rows dated before this ISO date/time")
    parser.add_argument("--commit", help="rows whose commit starts with this prefix")
    parser.add_argument(
        "--load", choices=("asyncio", "wrk"), help="rows of this load generator only"
    )
    parser.add_argument(
        "--systems",
        help="comma-separated systems to draw (default: all); e.g. leave out noop, whose"
        " ceiling under wrk dwarfs the rest",
    )
    parser.add_argument("--out", type=Path, default=OUT, help="the PNG to write")
    parser.add_argument("--title", help="instead of the generated two-line title")
    args = parser.parse_args(argv)
    rows = select_rows(
        load_rows(args.results),
        since=args.since,
        until=args.until,
        commit=args.commit,
        load=args.load,
    )
    measured = [r for r in rows if r.get("op") != "failover"]
    if args.systems:
        wanted = {x.strip() for x in args.systems.split(",") if x.strip()}
        measured = [r for r in measured if _system(r) in wanted]
    if not measured:
        raise SystemExit(f"plot_kv: no put/get/stale rows selected from {args.results}")
    try:
        out = plot(measured, args.out, args.title)
    except ModuleNotFoundError as e:
        raise SystemExit(str(e)) from e
    details = " · ".join(describe(measured).splitlines()[1:])
    print(f"plot_kv: {len(measured)} rows ({details}) -> {out}")


if __name__ == "__main__":
    main()
