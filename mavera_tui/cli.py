"""Command-line entry points: the monitor (no sub-command), run, estimate, sim, record, replay,
report, config, screenshots.

Headless commands never import textual. Every error a user can cause ends in one clear line
on stderr and a documented exit status (``errors.EXIT_*``, the same in every command), never
a traceback. Settings come from ``config.load_config`` (defaults < file < environment <
flags); the flags that are settings are declared from the model (``config.add_flag``).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import math
import os
import re
import signal
import sys
import time
from asyncio import FIRST_COMPLETED
from pathlib import Path
from typing import Any, NoReturn

from . import __version__, catalog, config, runloop
from .config import LoadedConfig, load_config
from .errors import (
    EXIT_CANNOT_START,
    EXIT_INTERRUPTED,
    EXIT_JOBS_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    ConfigError,
    StoreError,
)
from .estimate import MAX_VIDEO_SECONDS, estimate, preflight, with_buffer
from .jobs import JobFileError, JobSpec, read_job_file

__all__ = [
    "EXIT_CANNOT_START",
    "EXIT_INTERRUPTED",
    "EXIT_JOBS_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "main",
]

#: The exit statuses, as every command's --help prints them (errors.py defines them).
EXIT_EPILOG = """\
exit status (the same in every command):
  0    every job succeeded (run); done (the other commands)
  1    it ran, but not everything succeeded (run: a job failed, was refused by
       pre-flight, waits for credits, has an unknown outcome or was cancelled, or a
       bad line of the job file was skipped; estimate: refused by pre-flight)
  2    bad usage: a bad flag or value, a bad job file (with --strict: any bad line)
  3    could not start: bad settings (config file, environment, base URL, key), a
       file that cannot be read or written, a database in use or unusable, a port in use
  130  interrupted (Ctrl-C / SIGTERM): finished work is saved; rerun with the same
       --db to resume the rest
"""

RUN_EPILOG = (
    EXIT_EPILOG
    + """

job file: one JSON object per line, {"id", "method", "path", "body"} (+ optional
"priority", higher first); "path" is relative to the base URL, e.g. /focus-groups.
"""
)

FRIENDLY = {
    "focus-group": "focus_groups",
    "focus-groups": "focus_groups",
    "fg": "focus_groups",
    "video": "video_analyses",
    "video-analysis": "video_analyses",
    "video-analyses": "video_analyses",
    "mave": "mave",
    "mave-chat": "mave",
    "response": "responses",
    "responses": "responses",
    "chat": "responses",
    "generation": "generations",
    "generations": "generations",
    "persona": "personas_create",
    "create-persona": "personas_create",
    "personas": "personas_list",
    "list-personas": "personas_list",
    "brand-voice": "brand_voices",
    "brand-voices": "brand_voices",
    "news": "news_analyze",
    "news-analysis": "news_analyze",
}


_INVALID_CHOICE = re.compile(r"^argument (\S+): invalid choice: (.*?) \(choose from (.*)\)$")


def usage_line(message: str) -> str:
    """argparse's error message, shortened to the part a person acts on."""
    message = " ".join(message.split())
    if message.startswith("unrecognized arguments: "):
        extra = message.split(": ", 1)[1].split()
        return (
            "unrecognized argument " if len(extra) == 1 else "unrecognized arguments "
        ) + " ".join(extra)
    m = _INVALID_CHOICE.match(message)
    if m:
        what, got, choices = m.groups()
        choices = choices.replace("'", "")
        if what == "COMMAND":
            return f"unknown command {got} (commands: {choices})"
        return f"{what}: {got} is not one of {choices}"
    if message.startswith("the following arguments are required: "):
        return "missing " + message.split(": ", 1)[1]
    m = re.match(r"^argument (\S+): invalid (int|float) value: (.*)$", message)
    if m:
        kind = "a whole number" if m.group(2) == "int" else "a number"
        return f"{m.group(1)}: expected {kind}, got {m.group(3)}"
    return re.sub(r"^argument (\S+?)(/\S+)?: ", r"\1: ", message)


