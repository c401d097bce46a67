"""The headless recorder: run the engine with no UI and write a snapshot every interval.

The end of ``duration`` and SIGTERM/SIGINT stop it the same clean way: nothing new is
sent, requests in flight (already paid for) get up to ``grace`` seconds while snapshots
go on, then a final snapshot is written and flushed. What it writes (snapshot blocks, the
packing of the ledger and jobs, retention with ``keep``) is ``RecordingWriter``'s
(writer.py). Never imports textual (tests/test_import_hygiene).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TextIO

from ..clock import Clock
from ..snapshot import Snapshot
from .codec import BLOCK_ENCODING, BLOCK_KEYFRAME_EVERY, BLOCK_SNAPSHOTS
from .writer import PACK_EVERY, PRUNE_EVERY, RecordingWriter

if TYPE_CHECKING:
    from ..control import RunControl
    from ..engine import Engine

__all__ = ["DEFAULT_GRACE", "PRUNE_EVERY", "Recorder"]

DEFAULT_GRACE = 120.0


class Recorder:
    """One recording: the engine, the snapshot loop, the log lines, a clean stop.

    ``await Recorder(...).run()`` returns the exit code. Tests and the benchmark build it
    directly with a virtual clock; ``request_stop()`` is what SIGTERM/SIGINT call.
    """

    def __init__(
        self,
        settings: Any,
        *,
        jobs: str | None = None,
        duration: float | None = None,
        interval: float = 1.0,
        metrics_port: int | None = None,
        grace: float = DEFAULT_GRACE,
        clock: Clock | None = None,
        sim: Any = None,
        out: TextIO | None = None,
        demo_kw: dict[str, Any] | None = None,
        keyframe_every: int = BLOCK_KEYFRAME_EVERY,
        job_file: Any = None,
        keep: float | None = None,
        prune_every: float = PRUNE_EVERY,
        proxy_listen: str | None = None,
        block_snapshots: int = BLOCK_SNAPSHOTS,
        pack_every: float | None = PACK_EVERY,
    ):
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
        self.engine: Any = None
        self.latest: Snapshot | None = None
        self._stop: asyncio.Event | None = None
        self._hurry: asyncio.Event | None = None
        self._seen_alerts: set[tuple[float, str, str]] = set()
        self.stop_reason = ""
        self.keep = keep  # retention in seconds; None keeps everything
        # What the writer is built with once the store is open (see ``run``).
        self._writer_kw: dict[str, Any] = {
            "keyframe_every": keyframe_every,
            "block_snapshots": block_snapshots,
            "keep": keep,
            "prune_every": prune_every,
            "pack_every": pack_every,
        }
        self.writer: RecordingWriter | None = None
        # ``record --proxy ADDR``: serve the governing proxy (MAVERA_API_KEY for every app)
        # and record its engine.
        self.proxy_listen = proxy_listen
        self.proxy: Any = None
        self.fleet_watch: Any = None  # with --shared: the key's fleet, recorded with each snapshot

    def log(self, msg: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        print(f"{stamp} record: {msg}", file=self.out, flush=True)

    def request_stop(self, why: str = "stop requested") -> None:
        if self._stop is not None and not self._stop.is_set():
            self.stop_reason = why
            self._stop.set()
        elif self._hurry is not None:
            self._hurry.set()  # a second signal: do not wait for in-flight requests

    # What the writer counted (zero before the store is open), for the log and the bench.
    @property
    def snapshots_written(self) -> int:
        return self.writer.snapshots_written if self.writer else 0

    @property
    def bytes_written(self) -> int:
        return self.writer.bytes_written if self.writer else 0

    @property
    def encode_seconds(self) -> float:
        return self.writer.encode_seconds if self.writer else 0.0

    @property
    def pruned(self) -> dict[str, int]:
        return self.writer.pruned if self.writer else {"ledger": 0, "snapshots": 0, "jobs": 0}

    async def prune(self) -> dict[str, int]:
        """One retention pass now (``RecordingWriter.prune``); {} before the store is open."""
        return await self.writer.prune() if self.writer else {}

    def _write(self, snap: Snapshot) -> None:
        if self.fleet_watch is not None:
            snap = replace(snap, fleet=self.fleet_watch.latest)
        assert self.writer is not None
        self.writer.write(snap)
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
        from ..engine import Engine
        from ..store import StoreError

        self._stop = asyncio.Event()
        self._hurry = asyncio.Event()
        try:
            if self.proxy_listen is not None:
                assert self.proxy_listen is not None
                self.proxy, self.engine, sched = await start_proxy(
                    self.settings, self.sim, self.proxy_listen
                )
            else:
                self.engine = Engine(self.settings, clock=self.clock, sim=self.sim)
                assert self._stop is not None
                sched = await self.engine.start_unless(self._stop)
                if sched is None:
                    self.log("interrupted while starting; nothing recorded")
                    return 130
        except StoreError as e:
            self.log(f"error: {e}")
            return 2
        except Exception as e:  # a bad URL, config: one line, no traceback
            self.log(f"error: {type(e).__name__}: {e}")
            return 2
        self.sim = self.engine.sim
        if self.engine.fleet is not None:
            from ..shared.watch import FleetWatch

            self.fleet_watch = FleetWatch(self.engine.fleet, wall=self.clock.wall)
            await self.fleet_watch.refresh()  # the first snapshot has the fleet already
            self.fleet_watch.start()
            await start_archive(self.engine, self.log)
        store = self.engine.store
        self.writer = RecordingWriter(store, self.clock, self.log, **self._writer_kw)
        store.set_meta("snapshot_encoding", BLOCK_ENCODING)
        store.set_meta("snapshot_interval", f"{self.interval:g}")
        store.set_meta("recorded_target", self.engine.target)
        metrics = None
        demo: asyncio.Task[None] | None = None
        try:
            self.log(f"recording into {store.path} every {self.interval:g} s; {self.engine.notice}")
            jobs_mode = False
            if self.proxy is not None:
                self.log(f"serving the proxy on {self.proxy.url} (MAVERA_API_KEY for every app)")
            elif self.jobs_path:
                submitted = await submit_job_file(
                    sched, self.jobs_path, self.job_file, self.out, self.log
                )
                if submitted is None:
                    return 2
                jobs_mode = True
            elif self.engine.simulated:
                from ..demo import start_demo

                demo = start_demo(sched, **self.demo_kw)
                self.log("no --jobs: recording the demo workload")
            else:
                self.log("no --jobs: recording the engine's state (no jobs submitted)")
            if self.metrics_port is not None:
                from ..metrics import serve_metrics

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

    async def _loop(self, sched: RunControl, jobs_mode: bool) -> None:
        assert self._stop is not None
        clock = self.clock
        start = clock.now()
        progress_every = max(1, int(round(60.0 / self.interval)))
        tick = 0
        next_at = start
        while True:
            assert self.writer is not None
            await self.writer.maintain()
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

    async def _shutdown(self, sched: RunControl) -> None:
        """Stop admitting, wait for what is in flight (it is paid for: its outcome and
        charge belong in the ledger) for at most ``grace`` seconds while still recording a
        snapshot every interval, then write the final snapshot, flush and close. This is
        the same at the end of ``--duration`` and on a signal, so a recording ends within
        duration + grace. Jobs still in flight after the grace (or a second signal) stay
        'in flight' in the store: a restart reports them as outcome unknown, never re-sends
        them blindly."""
        assert self._hurry is not None
        clock = self.clock
        if self.proxy is not None:
            self.proxy.closing = True  # new requests: 503 at once, never queued
        waiting = sched.snapshot().in_flight
        closing = asyncio.ensure_future(sched.close())  # admits nothing from here on
        reason = self.stop_reason or "stopping"
        if waiting:
            # One line, said once: why it stops, what it waits for, for how long at most.
            again = "signal again" if reason.startswith("SIG") else "Ctrl-C or SIGTERM"
            self.log(
                f"stopping: {reason}: no new requests; waiting up to {self.grace:g} s "
                f"for the {waiting} request(s) in flight (they are paid for; {again} "
                "to stop at once)"
            )
        else:
            self.log(f"stopping: {reason}")
        hurry = asyncio.ensure_future(self._hurry.wait())
        started = clock.now()
        deadline = started + max(0.0, self.grace)
        while not closing.done() and not hurry.done():
            left = deadline - clock.now()
            if left <= 0:
                break
            await asyncio.wait(
                {closing, hurry},
                timeout=min(self.interval, left),
                return_when=asyncio.FIRST_COMPLETED,
            )
            if not closing.done():  # keep the recording going while they land
                with contextlib.suppress(Exception):
                    snap = sched.snapshot()
                    self._write(snap)
                    self._log_alerts(snap)
        hurry.cancel()
        waited = clock.now() - started
        if not closing.done():
            n = sched.snapshot().in_flight
            when = (
                "on a signal to stop at once" if self._hurry.is_set() else f"after {self.grace:g} s"
            )
            self.log(
                f"{n} request(s) still in flight {when}: abandoning them (they stay "
                "'in flight' in the store: outcome unknown)"
            )
            await sched.abort()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await closing
        final = sched.snapshot()
        with contextlib.suppress(Exception):
            self._write(final)
        self._log_alerts(final)
        assert self.writer is not None
        await self.writer.finish()
        self.engine.store.set_meta("recording_stopped", f"{final.t:.3f}")
        if self.fleet_watch is not None:
            await self.fleet_watch.close()
        await self.engine.stop()
        if self.proxy is not None:
            await self.proxy.stop()  # its server, and the store it opened
        self.log(
            f"stopped: {self.snapshots_written} snapshots "
            f"({self.bytes_written / 1024:.0f} KiB)"
            + (f" after waiting {waited:.0f} s for requests in flight" if waiting else "")
            + f"; {_progress(final)}"
            + archive_line(self.engine)
        )


def _progress(s: Snapshot) -> str:
    return (
        f"up {s.elapsed:.0f} s: {s.requests_total} requests, "
        f"{s.credits_used_total} credits, {s.responses_429_total} 429s, "
        f"queue {s.queue_depth}, in flight {s.in_flight}, "
        f"done {sum(s.finished.values())}/{s.jobs_total}"
    )


async def start_proxy(settings: Any, sim: Any, listen: str) -> tuple[Any, Any, Any]:
    """``record --proxy``: the proxy in --key-from-env mode (one key: one engine to record)
    on the recording's store; returns (proxy, its engine, its scheduler)."""
    from ..proxy import Proxy, ProxyOptions, parse_listen

    host, port = parse_listen(listen)
    proxy = Proxy(settings.config, ProxyOptions(key_from_env=True, db=settings.db, sim=sim))
    try:
        await proxy.start(host, port)
    except BaseException:
        await proxy.stop()
        raise
    gov = next(iter(proxy.governors.values()))
    return proxy, gov.engine, gov.scheduler


