"""Record-mode benchmark: file size per hour and per day, snapshot write rate, dispatch delay.

Run: ``.venv/bin/python bench/bench_record.py [--hours H] [--interval S] [--tier T]``

Records the demo workload on the embedded simulator at the given tier (default enterprise,
600/min) under fast-forwarded loop time, so an hour takes seconds. Reports the database
size (after a WAL checkpoint) per simulated hour and extrapolated per day (target: under
50 MB at 1 s), the snapshot encode/write rate in real time, and the dispatch loop's worst
delay: a probe task that wants to wake every 50 ms (virtual) records how late it woke,
which would grow if snapshot writing ever stalled the loop.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mavera_tui.clock import Clock, run_virtual  # noqa: E402
from mavera_tui.engine import Settings  # noqa: E402
from mavera_tui.recording.recorder import Recorder  # noqa: E402


async def _probe(worst: list[float], period: float = 0.05) -> None:
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + period
        await asyncio.sleep(period)
        worst[0] = max(worst[0], loop.time() - due)


async def _run(rec: Recorder, worst: list[float]) -> int:
    probe = asyncio.create_task(_probe(worst))
    try:
        return await rec.run()
    finally:
        probe.cancel()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hours", type=float, default=1.0)
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("--tier", default="enterprise")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        db = Path(d) / "bench.db"
        settings = Settings(db=str(db), keep_finished=False, mode="record",
                            sim_tier=args.tier, sim_purchased=1_000_000_000)
        rec = Recorder(settings, duration=args.hours * 3600, interval=args.interval,
                       grace=600, clock=Clock(wall0=1_700_000_000.0), out=io.StringIO())
        worst = [0.0]
        t0 = time.perf_counter()
        rc = run_virtual(_run(rec, worst))
        real = time.perf_counter() - t0
        con = sqlite3.connect(db)
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        snap_bytes, n = con.execute(
            "SELECT COALESCE(SUM(LENGTH(data)), 0), COUNT(*) FROM snapshots").fetchone()
        ledger_n = con.execute("SELECT COUNT(*) FROM ledger").fetchone()[0]
        con.close()
        size = os.path.getsize(db)
    hours = args.hours
    snap = rec.latest
    print(f"recorded {hours:g} h at {args.interval:g} s on tier {args.tier} "
          f"(exit {rc}): {n} snapshots, {ledger_n} ledger rows, "
          f"{snap.requests_total if snap else 0} requests")
    print(f"file size        {size / 1e6:8.2f} MB  ({size / hours / 1e6:.2f} MB/h, "
          f"{size / hours * 24 / 1e6:.1f} MB/day extrapolated; target < 50 MB/day "
          "for snapshots + ledger)")
    print(f"snapshots only   {snap_bytes / 1e6:8.2f} MB  ({snap_bytes / max(n, 1):.0f} B each, "
          f"{snap_bytes / hours * 24 / 1e6:.1f} MB/day)")
    print(f"encode rate      {n / max(rec.encode_seconds, 1e-9):8.0f} snapshots/s "
          f"({rec.encode_seconds / max(n, 1) * 1e3:.2f} ms each)")
    print(f"wall time        {real:8.1f} s for {hours:g} simulated h "
          f"({n / real:.0f} snapshots/s end to end with the engine)")
    print(f"dispatch delay   {worst[0] * 1e3:8.1f} ms worst lateness of a 50 ms loop probe")
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
