"""Headless record mode: run the engine with no UI and write a snapshot every interval.

``mavera-tui record --db FILE`` runs the scheduler (the demo workload on the embedded
simulator when no key and no ``--jobs`` are given), logs plain lines to stderr, and writes
one encoded snapshot per interval into the store's ``snapshots`` table, beside the ledger.
The end of ``--duration`` and SIGTERM/SIGINT stop it the same clean way: nothing new is
sent, requests in flight (already paid for) get up to ``--grace`` seconds while snapshots
go on, then a final snapshot is written and flushed. Never imports textual
(tests/test_import_hygiene).

The snapshot encoding (``zdelta1``) lives here too, because the recorder owns it and
replay and report decode it: a self-contained *keyframe* every ``keyframe_every``
snapshots, and in between *deltas* holding only what changed (top-level fields, endpoint
rows, jobs that moved to the front of the recent list or changed, new alerts), each
zlib-compressed with the preceding raw documents of the chain as preset dictionary, so
a job id or path seen a tick ago costs a back-reference, not its bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import signal
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any, TextIO

from .clock import Clock
from .snapshot import AlertView, EndpointState, JobView, Snapshot

ENCODING = "zdelta1"
#: Snapshots between keyframes: bounds how far replay decodes to reach any instant.
KEYFRAME_EVERY = 120
_ZDICT_MAX = 32768  # zlib's window: older preset-dictionary bytes would be ignored
_ROWS = {"endpoints": EndpointState, "jobs": JobView, "alerts": AlertView}
_ROW_FIELDS = {k: [f.name for f in fields(c)] for k, c in _ROWS.items()}
_TOP_FIELDS = [f.name for f in fields(Snapshot)]


class DecodeError(ValueError):
    """A snapshot blob that cannot be decoded (corrupt, or its chain is broken)."""


# ================================================================== the encoding =====

def _r(v: Any) -> Any:
    # Millisecond precision is plenty for every float a pane shows, and compresses better.
    return round(v, 3) if isinstance(v, float) else v


def snapshot_state(snap: Snapshot) -> dict[str, Any]:
    """A snapshot as the encoder's normal form: rows as positional lists, floats rounded.

    Reads attributes directly: ``dataclasses.asdict`` deep-copies and costs ~15 ms a tick
    with 200 jobs, which a recorder at 1 s should not spend."""
    state: dict[str, Any] = {}
    for name in _TOP_FIELDS:
        v = getattr(snap, name)
        if name in _ROWS:
            names = _ROW_FIELDS[name]
            state[name] = [[_r(getattr(row, n)) for n in names] for row in v]
        elif isinstance(v, dict):
            state[name] = dict(v)
        else:
            state[name] = _r(v)
    return state


def state_to_snapshot(state: dict[str, Any], names: dict[str, list[str]] | None = None,
                      *, rows: bool = True) -> Snapshot:
    """Build a Snapshot from a decoded state (``rows=False`` skips jobs/alerts: cheaper)."""
    names = names or _ROW_FIELDS
    d = {k: v for k, v in state.items() if k not in _ROWS}
    for k in _ROWS:
        if k == "endpoints" or rows:
            d[k] = [dict(zip(names.get(k, _ROW_FIELDS[k]), r, strict=False))
                    for r in state.get(k, ())]
    return Snapshot.from_dict(d)


def _list_delta(prev: list[list[Any]], new: list[list[Any]],
                key: Callable[[list[Any]], Any]) -> dict[str, Any]:
    """Encode ``new`` against ``prev``: the smallest front of ``new`` such that the rest is
    ``prev``'s order with the front removed, plus rows of the rest whose content changed."""
    pk = [key(r) for r in prev]
    nk = [key(r) for r in new]
    n = len(nk)
    front: set[Any] = set()
    k = 0
    while k <= n:
        rest = [x for x in pk if x not in front][:n - k]
        if rest == nk[k:]:
            break
        front.add(nk[k])
        k += 1
    by_key = {key(r): r for r in prev}
    upd = {str(i): new[i] for i in range(k, n) if by_key.get(nk[i]) != new[i]}
    out: dict[str, Any] = {"n": n}
    if k:
        out["f"] = new[:k]
    if upd:
        out["u"] = upd
    return out