class CliParser(argparse.ArgumentParser):
    """An ArgumentParser whose every error is one line on stderr, exit status 2:
    ``mavera-tui run: unrecognized argument --foo; see mavera-tui run --help``."""

    #: Set on the top-level parser once the sub-command is known: argparse checks every
    #: option against the top-level parser too (``run --d`` is "ambiguous" there).
    command_prog: str | None = None

    def error(self, message: str) -> NoReturn:
        prog = self.command_prog or self.prog
        self.exit(EXIT_USAGE, f"{prog}: {printable(usage_line(message))}; see {prog} --help\n")


def _port(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"a port is from 0 to 65535, got {v}")
    return v


def _nonneg_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected zero or more, got {text!r}")
    return v


def _add_target_options(p: argparse.ArgumentParser) -> None:
    """The engine options every engine command takes (the monitor, run, record, config),
    declared from the settings model, and --config."""
    config.add_engine_flags(p)
    config.add_config_flag(p)


def loaded_config(args: argparse.Namespace) -> LoadedConfig:
    """The effective settings of this invocation (read once by ``main``)."""
    loaded = getattr(args, "loaded", None)
    if loaded is None:
        loaded = load_config(getattr(args, "config", None), args=args)
        args.loaded = loaded
    return loaded


def settings_from_args(args: argparse.Namespace, **runtime: Any):  # noqa: ANN201
    """The engine's settings: the effective model, plus this command's --db and
    ``runtime`` choices (mode, keep_finished, ...)."""
    from .engine import Settings

    return Settings(config=loaded_config(args).config, db=getattr(args, "db", None), **runtime)


# ====================================================================== estimate ======


