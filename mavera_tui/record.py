"""Headless record mode: ``mavera-tui record --db FILE`` (the CLI; the work is in recording/).

Runs the engine with no UI (the demo workload on the embedded simulator when no key and no
``--jobs`` are given), logs plain lines to stderr, and writes one encoded snapshot per
interval into the store beside the ledger; ``--keep 7d`` prunes what is older. The
recorder is ``recording.recorder.Recorder``, the snapshot codec ``recording.codec``.
Never imports textual (tests/test_import_hygiene).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path
from typing import Any

from .recording.recorder import DEFAULT_GRACE, Recorder
from .recording.timespec import parse_duration

__all__ = ["Recorder", "add_arguments", "main", "parse_duration", "settings_from_args"]


def _duration_arg(text: str) -> float:
    try:
        v = parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if v <= 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return v


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``record`` subcommand's options."""
    from .cli import _nonneg_float, _port, _positive_float

    p.add_argument("--db", required=True, help="SQLite file to record into (created 0600)")
    p.add_argument("--jobs", help="JSONL job file to run (default: the demo workload on the "
                                  "embedded simulator when no key is set)")
    p.add_argument("--duration", type=_duration_arg,
                   help="send no new requests after this long (seconds, or 90s / 10m / 2h / "
                        "1d), then wait for those in flight, at most --grace: the recording "
                        "ends within duration + grace")
    p.add_argument("--interval", type=_duration_arg, default=1.0,
                   help="seconds between snapshots (default 1)")
    p.add_argument("--base-url", help="API base URL (default: MAVERA_BASE_URL or the "
                                      "vendor's; the embedded simulator without a key)")
    p.add_argument("--window-seconds", type=_positive_float, default=None,
                   help="the rate limit's window length in seconds (default 60)")
    p.add_argument("--metrics-port", type=_port, default=None,
                   help="serve Prometheus metrics on 127.0.0.1:PORT")
    # Requests in flight are already paid for: their outcomes (and charges) belong in the
    # ledger. Long jobs take minutes, so the default waits up to two; a second signal stops
    # at once (they are then 'outcome unknown').
    p.add_argument("--grace", type=_nonneg_float, default=DEFAULT_GRACE,
                   help="at the end of --duration or on SIGTERM/SIGINT, seconds to let "
                        "requests in flight finish (default %(default)g; a signal during the "
                        "wait stops at once)")
    p.add_argument("--sim-tier", default=None,
                   help="tier of the embedded simulator (e.g. enterprise)")
    p.add_argument("--keep", type=_duration_arg, default=None,
                   help="retention: drop ledger rows, snapshots and finished jobs older "
                        "than this (e.g. 7d), keeping per-day totals for reports; checked "
                        "at the start and every hour (default: keep everything)")


def settings_from_args(args: argparse.Namespace) -> Any:
    """Engine settings for a record run (finished jobs are not kept in memory)."""
    from .engine import Settings

    s = Settings(base_url=args.base_url, db=args.db, keep_finished=False, mode="record")
    if args.window_seconds:
        s.window_seconds = float(args.window_seconds)
    if getattr(args, "sim_tier", None):
        s.sim_tier = args.sim_tier
    return s


def main(args: argparse.Namespace) -> int:
    """``mavera-tui record``: returns the process exit code."""
    if not Path(args.db).parent.exists():
        print(f"record: directory {Path(args.db).parent} does not exist", file=sys.stderr)
        return 2
    job_file = None
    if args.jobs:
        from .jobs import JobFileError, read_job_file

        try:  # before anything starts: a missing file is one line, not a short recording
            job_file = read_job_file(args.jobs)
        except JobFileError as e:
            print(f"record: {e}", file=sys.stderr)
            return 2
    rec = Recorder(settings_from_args(args), jobs=args.jobs, duration=args.duration,
                   interval=args.interval, metrics_port=args.metrics_port,
                   grace=getattr(args, "grace", DEFAULT_GRACE), job_file=job_file,
                   keep=getattr(args, "keep", None))

    async def go() -> int:
        loop = asyncio.get_running_loop()
        for sig, name in ((signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "SIGINT")):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, rec.request_stop, name)
        return await rec.run()

    try:
        return asyncio.run(go())
    except KeyboardInterrupt:  # a SIGINT before the handler was installed
        return 130