def _list_apply(prev: list[list[Any]], delta: dict[str, Any],
                key: Callable[[list[Any]], Any]) -> list[list[Any]]:
    frontrows = delta.get("f", [])
    front = {key(r) for r in frontrows}
    n = delta["n"]
    out = list(frontrows) + [r for r in prev if key(r) not in front][:n - len(frontrows)]
    for i, row in delta.get("u", {}).items():
        out[int(i)] = row
    return out


def _job_key(r: list[Any]) -> Any:
    return r[0]


def _alert_key(r: list[Any]) -> Any:
    return tuple(r)


class SnapshotEncoder:
    """Turns successive snapshots into ``zdelta1`` blobs (stateful: feed them in order)."""

    def __init__(self, keyframe_every: int = KEYFRAME_EVERY, level: int = 6):
        self.keyframe_every = max(1, keyframe_every)
        self.level = level
        self._prev: dict[str, Any] | None = None
        self._seq = 0
        self._since_key = 0
        self._chain = b""

    def encode(self, snap: Snapshot) -> bytes:
        state = snapshot_state(snap)
        self._seq += 1
        if self._prev is None or self._since_key >= self.keyframe_every:
            doc: dict[str, Any] = {"s": self._seq, "fields": _ROW_FIELDS, "d": state}
            raw = _dumps(doc)
            comp = zlib.compressobj(self.level)
            blob = b"K" + comp.compress(raw) + comp.flush()
            self._since_key = 0
            self._chain = raw[-_ZDICT_MAX:]
        else:
            doc = {"s": self._seq}
            prev = self._prev
            changed = {k: v for k, v in state.items()
                       if k not in _ROWS and prev.get(k) != v}
            if changed:
                doc["c"] = changed
            pe, ne = prev["endpoints"], state["endpoints"]
            if len(pe) != len(ne):
                doc["e"] = {"all": ne}
            else:
                e = {str(i): r for i, r in enumerate(ne) if pe[i] != r}
                if e:
                    doc["e"] = e
            if prev["jobs"] != state["jobs"]:
                doc["j"] = _list_delta(prev["jobs"], state["jobs"], _job_key)
            if prev["alerts"] != state["alerts"]:
                doc["a"] = _list_delta(prev["alerts"], state["alerts"], _alert_key)
            raw = _dumps(doc)
            comp = zlib.compressobj(self.level, zdict=self._chain) if self._chain \
                else zlib.compressobj(self.level)
            blob = b"D" + comp.compress(raw) + comp.flush()
            self._chain = (self._chain + raw)[-_ZDICT_MAX:]
        self._since_key += 1
        self._prev = state
        return blob


class SnapshotDecoder:
    """Inverse of SnapshotEncoder: feed blobs in recorded order; ``decode`` returns the
    state dict (see ``state_to_snapshot``). A delta whose chain is broken (a row lost, or a
    second recording session interleaved) raises DecodeError until the next keyframe."""

    def __init__(self) -> None:
        self.state: dict[str, Any] | None = None
        self.names: dict[str, list[str]] = dict(_ROW_FIELDS)
        self._seq: int | None = None
        self._chain = b""

    def reset(self) -> None:
        self.state, self._seq, self._chain = None, None, b""

    def decode(self, blob: bytes) -> dict[str, Any]:
        if not blob:
            raise DecodeError("empty snapshot")
        kind, body = blob[:1], blob[1:]
        try:
            if kind == b"K":
                raw = zlib.decompress(body)
                doc = json.loads(raw)
                self.names = {k: list(v) for k, v in doc.get("fields", _ROW_FIELDS).items()}
                self.state = doc["d"]
                self._chain = raw[-_ZDICT_MAX:]
            elif kind == b"D":
                if self.state is None:
                    raise DecodeError("delta without a keyframe before it")
                d = zlib.decompressobj(zdict=self._chain) if self._chain \
                    else zlib.decompressobj()
                raw = d.decompress(body) + d.flush()
                doc = json.loads(raw)
                if self._seq is None or doc.get("s") != self._seq + 1:
                    raise DecodeError("snapshot chain broken")
                st = dict(self.state)
                st.update(doc.get("c", {}))
                e = doc.get("e")
                if e is not None:
                    if "all" in e:
                        st["endpoints"] = e["all"]
                    else:
                        eps = list(st["endpoints"])
                        for i, r in e.items():
                            eps[int(i)] = r
                        st["endpoints"] = eps
                if "j" in doc:
                    st["jobs"] = _list_apply(st["jobs"], doc["j"], _job_key)
                if "a" in doc:
                    st["alerts"] = _list_apply(st["alerts"], doc["a"], _alert_key)
                self.state = st
                self._chain = (self._chain + raw)[-_ZDICT_MAX:]
            else:
                raise DecodeError(f"unknown snapshot kind {kind!r}")
        except DecodeError:
            self.reset()
            raise
        except (zlib.error, ValueError, KeyError, TypeError, IndexError) as e:
            self.reset()
            raise DecodeError(f"corrupt snapshot: {e}") from None
        self._seq = doc.get("s")
        return self.state

    def snapshot(self, blob: bytes, *, rows: bool = True) -> Snapshot:
        return state_to_snapshot(self.decode(blob), self.names, rows=rows)


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


