"""Reports over a recording: the metrics the vendor's docs say to watch, from the ledger.

``mavera-tui report FILE [--json] [--since T] [--until T]`` opens the store read-only and
computes, from the ledger (every attempt) and the recorded snapshots (queue depth):
credits (total, per endpoint, estimated vs actual), 402s, 429s, retries, the
X-RateLimit-Remaining distribution, requests per minute (mean, peak; per endpoint), queue
depth and the makespan of each batch, with plotext charts. Where retention (``record
--keep``) dropped old ledger rows, their daily totals (requests, 429s, 402s, credits,
retries per endpoint) are added in, and the report names those days. A recording made
with ``--shared`` also gives the fleet's totals (every process on the key, from the ledger
stream it archived: ``recording/fleet.py``), labelled apart from its own. Reads through
``recording.reader``; ``--since``/``--until`` are in the one time grammar (timespec.py).
Never imports textual.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sqlite3
import sys
from datetime import datetime
from typing import Any

from .fleet import OWN_LABEL, fleet_totals, render_fleet
from .reader import Recording

#: Two requests further apart than this (seconds, idle in between) are in different batches.
BATCH_GAP = 60.0


def _pct(sorted_vals: list[float], p: float) -> float | None:
    """Nearest-rank percentile of sorted values."""
    if not sorted_vals:
        return None
    k = max(0, min(len(sorted_vals) - 1, math.ceil(p / 100 * len(sorted_vals)) - 1))
    return sorted_vals[k]


def _peak_per_window(times: list[float], window: float = 60.0) -> int:
    """Most events in any ``window``-second interval (times sorted)."""
    best = 0
    j = 0
    for i, t in enumerate(times):
        while times[j] <= t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


def _rpm(times: list[float], span: float) -> dict[str, float]:
    minutes = max(span, 60.0) / 60.0
    return {"mean": round(len(times) / minutes, 2), "peak": _peak_per_window(times)}


def _batches(rows: list[tuple[float, float, str]], gap: float) -> list[dict[str, Any]]:
    """Busy periods: job attempts [sent, done] merged while the idle gap is <= ``gap``."""
    out: list[dict[str, Any]] = []
    cur: dict[str, Any] | None = None
    for t, t_done, job in sorted(rows):
        if cur is None or t > cur["end"] + gap:
            cur = {"start": t, "end": t_done, "requests": 0, "_jobs": set()}
            out.append(cur)
        cur["end"] = max(cur["end"], t_done)
        cur["requests"] += 1
        cur["_jobs"].add(job)
    for b in out:
        b["jobs"] = len(b.pop("_jobs"))
        b["makespan_s"] = round(b["end"] - b["start"], 3)
        b["start"] = round(b["start"], 3)
        b["end"] = round(b["end"], 3)
    return out


async def build_report(
    path: str,
    since: str | float | None = None,
    until: str | float | None = None,
    batch_gap: float = BATCH_GAP,
) -> dict[str, Any]:
    """The report as a JSON-able dict. Raises StoreError for files it cannot read and
    ValueError for a bad --since/--until (read in the one time grammar, timespec.py)."""
    async with await Recording.open(path) as rec:
        return await _build(rec, since, until, batch_gap)


_LEDGER = (
    "t",
    "t_done",
    "job_id",
    "endpoint",
    "attempt",
    "status",
    "kind",
    "credits_used",
    "estimate",
    "rl_limit",
    "rl_remaining",
)


async def _build(rec: Recording, since: Any, until: Any, batch_gap: float) -> dict[str, Any]:
    meta = rec.meta
    first, last = await rec.bounds()
    lo, hi = await rec.parse_range(since, until)
    rows = await rec.ledger(_LEDGER, lo, hi)
    snaps = await rec.snapshots(lo, hi)
    daily = await rec.daily_totals(lo, hi)

    credits_total = 0
    by_ep: dict[str, dict[str, Any]] = {}
    est: dict[str, dict[str, Any]] = {}
    remaining: list[float] = []
    times: list[float] = []
    c402 = c429 = retries = 0
    limits: list[int] = []
    batch_rows = []
    for t, t_done, job, ep, attempt, status, kind, credits, estimate, rl_lim, rl_rem in rows:
        e = by_ep.setdefault(
            ep, {"requests": 0, "credits_used": 0, "429": 0, "402": 0, "retries": 0, "_times": []}
        )
        e["requests"] += 1
        e["_times"].append(t)
        times.append(t)
        credits_total += credits or 0
        e["credits_used"] += credits or 0
        if status == 402:
            c402 += 1
            e["402"] += 1
        if status == 429:
            c429 += 1
            e["429"] += 1
        if job is not None:
            batch_rows.append((t, t_done, job))
            if attempt and attempt > 1:
                retries += 1
                e["retries"] += 1
            if kind == "ok":
                x = est.setdefault(ep, {"jobs": 0, "estimated": 0, "actual": 0})
                x["jobs"] += 1
                x["estimated"] += estimate or 0
                x["actual"] += credits or 0
        if rl_rem is not None:
            remaining.append(rl_rem)
        if rl_lim is not None:
            limits.append(rl_lim)
    for x in est.values():
        x["ratio"] = round(x["actual"] / x["estimated"], 3) if x["estimated"] else None
    start_t = times[0] if times else (snaps[0].t if snaps else None)
    end_t = max((r[1] for r in rows), default=None) if rows else (snaps[-1].t if snaps else None)
    span = (end_t - start_t) if start_t is not None and end_t is not None else 0.0
    remaining.sort()
    limit = limits[-1] if limits else (snaps[-1].limit if snaps else None)
    depth = [s.queue_depth for s in snaps]
    in_flight = [s.in_flight for s in snaps]
    jobs_by_state = await rec.jobs_by_state()
    rpm_by_ep = {}
    for ep, e in by_ep.items():
        rpm_by_ep[ep] = _rpm(e.pop("_times"), span)
    # Days that retention folded into totals: their counts add to the ledger's (a request
    # is in exactly one of the two), their timing (rates, batches) is gone.
    requests_total = len(rows)
    for d in daily:
        e = by_ep.setdefault(
            d["endpoint"], {"requests": 0, "credits_used": 0, "429": 0, "402": 0, "retries": 0}
        )
        e["requests"] += d["requests"]
        e["credits_used"] += d["credits"]
        e["429"] += d["r429"]
        e["402"] += d["r402"]
        requests_total += d["requests"]
        credits_total += d["credits"]
        c429 += d["r429"]
        c402 += d["r402"]
        retries += d["retries"]
    days = sorted({d["day"] for d in daily})
    fleet = await fleet_totals(rec, lo, hi)
    return {
        "file": str(rec.path),
        "schema_version": rec.schema_version,
        "snapshot_encoding": meta.get("snapshot_encoding"),
        "target": meta.get("recorded_target"),
        "since": lo,
        "until": hi,
        "start": start_t,
        "end": end_t,
        "duration_s": round(span, 3),
        "recording": {"first": first, "last": last, "snapshots": len(snaps)},
        "requests_total": requests_total,
        "from_daily_totals": {"days": days, "requests": sum(d["requests"] for d in daily)},
        "credits_used_total": credits_total,
        "credits_used_by_endpoint": {k: v["credits_used"] for k, v in sorted(by_ep.items())},
        "402_count": c402,
        "429_count": c429,
        "429_by_endpoint": {k: v["429"] for k, v in sorted(by_ep.items()) if v["429"]},
        "retry_count": retries,
        "estimated_vs_actual": dict(sorted(est.items())),
        "rate_limit_limit": limit,
        "rate_limit_remaining": {
            "min": remaining[0] if remaining else None,
            "p5": _pct(remaining, 5),
            "median": _pct(remaining, 50),
            "samples": len(remaining),
        },
        "requests_per_minute": {
            **_rpm(times, span),
            "limit": limit,
            "by_endpoint": dict(sorted(rpm_by_ep.items())),
        },
        "requests_by_endpoint": {k: v["requests"] for k, v in sorted(by_ep.items())},
        "queue_depth": {
            "max": max(depth, default=0),
            "mean": round(sum(depth) / len(depth), 2) if depth else 0.0,
            "in_flight_max": max(in_flight, default=0),
        },
        "batches": _batches(batch_rows, batch_gap),
        "jobs_by_state": jobs_by_state,
        # With --shared: every process on the key (the totals above are this process's).
        "fleet": fleet,
        "_series": _series(rows, snaps, start_t),
    }


def _series(rows: list[tuple], snaps: list[Any], start: float | None) -> dict[str, Any]:
    """Per-minute series for the charts (minutes since ``start``)."""
    if start is None:
        return {}
    credits: dict[int, int] = {}
    reqs: dict[int, int] = {}
    for r in rows:
        m = int((r[1] - start) // 60)
        credits[m] = credits.get(m, 0) + (r[7] or 0)
        mr = int((r[0] - start) // 60)
        reqs[mr] = reqs.get(mr, 0) + 1
    queue: dict[int, int] = {}
    for s in snaps:
        m = int((s.t - start) // 60)
        queue[m] = max(queue.get(m, 0), s.queue_depth)
    n = max([*credits, *reqs, *queue, 0]) + 1
    return {
        "minutes": list(range(n)),
        "credits": [credits.get(i, 0) for i in range(n)],
        "requests": [reqs.get(i, 0) for i in range(n)],
        "queue": [queue.get(i, 0) for i in range(n)] if snaps else [],
    }


# ==================================================================== rendering =====


def _when(t: float | None) -> str:
    return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S") if t else "-"


def render_text(rep: dict[str, Any], *, charts: bool = True, width: int = 100) -> str:
    """The report for a person: tables, then plotext charts."""
    lines = [
        f"mavera-tui report: {rep['file']}",
        f"  target {rep.get('target') or '-'}; {_when(rep['start'])} → "
        f"{_when(rep['end'])} ({rep['duration_s']:.0f} s); "
        f"{rep['requests_total']} requests, {rep['recording']['snapshots']} snapshots",
        "",
        *([f"{OWN_LABEL}:"] if rep.get("fleet") else []),
        f"credits_used_total   {rep['credits_used_total']:,}",
        f"402_count            {rep['402_count']}",
        f"429_count            {rep['429_count']}",
        f"retry_count          {rep['retry_count']}",
    ]
    rl = rep["rate_limit_remaining"]
    lines.append(
        f"rate_limit_remaining min {rl['min']}  p5 {rl['p5']}  median {rl['median']}"
        f"  (limit {rep['rate_limit_limit']}/min)"
    )
    rpm = rep["requests_per_minute"]
    lines.append(f"requests_per_minute  mean {rpm['mean']}  peak {rpm['peak']}")
    q = rep["queue_depth"]
    lines.append(
        f"queue_depth          max {q['max']}  mean {q['mean']}  "
        f"(in flight max {q['in_flight_max']})"
    )
    folded = rep.get("from_daily_totals") or {}
    if folded.get("days"):
        lines.append(
            f"older days from daily totals (retention): {', '.join(folded['days'])}"
            f" ({folded['requests']} requests; no rates or batches for them)"
        )
    lines += [
        "",
        f"{'endpoint':<18}{'requests':>9}{'rpm':>8}{'peak':>6}{'credits':>10}"
        f"{'429':>6}{'jobs':>7}{'estimated':>11}{'actual':>9}{'ratio':>7}",
    ]
    eva = rep["estimated_vs_actual"]
    for ep, n in rep["requests_by_endpoint"].items():
        r = rpm["by_endpoint"].get(ep, {})
        x = eva.get(ep, {})
        ratio = x.get("ratio")
        lines.append(
            f"{ep:<18}{n:>9}{r.get('mean', 0):>8}{r.get('peak', 0):>6}"
            f"{rep['credits_used_by_endpoint'].get(ep, 0):>10,}"
            f"{rep['429_by_endpoint'].get(ep, 0):>6}{x.get('jobs', 0):>7}"
            f"{x.get('estimated', 0):>11,}{x.get('actual', 0):>9,}"
            f"{'' if ratio is None else f'{ratio:.2f}':>7}"
        )
    lines += ["", "batches (first send → last completion):"]
    for i, b in enumerate(rep["batches"], 1):
        lines.append(
            f"  {i}. {_when(b['start'])} → {_when(b['end'])}  makespan "
            f"{b['makespan_s']:.1f} s, {b['jobs']} jobs, {b['requests']} requests"
        )
    if not rep["batches"]:
        lines.append("  (no job requests)")
    if rep["jobs_by_state"]:
        lines += ["", "jobs: " + ", ".join(f"{k} {v}" for k, v in rep["jobs_by_state"].items())]
    if rep.get("fleet"):
        lines += ["", *render_fleet(rep["fleet"])]
    if charts and rep.get("_series", {}).get("minutes"):
        lines += ["", *_charts(rep, width)]
    return "\n".join(lines)


def _charts(rep: dict[str, Any], width: int) -> list[str]:
    import plotext as plt

    s = rep["_series"]
    x = [float(m) for m in s["minutes"]]
    if len(x) == 1:
        x = [0.0, 1.0]
        s = {k: (v * 2 if isinstance(v, list) else v) for k, v in s.items()}
    out = []
    specs = [
        ("credits per minute", s["credits"], None),
        ("requests per minute (dashes: the limit)", s["requests"], rep["rate_limit_limit"]),
    ]
    if s.get("queue"):
        specs.append(("queue depth (max per minute)", s["queue"], None))
    for title, y, hline in specs:
        fig = plt.figure
        fig.clear()
        fig.theme("colorless")
        fig.plot_size(max(20, width), 12)
        if hline:
            lim = fig.signal([x[0], x[-1]], [float(hline)] * 2, marker="-")
            lim.lines()
            fig.draw(lim)
        sig = fig.signal(x, [float(v) for v in y], marker="braille")
        sig.lines()
        fig.draw(sig)
        top = max([*y, hline or 0, 1]) * 1.1
        fig.ruler("y").lim(0, top)
        out.append(f"{title} (x: minutes since start)")
        out.append(fig.build().string(colorless=True))
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``report`` subcommand's options."""
    p.add_argument("file", help="a recording or run database (--db of record/run)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON only")
    p.add_argument(
        "--since",
        help="from this time: unix seconds, ISO, HH:MM, start+5m, "
        "end-10m, or -10m (back from the end of the recording); "
        "the forms of replay's g key",
    )
    p.add_argument("--until", help="up to this time (same forms as --since)")
    p.add_argument(
        "--batch-gap",
        type=float,
        default=BATCH_GAP,
        help=f"idle seconds that end a batch (default {BATCH_GAP:g})",
    )
    p.add_argument("--no-charts", action="store_true", help="omit the terminal charts")


def main(args: argparse.Namespace) -> int:
    """``mavera-tui report``: returns the exit code; errors are one line on stderr."""
    from ..errors import EXIT_CANNOT_START, EXIT_OK, EXIT_USAGE
    from ..store import StoreError

    try:
        rep = asyncio.run(
            build_report(args.file, args.since, args.until, getattr(args, "batch_gap", BATCH_GAP))
        )
    except StoreError as e:
        print(f"report: {e}", file=sys.stderr)
        return EXIT_CANNOT_START
    except ValueError as e:  # a bad --since / --until
        print(f"report: {e}", file=sys.stderr)
        return EXIT_USAGE
    except sqlite3.DatabaseError as e:  # damage past the header (a truncated copy)
        print(f"report: {args.file} is damaged: {e}", file=sys.stderr)
        return EXIT_CANNOT_START
    if args.json:
        rep.pop("_series", None)
        print(json.dumps(rep, indent=2, sort_keys=True))
    else:
        print(render_text(rep, charts=not getattr(args, "no_charts", False)))
    return EXIT_OK