def _estimate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "target",
        metavar="PATH|KIND",
        help="an API path such as /focus-groups, or a kind: " + ", ".join(sorted(set(FRIENDLY))),
    )
    p.add_argument("--body", metavar="JSON", help="the request body as JSON")
    p.add_argument(
        "--method",
        choices=["GET", "POST"],
        help="HTTP method (default POST, GET for /personas listing and /billing/credits)",
    )
    p.add_argument("--sample-size", type=int, help="focus groups: respondents")
    p.add_argument("--questions", type=int, help="focus groups: number of questions")
    p.add_argument(
        "--video-seconds",
        "--seconds",
        type=float,
        dest="video_seconds",
        help="video analyses: length in seconds",
    )
    p.add_argument(
        "--complexity",
        choices=list(catalog.MAVE_COMPLEXITY),
        help="Mave: query complexity (default complex)",
    )
    p.add_argument(
        "--balance",
        type=_nonneg_int,
        metavar="CREDITS",
        help="also give the pre-flight verdict against this balance",
    )
    p.add_argument(
        "--reserved",
        type=_nonneg_int,
        default=0,
        metavar="CREDITS",
        help="credits already reserved by running jobs (with --balance)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _estimate_body(args: argparse.Namespace) -> dict[str, Any]:
    """The body ``estimate`` prices: --body, then the shorthand options over it."""
    body: dict[str, Any] = {}
    if args.body is not None:
        try:
            body = json.loads(args.body)
        except json.JSONDecodeError as e:
            raise ValueError(f"--body is not valid JSON: {e.msg} at column {e.colno}") from None
        if not isinstance(body, dict):
            raise ValueError("--body must be a JSON object, e.g. '{\"sample_size\": 50}'")
    if args.sample_size is not None:
        body["sample_size"] = args.sample_size
    if args.questions is not None:
        if args.questions < 0:
            raise ValueError("--questions must be zero or more")
        body["questions"] = [f"question {i + 1}" for i in range(args.questions)]
    if args.video_seconds is not None:
        body["video_seconds"] = args.video_seconds
    if args.complexity is not None:
        body["complexity"] = args.complexity
    return body


def _estimate_target(args: argparse.Namespace) -> tuple[str, str]:
    """(method, path) of ``estimate``'s target: a path, or a kind such as focus-group."""
    target = args.target
    if target.startswith("/"):
        method = args.method or ("GET" if target.rstrip("/") in ("/billing/credits",) else "POST")
        return method, target
    key = FRIENDLY.get(target.lower())
    if key is None:
        raise ValueError(
            f"unknown kind {target!r}; use a path like /focus-groups or one of: "
            + ", ".join(sorted(set(FRIENDLY)))
        )
    ep = catalog.ENDPOINTS[key]
    return args.method or ep.method, ep.path.replace("{id}", "story")


def cmd_estimate(args: argparse.Namespace) -> int:
    try:
        body = _estimate_body(args)
        method, path = _estimate_target(args)
        est = estimate(method, path, body)
    except ValueError as e:  # a bad --body or option, an unknown kind, a body not priced
        return _fail(str(e), EXIT_USAGE)
    secs = body.get("video_seconds")
    if est.endpoint.cost == "video" and isinstance(secs, (int, float)) and secs < 1:
        # The estimator's message promises 1 and up; hold the CLI to it.
        return _fail(
            f"'video_seconds' must be a number from 1 to {MAX_VIDEO_SECONDS}, got {secs!r}",
            EXIT_USAGE,
        )
    out: dict[str, Any] = est.to_dict()
    verdict = None
    if args.balance is not None:
        verdict = preflight(est, args.balance, args.reserved)
        out["preflight"] = {
            "ok": verdict.ok,
            "needed": verdict.needed,
            "available": verdict.available,
            "message": verdict.message,
        }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        rng = f"{est.low}-{est.high}" if est.low != est.high else f"{est.high}"
        print(f"{est.endpoint.method} {path}: {rng} credits (upper bound {est.high}; {est.basis})")
        print(
            f"  pre-flight needs {with_buffer(est.high)} available (estimate + 20% "
            "buffer, rounded up)"
        )
        if verdict is not None:
            print(f"  {'OK' if verdict.ok else 'REFUSED'}: {verdict.message}")
    return EXIT_OK if verdict is None or verdict.ok else EXIT_JOBS_FAILED


# =========================================================================== run ======


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("jobs", metavar="JOBS.jsonl", help="the job file (one JSON job per line)")
    p.add_argument(
        "--db",
        metavar="PATH",
        help="SQLite database: jobs are persisted before they are sent and a rerun "
        "with the same --db resumes them (default: none, nothing persisted)",
    )
    p.add_argument("--summary", metavar="PATH", help="also write the summary as JSON here")
    p.add_argument(
        "--strict",
        action="store_true",
        help="refuse to run anything if any line of the job file is bad",
    )
    config.add_flag(p, "run.credit_wait")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--debug", metavar="FILE", help="write a debug log to FILE")
    _add_target_options(p)


class _Progress:
    """A live bar on a terminal, plain lines otherwise."""

    def __init__(self, total: int, quiet: bool):
        self.total = total
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.last_line = 0.0
        self.last_done = -1

    def due(self) -> bool:
        """Whether a line would be shown now (a bar: always; plain lines: every 5 s)."""
        return not self.quiet and (self.tty or time.monotonic() - self.last_line >= 5.0)

    def update(self, s: dict[str, Any], snap: Any, final: bool = False) -> None:
        if self.quiet:
            return
        done = (
            s["succeeded"]
            + s["failed"]
            + s["blocked_preflight"]
            + s["outcome_unknown"]
            + s["cancelled"]
        )
        parts = (
            f"{done}/{self.total} done  ok {s['succeeded']}  failed {s['failed']}  "
            f"in flight {snap.in_flight}  queued {snap.queue_depth}  "
            f"window {snap.window_used}/{snap.limit}  credits {s['credits_used']}"
        )
        if s["waiting_for_credits"]:
            parts += f"  waiting for credits {s['waiting_for_credits']}"
        if self.tty:
            width = 24
            filled = int(width * done / max(1, self.total))
            bar = "█" * filled + "░" * (width - filled)
            sys.stderr.write(f"\r\x1b[2K{bar} {parts}")
            if final:
                sys.stderr.write("\n")
            sys.stderr.flush()
        else:
            now = time.monotonic()
            if final or (done != self.last_done and now - self.last_line >= 5.0):
                print(parts, file=sys.stderr, flush=True)
                self.last_line = now
                self.last_done = done


def _print_summary(s: dict[str, Any]) -> None:
    lines = [
        f"jobs {s['jobs']}: {s['succeeded']} succeeded, {s['failed']} failed, "
        f"{s['blocked_preflight']} refused by pre-flight, {s['waiting_for_credits']} waiting "
        f"for credits, {s['outcome_unknown']} outcome unknown, {s['cancelled']} cancelled"
        + (f", {s['not_finished']} not finished" if s["not_finished"] else ""),
        f"credits used {s['credits_used']} (estimated {s['credits_estimated']} for the jobs "
        f"that succeeded)"
        + (
            f"; includes {s['credits_reconciled']} read from the balance for "
            f"{s['credits_unknown_attempts']} attempt(s) whose answer was lost"
            if s.get("credits_reconciled") is not None
            else f"; charge unknown for {s['credits_unknown_attempts']} attempt(s) (timeouts, "
            f"dropped connections, unreadable answers): up to {s['credits_unknown_max']} more "
            "may have been charged, see GET /billing/credits"
            + (f" ({s['credits_reconcile_note']})" if s.get("credits_reconcile_note") else "")
            if s.get("credits_unknown_attempts")
            else ""
        ),
        f"requests {s['requests']}, 429s {s['responses_429']}, 402s {s['count_402']}, "
        f"retries {s['retries']}, statuses "
        + ", ".join(f"{k}: {v}" for k, v in s["status_counts"].items()),
        f"makespan {s['makespan_s']:.1f} s; max in flight "
        + (", ".join(f"{k} {v}" for k, v in s["max_in_flight"].items()) or "-"),
    ]
    print("\n".join(lines))


async def _run_async(args: argparse.Namespace, specs: list[JobSpec], bad_lines: int = 0) -> int:
    from .engine import Engine

    settings = settings_from_args(args, mode="run")
    settings.batch = len(specs)
    engine = Engine(settings)
    stop = asyncio.Event()
    aborted = {"n": 0}
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        aborted["n"] += 1
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    sched, code = await _start_unless_stopped(engine, stop)
    if sched is None:
        return code
    if not args.quiet:
        print(engine.notice, file=sys.stderr, flush=True)
    ids: list[str] = []
    try:
        submitted = await sched.submit_many(specs)
        fresh = set(submitted.accepted)
        resumed = [j for j in sched.job_ids() if j not in fresh]
        ids = submitted.accepted + resumed
        # Duplicates are this --db's jobs from an earlier run: resumed above, or finished.
        for msg in submitted.messages(duplicates=False):
            print(f"{args.jobs}: {msg}", file=sys.stderr)
        if resumed and not args.quiet:
            print(f"resuming {len(resumed)} unfinished jobs from {args.db}", file=sys.stderr)
        known = await _finished_in_db(engine, specs, ids)
        progress = _Progress(len(ids) + len(known), args.quiet)
        credit_wait = loaded_config(args).config.run.credit_wait
        waiter = asyncio.create_task(sched.wait_idle(credit_wait=credit_wait))
        await _show_progress(sched, ids, waiter, stop, progress)
        if stop.is_set():
            waiter.cancel()
            sched.pause()
            if not sched.sent_any():  # still reading the balance (or Redis away)
                print("mavera-tui: interrupted while starting; no job was sent", file=sys.stderr)
            await _stop_interrupted(engine, stop, args.quiet)
        else:
            # Done, or given up (credits that did not come, a fatal error): what is left
            # stays unsent (and in --db), as the summary says.
            sched.stop_admitting("the run is over; they stay in --db for a rerun")
            await sched.reconcile_credits()
        summary = sched.summary(ids)
        _add_finished(summary, known)
        summary["bad_lines_skipped"] = bad_lines
        if engine.fleet is not None:
            summary["shared"] = engine.fleet.stats()
        progress.update(summary, sched.snapshot(), final=True)
    finally:
        if not stop.is_set() and not aborted["n"]:
            await engine.stop()
    if not args.quiet:
        _print_summary(summary)
        _print_not_succeeded([sched.job_view(i) for i in ids], bad_lines, args.jobs)
    if args.summary:
        _write_summary(args.summary, summary)
    if aborted["n"]:
        return EXIT_INTERRUPTED
    # A skipped line is a job of the file that did not run: not a success.
    ok = summary["succeeded"] == summary["jobs"] and summary["jobs"] > 0 and not bad_lines
    return EXIT_OK if ok else EXIT_JOBS_FAILED


async def _show_progress(
    sched: Any, ids: list[str], waiter: asyncio.Task[Any], stop: asyncio.Event, progress: _Progress
) -> None:
    """Until the batch is done or a signal came: the progress line, when it is shown."""
    stopping = asyncio.create_task(stop.wait())
    try:
        while not waiter.done():
            await asyncio.wait({waiter, stopping}, timeout=0.5, return_when=FIRST_COMPLETED)
            if stop.is_set():
                return
            if progress.due():  # a summary walks every job: only when it is shown
                progress.update(sched.summary(ids), sched.snapshot())
    finally:
        stopping.cancel()


async def _start_unless_stopped(engine: Any, stop: asyncio.Event) -> tuple[Any, int]:
    """(the started scheduler, 0), or (None, the exit status) when it could not start or
    ``stop`` was set first (see ``Engine.start_unless``)."""
    try:
        sched = await engine.start_unless(stop)
    except (ConfigError, StoreError) as e:
        return None, _fail(str(e), EXIT_CANNOT_START)
    if sched is None:
        print("mavera-tui: interrupted while starting; no job was sent", file=sys.stderr)
        return None, EXIT_INTERRUPTED
    return sched, EXIT_OK


async def _stop_interrupted(engine: Any, stop: asyncio.Event, quiet: bool) -> None:
    """After a Ctrl-C (dispatch paused): wait for requests in flight; a second Ctrl-C
    stops at once (they are then left 'in flight', so a restart marks them unknown)."""
    if not quiet:
        print(
            "\ninterrupted: waiting for requests in flight (Ctrl-C again to "
            "stop at once; they are then marked 'outcome unknown')",
            file=sys.stderr,
            flush=True,
        )
    stop.clear()
    closing = asyncio.create_task(engine.stop())
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({closing, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if not closing.done():
        await engine.stop(abort=True)
        closing.cancel()
    stopper.cancel()


def _print_not_succeeded(views: list[Any], bad_lines: int, jobs_path: str) -> None:
    """The run's jobs that did not succeed (the first 20), and the job file's bad lines."""
    bad = [j for j in views if j is not None and j.state != "succeeded"]
    for j in bad[:20]:
        print(f"  {printable(j.id)}: {j.state}: {printable(j.reason)[:300]}")
    if len(bad) > 20:
        print(f"  ... and {len(bad) - 20} more not succeeded (see --db / --summary)")
    if bad_lines:
        print(f"  {bad_lines} bad line(s) of {jobs_path} skipped: not run (exit status 1)")


def _write_summary(path: str, summary: dict[str, Any]) -> None:
    """The --summary file, owner-only; a failure is one line on stderr."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(summary, indent=2) + "\n")
    except OSError as e:
        print(f"cannot write --summary {path}: {e.strerror}", file=sys.stderr)


async def _finished_in_db(engine: Any, specs: list[JobSpec], ids: list[str]) -> dict[str, str]:
    """Jobs of this file that an earlier run with this --db already finished: id -> state."""
    if engine.store is None:
        return {}
    want = sorted({s.id for s in specs} - set(ids))
    return dict(await engine.store.job_states(want))  # packed jobs (record) included


def _add_finished(summary: dict[str, Any], finished: dict[str, str]) -> None:
    """Count jobs finished by an earlier run into this run's summary: the summary (and the
    exit status) is about the whole job file, not only what ran this time."""
    summary["already_finished_in_db"] = len(finished)
    summary["jobs"] += len(finished)
    for state in finished.values():
        if state in summary and isinstance(summary[state], int):
            summary[state] += 1


def _load_jobs(path: str) -> tuple[list[JobSpec], list[Any]]:
    """Read a job file, printing each bad line (with its line and field) to stderr.
    JobFileError (unreadable file) propagates: main() turns it into exit 3."""
    specs, errors = read_job_file(path)
    for err in errors:
        print(f"{path}: {err}", file=sys.stderr)
    return specs, errors


def cmd_run(args: argparse.Namespace) -> int:
    _setup_debug(args.debug)
    specs, errors = _load_jobs(args.jobs)
    if errors and args.strict:
        return _fail(
            f"{len(errors)} bad line(s) in {args.jobs}; nothing was run (--strict)", EXIT_USAGE
        )
    if not specs:
        if errors:
            return _fail(f"no valid jobs in {args.jobs}", EXIT_USAGE)
        if not args.db:
            return _fail(f"{args.jobs} holds no jobs", EXIT_USAGE)
    if errors and not args.quiet:
        print(
            f"{len(errors)} bad line(s) skipped; running the {len(specs)} valid job(s)",
            file=sys.stderr,
        )
    try:
        return runloop.run(_run_async(args, specs, len(errors)))
    except (ConfigError, StoreError) as e:
        return _fail(str(e), EXIT_CANNOT_START)


# ======================================================================= monitor ======


def _monitor_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--jobs", metavar="JOBS.jsonl", help="open the monitor on this batch")
    p.add_argument(
        "--db",
        metavar="PATH",
        help="SQLite database to use (reopen it later to pick up where you left)",
    )
    config.add_flag(p, "ui.refresh")
    p.add_argument(
        "--debug",
        metavar="FILE",
        nargs="?",
        const="mavera-tui-debug.log",
        help="write a debug log (default file mavera-tui-debug.log)",
    )
    p.add_argument(
        "--proxy",
        metavar="ADDR:PORT",
        default=None,
        help="serve the governing proxy there while showing its engine (as 'proxy "
        "--key-from-env': apps send a local token, MAVERA_API_KEY is used)",
    )
    p.add_argument(
        "--no-demo",
        action="store_true",
        help="with the embedded simulator, do not run the demo workload",
    )
    p.add_argument(
        "--metrics-port",
        type=_port,
        metavar="PORT",
        help="serve Prometheus metrics on 127.0.0.1:PORT",
    )
    _add_target_options(p)


def cmd_monitor(args: argparse.Namespace) -> int:
    specs: list[JobSpec] = _load_jobs(args.jobs)[0] if args.jobs else []
    try:
        from .monitor import run_monitor
    except ImportError as e:  # pragma: no cover - broken install
        return _fail(f"the monitor is not available: {e}", EXIT_CANNOT_START)
    try:
        settings = settings_from_args(args, keep_finished=False)
        ui = settings.config.ui
        return run_monitor(
            settings,
            specs=specs,
            refresh=ui.refresh,
            debug_log=args.debug,
            demo=not args.no_demo and not args.jobs and not args.proxy,
            metrics_port=args.metrics_port,
            keys=ui.keys,
            proxy=args.proxy,
        )
    except (ConfigError, StoreError) as e:
        return _fail(str(e), EXIT_CANNOT_START)


# ========================================================================= main =======

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str, *, newlines: bool = False) -> str:
    """Server-provided (untrusted) text made safe for a terminal or a log: control
    characters, escape sequences included, are shown as ``\\xNN`` instead of acting."""
    out = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return out if newlines else out.replace("\n", "\\n").replace("\t", " ")


class _SafeFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record), newlines=True)


def _fail(message: str, code: int) -> int:
    print(f"mavera-tui: error: {printable(message)}", file=sys.stderr)
    return code


def _setup_debug(path: str | None) -> None:
    if not path:
        return
    try:  # created owner-only before anything is written to it
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
        handler = logging.FileHandler(path)
    except OSError as e:
        raise ConfigError(f"cannot write the debug log {path}: {e.strerror}") from None
    handler.setFormatter(_SafeFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    for noisy in ("httpx", "httpcore", "aiosqlite", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    with_perm = Path(path)
    try:
        os.chmod(with_perm, 0o600)
    except OSError:
        pass


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; ``command`` (the sub-command about to run, if known) limits
    the imports to what that command needs."""
    p = CliParser(
        prog="mavera-tui",
        description="Run work against the Mavera API as fast as its limits allow, and watch "
        "the limits and the credits live. With no command: the live monitor.",
        epilog="With no MAVERA_API_KEY set (and no --base-url), everything runs against the "
        "embedded simulator and says so. Run 'mavera-tui COMMAND --help' for details; "
        "'mavera-tui config' shows the effective settings.\n\n" + EXIT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"mavera-tui {__version__}")
    _monitor_args(p)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    r = sub.add_parser(
        "run",
        help="run a batch of jobs from a JSONL file",
        description="Run every job in JOBS.jsonl as fast as the rate limit, the "
        "concurrency caps and the credits allow.",
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _run_args(r)
    r.set_defaults(func=cmd_run)

    e = sub.add_parser(
        "estimate",
        help="estimate the credit cost of a request",
        description="Upper-bound credit estimate of one request, from the "
        "vendor's documented cost model.",
        epilog="examples:\n  mavera-tui estimate /focus-groups --body "
        '\'{"sample_size": 50, "questions": ["a","b"]}\'\n'
        "  mavera-tui estimate focus-group --sample-size 50 "
        "--questions 5\n  mavera-tui estimate video --seconds 90 "
        "--balance 400\n\nexit status: 0 ok, 1 refused by pre-flight "
        "(with --balance), 2 bad input",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _estimate_args(e)
    config.add_config_flag(e)
    e.set_defaults(func=cmd_estimate)

    s = sub.add_parser(
        "sim",
        help="serve the API simulator on a local port",
        description="Serve the Mavera API simulator over HTTP (for trying the "
        "tool, and for tests). Base URL: http://HOST:PORT/api/v1",
    )
    if command is None or command == "sim":
        from .sim import server as sim_server

        sim_server.add_arguments(s)
        config.add_config_flag(s)
        s.set_defaults(func=sim_server.main)

    for name, helptext in (
        ("record", "run headless and record snapshots to SQLite"),
        ("replay", "open a recording in the monitor"),
        ("report", "print the metrics of a recording or database"),
        ("proxy", "serve a governing HTTP proxy for existing apps (base URL .../api/v1)"),
    ):
        if command is not None and command != name:
            # Listed in the help only: importing these modules (and the engine) for every
            # command would delay the monitor's first frame.
            sub.add_parser(name, help=helptext)
            continue
        mod = importlib.import_module(_COMMAND_MODULES[name])
        sp = sub.add_parser(name, help=helptext, description=(mod.__doc__ or "").split("\n")[0])
        mod.add_arguments(sp)
        if name not in ("record", "proxy"):  # they take the engine options, --config too
            config.add_config_flag(sp)
        sp.set_defaults(func=mod.main)

    cf = sub.add_parser(
        "config",
        help="print the effective settings and where each came from",
        description="Print the effective settings (defaults < config file < "
        "environment < flags) and where each value came from. "
        "The API key is never shown, only whether it is set.",
        epilog=CONFIG_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cf.add_argument("--json", action="store_true", help="machine-readable output")
    config.add_flag(cf, "ui.refresh")
    config.add_flag(cf, "run.credit_wait")
    _add_target_options(cf)
    cf.set_defaults(func=cmd_config)

    sc = sub.add_parser("screenshots", help="regenerate the screenshots in screenshots/")
    sc.add_argument("--out", default="screenshots", help="output folder (default %(default)s)")
    config.add_config_flag(sc)
    sc.set_defaults(func=cmd_screenshots)
    return p


def cmd_screenshots(args: argparse.Namespace) -> int:
    """Regenerate the screenshots; an unwritable --out is one line, exit 3."""
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".mavera-tui-write-test"
        probe.touch()
        probe.unlink()
    except OSError as e:
        return _fail(
            f"cannot write screenshots into {out}: {e.strerror or e}; pick another --out",
            EXIT_CANNOT_START,
        )
    from .ui.screenshots import main as shoot

    return shoot(str(out))


CONFIG_EPILOG = (
    f"""\
config file: --config PATH, else ${config.CONFIG_ENV}, else
  $XDG_CONFIG_HOME/mavera-tui/config.toml (default ~/.config/mavera-tui/config.toml), e.g.

  [engine]
  tier = "basic"
  request_timeout = 120.0
  [budget]
  workspace_cap = 5000

environment: {config.ENV_PREFIX}<SECTION>__<NAME>, e.g. {config.ENV_PREFIX}ENGINE__TIER=basic;
  the base URL is ${catalog.BASE_URL_ENV}, the key ${catalog.API_KEY_ENV} (never in the file).

"""
    + EXIT_EPILOG
)


def cmd_config(args: argparse.Namespace) -> int:
    """``mavera-tui config``: the effective settings and their sources; never the key."""
    loaded = loaded_config(args)
    # Only whether it is set (the engine's own test of it, without importing the engine).
    key_set = bool(os.environ.get(catalog.API_KEY_ENV, "").strip())
    if args.json:
        print(json.dumps(config.as_json(loaded, api_key_set=key_set), indent=2))
    else:
        print(config.describe(loaded, api_key_set=key_set))
    return EXIT_OK


COMMANDS = (
    "run",
    "estimate",
    "sim",
    "record",
    "replay",
    "report",
    "config",
    "screenshots",
    "proxy",
)
#: Commands whose flags include settings (the model's flags): the others' options, such as
#: sim's own --tier, are not settings of this tool.
SETTINGS_COMMANDS = (None, "run", "record", "replay", "config", "proxy")
#: The module of each command that lives outside this file.
_COMMAND_MODULES = {
    "record": "mavera_tui.record",
    "replay": "mavera_tui.recording.replay",
    "report": "mavera_tui.recording.report",
    "proxy": "mavera_tui.proxy",
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse ``argv``; a bad flag exits 2 with one line naming the command whose help to read."""
    # The first word naming a command is the command (a value such as `--db x.db` comes
    # before it); only that command's module is imported.
    command = next((a for a in argv if a in COMMANDS), "")
    parser = build_parser(
        command if command in ("sim", "record", "replay", "report", "proxy") else ""
    )
    if command and isinstance(parser, CliParser):
        parser.command_prog = f"{parser.prog} {command}"
    args, extra = parser.parse_known_args(argv)
    # argparse reports leftovers from the top-level parser; name the sub-command's help.
    owner = _subparser(parser, getattr(args, "command", None)) or parser
    if extra:
        owner.error("unrecognized arguments: " + " ".join(extra))
    _check_values(args, owner)
    return args


#: Options some sub-commands declare as plain floats that only make sense above zero (the
#: settings' flags are checked by the model's own converters: config.flag_type).
_MUST_BE_POSITIVE = ("batch_gap",)


def _check_values(args: argparse.Namespace, owner: argparse.ArgumentParser) -> None:
    """Checks that hold for every command's options, whichever module declared them."""
    for name in _MUST_BE_POSITIVE:
        v = getattr(args, name, None)
        if isinstance(v, float) and not (math.isfinite(v) and v > 0):
            owner.error(f"--{name.replace('_', '-')}: expected a positive number, got {v:g}")


def _check_debug_log(args: argparse.Namespace) -> None:
    """Create the --debug file (owner-only) before anything starts, whichever command owns
    the option, so an unwritable path is one line (exit 3), not a crash later."""
    debug = getattr(args, "debug", None)
    if isinstance(debug, str) and debug:
        try:
            os.close(os.open(debug, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
        except OSError as e:
            raise ConfigError(f"cannot write the debug log {debug}: {e.strerror}") from None


def _subparser(parser: argparse.ArgumentParser, name: str | None) -> Any:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and name:
            return action.choices.get(name)
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    func = getattr(args, "func", None)
    try:
        # Read (and check) the settings before anything starts, for every command: a bad
        # config file is one line and the same exit status whichever command met it.
        command = getattr(args, "command", None)
        args.loaded = load_config(
            getattr(args, "config", None), args=args if command in SETTINGS_COMMANDS else None
        )
        _check_debug_log(args)
        if func is None:
            return cmd_monitor(args)
        return int(func(args) or 0)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ConfigError, StoreError, JobFileError) as e:
        return _fail(str(e), EXIT_CANNOT_START)
    except BrokenPipeError:
        return EXIT_OK
    except Exception as e:  # never a traceback for the user; the debug log has it
        if logging.getLogger().handlers:  # else logging's last resort prints it on stderr
            logging.getLogger(__name__).exception("unexpected error")
        msg = re.sub(r"\s+", " ", str(e))[:300]
        return _fail(
            f"unexpected {type(e).__name__}: {msg} (run with --debug FILE for "
            "details, and please report it)",
            EXIT_CANNOT_START,
        )


if __name__ == "__main__":
    sys.exit(main())