async def submit_job_file(
    sched: RunControl, path: str, job_file: Any, out: TextIO, log: Callable[[str], None]
) -> int | None:
    """Submit the jobs of ``path`` (already read into ``job_file`` if not None), each bad
    line and refused job one line on ``out``; the number accepted, None if unreadable."""
    from ..jobs import JobFileError, read_job_file

    try:
        specs, errors = job_file or read_job_file(path)
    except (JobFileError, OSError) as e:
        log(f"error: {e}")
        return None
    for err in errors:
        print(f"{path}: {err}", file=out, flush=True)
    submitted = await sched.submit_many(specs)
    refused = submitted.messages()
    for msg in refused:
        print(f"{path}: {msg}", file=out, flush=True)
    log(
        f"submitted {len(submitted.accepted)} jobs from {path}"
        + (f" ({len(errors) + len(refused)} refused)" if errors or refused else "")
    )
    return len(submitted.accepted)


async def start_archive(engine: Engine, log: Callable[[str], None]) -> None:
    """With ``--shared``: the fleet's ledger (the key's Redis stream) is archived into the
    recording (``fleet_ledger``), from where the last recording of this file stopped;
    ``report`` gives the fleet's totals from it."""
    await engine.start_archive()  # a no-op when the engine started it already
    arch = engine.archive
    if arch is not None:
        where = "its start" if arch.last_id == "0-0" else f"after entry {arch.last_id}"
        log(f"archiving the fleet's ledger stream from {where}")


def archive_line(engine: Engine | None) -> str:
    """The fleet ledger's part of the recorder's closing line ("" without an archive)."""
    arch = engine.archive if engine is not None else None
    if arch is None:
        return ""
    s = arch.stats()
    gaps = f", {s['gaps']} gap(s), {s['missing']} entries known missing" if s["gaps"] else ""
    return f"; fleet ledger: {s['archived']} entries archived{gaps}"
