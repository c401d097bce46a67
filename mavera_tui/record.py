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

from . import runloop
from .recording.recorder import Recorder
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
    """The ``record`` subcommand's options: its own, then the engine options every engine
    command takes (declared from the settings model, as are --interval, --duration and
    --grace: not given, the config file, the environment or the default decides)."""
    from . import config
    from .cli import _add_target_options, _port

    p.add_argument("--db", required=True, help="SQLite file to record into (created 0600)")
    jobs = p.add_mutually_exclusive_group()
    jobs.add_argument(
        "--jobs",
        help="JSONL job file to run (default: the demo workload on the "
        "embedded simulator when no key is set)",
    )
    jobs.add_argument(
        "--proxy",
        metavar="ADDR:PORT",
        default=None,
        help="serve the governing proxy there (as 'proxy --key-from-env': apps send a "
        "local token, MAVERA_API_KEY is used) and record its engine",
    )
    config.add_flag(
        p,
        "record.duration",
        type_=_duration_arg,
        help_="send no new requests after this long (seconds, or 90s / 10m / 2h / "
        "1d), then wait for those in flight, at most --grace: the recording "
        "ends within duration + grace",
    )
    config.add_flag(
        p,
        "record.interval",
        type_=_duration_arg,
        help_="seconds between snapshots (or 500ms, 2s, 1m)",
    )
    p.add_argument(
        "--metrics-port",
        type=_port,
        default=None,
        help="serve Prometheus metrics on 127.0.0.1:PORT",
    )
    # A second signal during the grace stops at once (in-flight jobs are then 'outcome
    # unknown').
    config.add_flag(
        p,
        "record.grace",
        help_="at the end of --duration or on SIGTERM/SIGINT, seconds to let "
        "requests in flight finish (a signal during the wait stops at once)",
    )
    p.add_argument(
        "--keep",
        type=_duration_arg,
        default=None,
        help="retention: drop ledger rows, snapshots and finished jobs older "
        "than this (e.g. 7d), keeping per-day totals for reports; checked "
        "at the start and every hour (default: keep everything)",
    )
    _add_target_options(p)


def settings_from_args(args: argparse.Namespace) -> Any:
    """Engine settings for a record run (finished jobs are not kept in memory): the same
    mapping as every command's (``cli.settings_from_args``)."""
    from .cli import settings_from_args as engine_settings

    return engine_settings(args, keep_finished=False, mode="record")


def main(args: argparse.Namespace) -> int:
    """``mavera-tui record``: returns the process exit code (``errors.EXIT_*``)."""
    from .errors import EXIT_CANNOT_START, EXIT_INTERRUPTED

    if not Path(args.db).parent.exists():
        print(f"record: directory {Path(args.db).parent} does not exist", file=sys.stderr)
        return EXIT_CANNOT_START
    job_file = None
    if args.jobs:
        from .jobs import JobFileError, read_job_file

        try:  # before anything starts: a missing file is one line, not a short recording
            job_file = read_job_file(args.jobs)
        except JobFileError as e:
            print(f"record: {e}", file=sys.stderr)
            return EXIT_CANNOT_START
    settings = settings_from_args(args)
    rc = settings.config.record
    rec = Recorder(
        settings,
        jobs=args.jobs,
        duration=rc.duration,
        interval=rc.interval,
        metrics_port=args.metrics_port,
        grace=rc.grace,
        job_file=job_file,
        keep=getattr(args, "keep", None),
        proxy_listen=getattr(args, "proxy", None),
    )

    async def go() -> int:
        loop = asyncio.get_running_loop()
        for sig, name in ((signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "SIGINT")):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, rec.request_stop, name)
        return await rec.run()

    try:
        code = runloop.run(go())
    except KeyboardInterrupt:  # a SIGINT before the handler was installed
        return EXIT_INTERRUPTED
    # Recorder.run answers 2 when the engine could not start (a bad URL, a database in
    # use): that is EXIT_CANNOT_START in every command.
    return EXIT_CANNOT_START if code == 2 else code