# ================================================================== the recorder =====

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``10m``, ``2h`` or ``1d``; ValueError otherwise."""
    m = _DURATION.match(str(text))
    if not m:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90, 90s, 10m, 2h)")
    return float(m.group(1)) * _UNIT[m.group(2)]


def _duration_arg(text: str) -> float:
    try:
        v = parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if v <= 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return v


DEFAULT_GRACE = 120.0

def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``record`` subcommand's options: its own, then the engine options every engine
    command takes (declared from the settings model, as are --interval, --duration and
    --grace: not given, the config file, the environment or the default decides)."""
    from . import config
    from .cli import _add_target_options, _port

    p.add_argument("--db", required=True, help="SQLite file to record into (created 0600)")
    p.add_argument("--jobs", help="JSONL job file to run (default: the demo workload on the "
                                  "embedded simulator when no key is set)")
    config.add_flag(p, "record.duration", type_=_duration_arg,
                    help_="send no new requests after this long (seconds, or 90s / 10m / 2h / "
                          "1d), then wait for those in flight, at most --grace: the recording "
                          "ends within duration + grace")
    config.add_flag(p, "record.interval", type_=_duration_arg,
                    help_="seconds between snapshots (or 500ms, 2s, 1m)")
    p.add_argument("--metrics-port", type=_port, default=None,
                   help="serve Prometheus metrics on 127.0.0.1:PORT")
    # A second signal during the grace stops at once (in-flight jobs are then 'outcome
    # unknown').
    config.add_flag(p, "record.grace",
                    help_="at the end of --duration or on SIGTERM/SIGINT, seconds to let "
                          "requests in flight finish (a signal during the wait stops at once)")
    _add_target_options(p)


