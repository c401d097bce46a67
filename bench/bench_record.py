"""Record-mode benchmark: file size per day (ledger, jobs and snapshots), write rate, delay.

Run: ``.venv/bin/python bench/bench_record.py [--hours H] [--rate N] [--keep S] [--tier T]``

Records the demo workload at ``--rate`` requests a minute (default 600, the enterprise
limit) on the embedded simulator under fast-forwarded loop time, so an hour takes a minute
or two. Reports the database size (after a WAL checkpoint) per table, per simulated hour
and extrapolated per day (the issue's target: under 50 MB a day at 600 requests a minute,
ledger included), the snapshot encode rate, and the dispatch loop's worst delay: a probe
task that wants to wake every 50 ms (virtual) records how late it woke, which would grow if
snapshot writing or a retention pass ever stalled the loop.

``--keep S`` turns retention on (``Recorder(keep=S)``, pruning every ``--prune-every``
seconds): the file then holds about ``keep`` seconds of detail plus the daily totals, and
stops growing once SQLite reuses the freed pages. The recording starts
``--before-midnight`` hours before a UTC midnight, so the totals span two days. Run from an
older checkout (no recording package) it measures that code as it is, without retention.

Since schema 4 the history is packed (``ledger_blocks``, ``job_blocks``, ``snapshot_blocks``):
the ``history`` line is what a day at ``--rate`` adds to the file (per request for the
ledger, the finished jobs and ``names``; per second for snapshots). The jobs not finished at
the end (``job_rows``) are the demo's queue, apart: on enterprise its capped endpoints (Mave
10 at a time, focus groups 5, videos 3) take fewer than it submits, so it grows with the run
(~70 jobs a minute), whatever the recording's format.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mavera_tui.clock import Clock, run_virtual  # noqa: E402
from mavera_tui.config import Config, SimSettings  # noqa: E402
from mavera_tui.engine import Settings  # noqa: E402

try:
    from mavera_tui.recording.recorder import Recorder  # noqa: E402

    HAS_RETENTION = True
except ImportError:  # an older checkout: measure "before"
    from mavera_tui.record import Recorder  # type: ignore[no-redef]  # noqa: E402

    HAS_RETENTION = False

MIDNIGHT = 1_700_006_400.0  # 2023-11-15T00:00:00Z


async def _probe(worst: list[float], period: float = 0.05) -> None:
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + period
        await asyncio.sleep(period)
        worst[0] = max(worst[0], loop.time() - due)


async def _run(rec: Any, worst: list[float]) -> int:
    probe = asyncio.create_task(_probe(worst))
    try:
        return int(await rec.run())
    finally:
        probe.cancel()


def _tables(con: sqlite3.Connection) -> dict[str, int]:
    """Bytes per table, its indexes included (dbstat when SQLite has it)."""
    try:
        rows = con.execute(
            "SELECT s.name, m.tbl_name, SUM(s.pgsize) FROM dbstat s "
            "LEFT JOIN sqlite_master m ON m.name = s.name GROUP BY s.name"
        ).fetchall()
    except sqlite3.Error:
        return {}
    out: dict[str, int] = {}
    for name, table, size in rows:
        key = table or name
        out[key] = out.get(key, 0) + int(size)
    return out


def _count(con: sqlite3.Connection, sql: str) -> int:
    """One number, 0 where the table does not exist (an older checkout's file)."""
    try:
        return int(con.execute(sql).fetchone()[0] or 0)
    except sqlite3.Error:
        return 0


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--hours", type=float, default=1.0)
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument(
        "--rate", type=float, default=600.0, help="demo requests per minute (default %(default)g)"
    )
    p.add_argument("--tier", default="enterprise")
    p.add_argument("--keep", type=float, default=None, help="retention in seconds")
    p.add_argument("--prune-every", type=float, default=600.0)
    p.add_argument(
        "--before-midnight",
        type=float,
        default=0.5,
        help="hours recorded before the first UTC midnight (default %(default)g)",
    )
    p.add_argument("--save", metavar="PATH", help="copy the recording here (to inspect it)")
    args = p.parse_args()
    if args.keep is not None and not HAS_RETENTION:
        p.error("--keep needs the recording package (this checkout has no retention)")
    with tempfile.TemporaryDirectory() as d:
        db = Path(d) / "bench.db"
        settings = Settings(
            Config(sim=SimSettings(tier=args.tier, purchased=1_000_000_000)),
            db=str(db),
            keep_finished=False,
            mode="record",
        )
        kw: dict[str, Any] = {}
        if args.keep is not None:
            kw = {"keep": args.keep, "prune_every": args.prune_every}
        rec = Recorder(
            settings,
            duration=args.hours * 3600,
            interval=args.interval,
            grace=600,
            clock=Clock(wall0=MIDNIGHT - args.before_midnight * 3600),
            out=io.StringIO(),
            demo_kw={"rate_per_min": args.rate},
            **kw,
        )
        worst = [0.0]
        t0 = time.perf_counter()
        rc = run_virtual(_run(rec, worst))
        real = time.perf_counter() - t0
        con = sqlite3.connect(db)
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        snap_bytes = _count(con, "SELECT SUM(LENGTH(data)) FROM snapshots") + _count(
            con, "SELECT SUM(LENGTH(data)) FROM snapshot_blocks"
        )
        n = _count(con, "SELECT COUNT(*) FROM snapshots") + _count(
            con, "SELECT SUM(json_array_length(times)) FROM snapshot_blocks"
        )
        ledger_n = _count(con, "SELECT COUNT(*) FROM ledger")
        packed_n = _count(con, "SELECT SUM(n) FROM ledger_blocks")
        jobs_n = _count(con, "SELECT COUNT(*) FROM jobs")
        jobs_packed = _count(con, "SELECT SUM(n) FROM job_blocks")
        tables = _tables(con)
        free = (
            con.execute("PRAGMA freelist_count").fetchone()[0]
            * con.execute("PRAGMA page_size").fetchone()[0]
        )
        con.close()
        size = os.path.getsize(db)
        if args.save:
            shutil.copyfile(db, args.save)
    hours = args.hours
    day = 24 / hours / 1e6
    snap = rec.latest
    reqs = snap.requests_total if snap else 0
    print(
        f"recorded {hours:g} h at {args.interval:g} s, demo at {args.rate:g}/min on tier "
        f"{args.tier} (exit {rc}): {reqs} requests ({reqs / hours / 60:.0f}/min), "
        f"{n} snapshots, {ledger_n + packed_n} ledger rows ({packed_n} packed), "
        f"{jobs_n + jobs_packed} jobs ({jobs_packed} packed, {jobs_n} in rows)"
        + (f"; retention {args.keep:g} s dropped {rec.pruned}" if args.keep else "")
    )
    print(
        f"file size        {size / 1e6:8.2f} MB  ({size / hours / 1e6:.2f} MB/h, "
        f"{size * day:.1f} MB/day extrapolated; target < 50 MB/day, ledger included)"
    )
    if tables:
        parts = ", ".join(
            f"{k} {v * day:.1f}"
            for k, v in sorted(tables.items(), key=lambda kv: -kv[1])
            if v > 8192
        )
        print(
            f"per table        MB/day with indexes: {parts}"
            + (f"; free pages {free / 1e6:.2f} MB" if free else "")
        )
    if tables and reqs:
        # The ledger, finished jobs and names grow with requests, snapshots with time: the
        # demo does not hold exactly --rate (its backlog drifts to capped endpoints), so
        # scale those per request. Schema 3 kept every job in job_rows: counted here too.
        per_req_tables = ("ledger", "ledger_rows", "ledger_blocks", "job_blocks", "names")
        if not jobs_packed:
            per_req_tables += ("jobs", "job_rows")
        per_req = sum(v for k, v in tables.items() if k in per_req_tables) / reqs
        snaps_day = (tables.get("snapshots", 0) + tables.get("snapshot_blocks", 0)) * day
        hist = per_req * args.rate * 1440 / 1e6 + snaps_day
        print(
            f"history          {hist:8.1f} MB/day at {args.rate:g}/min (target < 50): ledger, "
            f"finished jobs and names {per_req:.1f} B per request "
            f"({per_req * args.rate * 1440 / 1e6:.1f} MB/day), snapshots {snaps_day:.1f}"
        )
        if jobs_packed:
            live = tables.get("job_rows", 0)
            print(
                f"queue            {live / 1e6:8.2f} MB in rows for the {jobs_n} jobs not "
                f"finished at the end ({live / max(jobs_n, 1):.0f} B each; "
                f"{live * day:.1f} MB over a day as the demo's backlog grows)"
            )
    print(
        f"snapshots only   {snap_bytes / 1e6:8.2f} MB  ({snap_bytes / max(n, 1):.0f} B each, "
        f"{snap_bytes * day:.1f} MB/day)"
    )
    print(
        f"encode rate      {n / max(rec.encode_seconds, 1e-9):8.0f} snapshots/s "
        f"({rec.encode_seconds / max(n, 1) * 1e3:.2f} ms each)"
    )
    print(
        f"wall time        {real:8.1f} s for {hours:g} simulated h "
        f"({n / real:.0f} snapshots/s end to end with the engine)"
    )
    print(f"dispatch delay   {worst[0] * 1e3:8.1f} ms worst lateness of a 50 ms loop probe")
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