class Recorder:
    """One recording: the engine, the snapshot loop, the log lines, a clean stop.

    ``await Recorder(...).run()`` returns the exit code. Tests and the benchmark build it
    directly with a virtual clock; ``request_stop()`` is what SIGTERM/SIGINT call.
    """

    def __init__(self, settings: Any, *, jobs: str | None = None,
                 duration: float | None = None, interval: float = 1.0,
                 metrics_port: int | None = None, grace: float = DEFAULT_GRACE,
                 clock: Clock | None = None, sim: Any = None, out: TextIO | None = None,
                 demo_kw: dict[str, Any] | None = None,
                 keyframe_every: int = KEYFRAME_EVERY, job_file: Any = None):
        self.settings = settings
        self.jobs_path = jobs
        self.job_file = job_file  # (specs, line errors) already read from ``jobs``, if any
        self.duration = duration
        self.interval = max(0.01, float(interval))
        self.metrics_port = metrics_port
        self.grace = grace
        self.clock = clock or Clock()
        self.sim = sim
        self.out = out or sys.stderr
        self.demo_kw = demo_kw or {}
        self.encoder = SnapshotEncoder(keyframe_every)
        self.engine: Any = None
        self.latest: Snapshot | None = None
        self.snapshots_written = 0
        self.bytes_written = 0
        self.encode_seconds = 0.0
        self._stop: asyncio.Event | None = None
        self._hurry: asyncio.Event | None = None
        self._seen_alerts: set[tuple[float, str, str]] = set()
        self._last_t = 0.0
        self.stop_reason = ""

    def log(self, msg: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        print(f"{stamp} record: {msg}", file=self.out, flush=True)

    def request_stop(self, why: str = "stop requested") -> None:
        if self._stop is not None and not self._stop.is_set():
            self.stop_reason = why
            self._stop.set()
        elif self._hurry is not None:
            self._hurry.set()  # a second signal: do not wait for in-flight requests

    def _write(self, snap: Snapshot) -> None:
        # The row's key is the snapshot's own (rounded) time, kept strictly increasing.
        t = round(snap.t, 3)
        t = t if t > self._last_t else round(self._last_t + 0.001, 3)
        self._last_t = t
        t0 = time.perf_counter()
        blob = self.encoder.encode(snap)
        self.encode_seconds += time.perf_counter() - t0
        self.engine.store.add_snapshot(t, blob)
        self.snapshots_written += 1
        self.bytes_written += len(blob)
        self.latest = snap

    def _log_alerts(self, snap: Snapshot) -> None:
        for a in reversed(snap.alerts):
            k = (a.t, a.kind, a.message)
            if k not in self._seen_alerts:
                self._seen_alerts.add(k)
                self.log(f"alert {a.level} {a.kind}: {a.message}")
        if len(self._seen_alerts) > 1000:
            self._seen_alerts = {(a.t, a.kind, a.message) for a in snap.alerts}

    async def run(self) -> int:
        from .engine import Engine
        from .store import StoreError

        self._stop = asyncio.Event()
        self._hurry = asyncio.Event()
        self.engine = Engine(self.settings, clock=self.clock, sim=self.sim)
        try:
            sched = await self.engine.start()
        except StoreError as e:
            self.log(f"error: {e}")
            return 2
        except Exception as e:  # a bad URL, config: one line, no traceback
            self.log(f"error: {type(e).__name__}: {e}")
            return 2
        self.sim = self.engine.sim
        store = self.engine.store
        store.set_meta("snapshot_encoding", ENCODING)
        store.set_meta("snapshot_interval", f"{self.interval:g}")
        store.set_meta("recorded_target", self.engine.target)
        metrics = None
        demo: asyncio.Task[None] | None = None
        try:
            self.log(f"recording into {store.path} every {self.interval:g} s; "
                     f"{self.engine.notice}")
            jobs_mode = False
            if self.jobs_path:
                submitted = await self._submit_jobs(sched)
                if submitted is None:
                    return 2
                jobs_mode = True
            elif self.engine.simulated:
                from .demo import start_demo

                demo = start_demo(sched, **self.demo_kw)
                self.log("no --jobs: recording the demo workload")
            else:
                self.log("no --jobs: recording the engine's state (no jobs submitted)")
            if self.metrics_port is not None:
                from .metrics import serve_metrics

                metrics = serve_metrics(lambda: self.latest, self.metrics_port)
                self.log(f"Prometheus metrics on http://127.0.0.1:{metrics.port}/metrics")
            await self._loop(sched, jobs_mode)
        finally:
            if demo is not None:
                demo.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await demo
            await self._shutdown(sched)
            if metrics is not None:
                metrics.close()
        return 0

    async def _submit_jobs(self, sched: Any) -> int | None:
        from .jobs import JobFileError, read_job_file

        try:
            specs, errors = self.job_file or read_job_file(self.jobs_path)
        except (JobFileError, OSError) as e:
            self.log(f"error: {e}")
            return None
        for err in errors:
            print(f"{self.jobs_path}: {err}", file=self.out, flush=True)
        accepted, refused = await sched.submit_many(specs)
        for msg in refused:
            print(f"{self.jobs_path}: {msg}", file=self.out, flush=True)
        self.log(f"submitted {len(accepted)} jobs from {self.jobs_path}"
                 + (f" ({len(errors) + len(refused)} refused)" if errors or refused else ""))
        return len(accepted)

    async def _loop(self, sched: Any, jobs_mode: bool) -> None:
        assert self._stop is not None
        clock = self.clock
        start = clock.now()
        progress_every = max(1, int(round(60.0 / self.interval)))
        tick = 0
        next_at = start
        while True:
            snap = sched.snapshot()
            self._write(snap)
            self._log_alerts(snap)
            tick += 1
            if tick % progress_every == 0:
                self.log(_progress(snap))
            now = clock.now()
            if jobs_mode and sched.unfinished() == 0:
                self.stop_reason = "all jobs done"
                self._stop.set()  # a signal from here on means: do not wait
                break
            if self.duration is not None and now - start >= self.duration - 1e-9:
                self.stop_reason = f"duration {self.duration:g} s reached"
                self._stop.set()
                break
            if self.engine.store.write_error:
                self.log(f"store: {self.engine.store.write_error}")
            next_at += self.interval
            if next_at < now:  # fell behind (a stalled disk): do not burst to catch up
                next_at = now
            if self.duration is not None:
                next_at = min(next_at, start + self.duration)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), max(0.0, next_at - now))
            if self._stop.is_set():
                break

    async def _shutdown(self, sched: Any) -> None:
        """Stop admitting, wait for what is in flight (it is paid for: its outcome and
        charge belong in the ledger) for at most ``grace`` seconds while still recording a
        snapshot every interval, then write the final snapshot, flush and close. This is
        the same at the end of ``--duration`` and on a signal, so a recording ends within
        duration + grace. Jobs still in flight after the grace (or a second signal) stay
        'in flight' in the store: a restart reports them as outcome unknown, never re-sends
        them blindly."""
        assert self._hurry is not None
        clock = self.clock
        waiting = sched.snapshot().in_flight
        closing = asyncio.ensure_future(sched.close())  # admits nothing from here on
        reason = self.stop_reason or "stopping"
        if waiting:
            # One line, said once: why it stops, what it waits for, for how long at most.
            again = ("signal again" if reason.startswith("SIG") else "Ctrl-C or SIGTERM")
            self.log(f"stopping: {reason}: no new requests; waiting up to {self.grace:g} s "
                     f"for the {waiting} request(s) in flight (they are paid for; {again} "
                     "to stop at once)")
        else:
            self.log(f"stopping: {reason}")
        hurry = asyncio.ensure_future(self._hurry.wait())
        started = clock.now()
        deadline = started + max(0.0, self.grace)
        while not closing.done() and not hurry.done():
            left = deadline - clock.now()
            if left <= 0:
                break
            await asyncio.wait({closing, hurry}, timeout=min(self.interval, left),
                               return_when=asyncio.FIRST_COMPLETED)
            if not closing.done():  # keep the recording going while they land
                with contextlib.suppress(Exception):
                    snap = sched.snapshot()
                    self._write(snap)
                    self._log_alerts(snap)
        hurry.cancel()
        waited = clock.now() - started
        if not closing.done():
            n = sched.snapshot().in_flight
            when = "on a signal to stop at once" if self._hurry.is_set() else \
                f"after {self.grace:g} s"
            self.log(f"{n} request(s) still in flight {when}: abandoning them (they stay "
                     "'in flight' in the store: outcome unknown)")
            await sched.abort()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await closing
        final = sched.snapshot()
        with contextlib.suppress(Exception):
            self._write(final)
        self._log_alerts(final)
        self.engine.store.set_meta("recording_stopped", f"{final.t:.3f}")
        await self.engine.stop()
        self.log(f"stopped: {self.snapshots_written} snapshots "
                 f"({self.bytes_written / 1024:.0f} KiB)"
                 + (f" after waiting {waited:.0f} s for requests in flight" if waiting else "")
                 + f"; {_progress(final)}")


def _progress(s: Snapshot) -> str:
    return (f"up {s.elapsed:.0f} s: {s.requests_total} requests, "
            f"{s.credits_used_total} credits, {s.responses_429_total} 429s, "
            f"queue {s.queue_depth}, in flight {s.in_flight}, "
            f"done {sum(s.finished.values())}/{s.jobs_total}")


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
    rec = Recorder(settings, jobs=args.jobs, duration=rc.duration, interval=rc.interval,
                   metrics_port=args.metrics_port, grace=rc.grace, job_file=job_file)

    async def go() -> int:
        loop = asyncio.get_running_loop()
        for sig, name in ((signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "SIGINT")):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, rec.request_stop, name)
        return await rec.run()

    try:
        code = asyncio.run(go())
    except KeyboardInterrupt:  # a SIGINT before the handler was installed
        return EXIT_INTERRUPTED
    # Recorder.run answers 2 when the engine could not start (a bad URL, a database in
    # use): that is EXIT_CANNOT_START in every command.
    return EXIT_CANNOT_START if code == 2 else code
