"""The live monitor: the engine and the Textual app in one event loop.

The app draws its first frame at once while the engine starts behind it (opening the
store, fetching the balance); until then the panes show a "starting" snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from typing import TYPE_CHECKING, Any

from .estimate import Estimate, Verdict
from .jobs import JobSpec
from .snapshot import BLOCKED, FAILED, OUTCOME_UNKNOWN, AlertView, JobView, Snapshot

if TYPE_CHECKING:
    from .control import RunControl
    from .engine import Engine, Settings

log = logging.getLogger(__name__)


class LiveEngine:
    """EngineControl over an Engine that starts in the background.

    Give it the Engine, or ``settings=`` to build one in ``boot()`` (after the first frame:
    the engine's imports, httpx and aiosqlite, cost a few hundred milliseconds).
    """

    def __init__(
        self,
        engine: Engine | None = None,
        *,
        settings: Settings | None = None,
        proxy_listen: str | None = None,
    ):
        """``proxy_listen``: serve the governing proxy there (``--key-from-env``: one key,
        the engine shown) instead of building a plain engine."""
        if (engine is None) == (settings is None):
            raise TypeError("LiveEngine takes an Engine or settings=, exactly one of them")
        self.engine: Any = engine
        self._settings = settings
        self.proxy_listen = proxy_listen
        self.proxy: Any = None
        self.error: str | None = None
        self._demo: asyncio.Task[None] | None = None
        #: The last snapshot handed to the app: what other threads (metrics) may read.
        self.last: Snapshot = Snapshot(mode="starting")
        self._answers: _AnswerWatch | None = None
        self._retries = 0
        self._fleet: Any = None  # with --shared: a FleetWatch (the key's fleet, read ~1/s)

    @property
    def durable(self) -> bool:
        """True when jobs are kept in a database (--db): queued jobs survive a quit."""
        if self.engine is not None:
            return bool(self.engine.settings.db)
        return bool(getattr(self._settings, "db", None))

    @property
    def sched(self) -> RunControl | None:
        """The started scheduler, held through its interface (None while starting)."""
        return self.engine.scheduler if self.engine is not None else None

    def snapshot(self) -> Snapshot:
        if self.sched is not None:
            snap = self.sched.snapshot()
            if self._answers is not None and self._answers.at is not None:
                # When the server last answered, and how fast: the headroom pane shows how
                # old the server's numbers are, and the latency when it stops answering.
                snap = dataclasses.replace(
                    snap, last_answer_t=self._answers.at, last_latency=self._answers.latency
                )
            if self._fleet is not None:
                snap = dataclasses.replace(snap, fleet=self._fleet.latest)
            self.last = snap
            return self.last
        alerts: tuple[AlertView, ...] = ()
        if self.error:
            alerts = (AlertView(0.0, "error", "start", self.error),)
        target = self.engine.target if self.engine is not None else ""
        return Snapshot(mode="starting", target=target or "starting...", alerts=alerts)

    async def submit(self, spec: JobSpec) -> str:
        if self.sched is None:
            raise ValueError("the engine is still starting; try again in a moment")
        return await self.sched.submit(spec)

    def pause(self) -> None:
        if self.sched is not None:
            self.sched.pause()

    def resume(self) -> None:
        if self.sched is not None:
            self.sched.resume()

    def cancel(self, job_id: str) -> bool:
        return self.sched.cancel(job_id) if self.sched is not None else False

    def preflight(self, est: Estimate) -> Verdict:
        if self.sched is None:
            return Verdict(False, est.high, est.high, 0, 0, 0, "the engine is still starting")
        return self.sched.preflight(est)

    # --- OperatorControl: job detail, history, retry --------------------------------------

    async def job_attempts(self, job_id: str) -> list[dict[str, Any]] | None:
        store = self.engine.store if self.engine is not None else None
        if store is None:
            return None
        await store.flush()  # the ledger is write-behind: include the latest attempt
        return await store.job_attempts(job_id)

    async def jobs_page(
        self,
        offset: int,
        limit: int,
        text: str = "",
        order: str = "created",
        descending: bool = True,
    ) -> tuple[list[JobView], int]:
        store = self.engine.store if self.engine is not None else None
        if store is not None:
            rows, total = await store.jobs_page(offset, limit, text, order, descending)
            return [
                JobView(r[0], r[3], r[1], r[2], r[4], r[5], r[6], r[7], r[8], r[10], r[11], r[9])
                for r in rows
            ], total
        # No database: the jobs this engine holds in memory (the monitor keeps finished
        # ones only among the recent jobs).
        sched = self.sched
        views = sched.held_views() if sched is not None else []
        return page_of(views, offset, limit, text, order, descending)

    async def retry(self, job_id: str) -> str:
        sched = self.sched
        if sched is None:
            raise ValueError("the engine is still starting; try again in a moment")
        held, view = sched.job_spec(job_id), sched.job_view(job_id)
        if held is not None and view is not None:
            spec, state = held, view.state
        else:  # finished and out of memory (the monitor keeps no finished jobs): the store
            store = self.engine.store
            row = await store.job_request(job_id) if store is not None else None
            if row is None:
                raise ValueError(f"{job_id} is not known to this engine or its database")
            method, path, body, priority, state = row
            spec = JobSpec(job_id, method, path, body, priority)
        if state not in RETRYABLE:
            raise ValueError(
                f"{job_id} is {state}: only failed, blocked or unknown-outcome jobs are retried"
            )
        base = job_id.split("~r")[0]
        while True:
            self._retries += 1
            new_id = f"{base}~r{self._retries}"
            if sched.job_view(new_id) is None:
                break
        # A retry id already in the database (an earlier session's) is refused by submit
        # with a clear message; the next press takes the next number.
        return await sched.submit(dataclasses.replace(spec, id=new_id))

    def set_priority(self, job_id: str, priority: int) -> bool:
        return self.sched.set_priority(job_id, priority) if self.sched is not None else False

    async def boot(self, specs: list[JobSpec], demo: bool) -> None:
        try:
            if self.engine is None and self.proxy_listen is not None:
                sched = await self._start_proxy()
            else:
                if self.engine is None:
                    from .engine import Engine

                    assert self._settings is not None  # the constructor took one of the two
                    self.engine = Engine(self._settings)
                sched = await self.engine.start()
            self._answers = _AnswerWatch(sched.transport, sched.clock.wall)
            sched.transport = self._answers
            fleet = getattr(self.engine, "fleet", None)  # the proxy's engine has one too
            if fleet is not None:
                from .shared.watch import FleetWatch

                self._fleet = FleetWatch(fleet)
                self._fleet.start()
        except Exception as e:  # shown in the alerts pane; the app stays up to say so
            log.exception("engine failed to start")
            self.error = f"could not start: {e}"
            return
        if specs:
            submitted = await sched.submit_many(specs)
            for line_error in submitted.messages(duplicates=False):
                sched.alert("warning", "job_file", line_error)
        if self.proxy is not None:
            sched.alert("info", "proxy", f"serving the proxy on {self.proxy.url}")
        elif demo and self.engine is not None and self.engine.simulated:
            from .demo import start_demo

            self._demo = start_demo(sched)

    async def _start_proxy(self) -> Any:
        from .proxy import Proxy, ProxyOptions, parse_listen

        assert self._settings is not None and self.proxy_listen is not None
        host, port = parse_listen(self.proxy_listen)
        self.proxy = Proxy(
            self._settings.config, ProxyOptions(key_from_env=True, db=self._settings.db)
        )
        try:
            await self.proxy.start(host, port)
        except BaseException:
            await self.proxy.stop()
            self.proxy = None
            raise
        gov = next(iter(self.proxy.governors.values()))
        self.engine = gov.engine
        return gov.scheduler

    async def shutdown(self) -> None:
        if self.proxy is not None:
            self.proxy.closing = True  # new requests: 503 at once
        await self._stop_engine()
        if self.proxy is not None:
            with contextlib.suppress(Exception):
                await self.proxy.stop()

    async def _stop_engine(self) -> None:
        if self._demo is not None:
            self._demo.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._demo
        if self._fleet is not None:
            await self._fleet.close()
        if self.engine is None:
            return
        if self.sched is not None:
            self.sched.pause()
        # In-flight requests get a moment; then they are left "in flight" in the store, so a
        # restart marks them 'outcome unknown' instead of silently re-sending them.
        try:
            await asyncio.wait_for(self.engine.stop(), timeout=2.0)
        except (TimeoutError, Exception):
            await self.engine.stop(abort=True)


#: Final states a job can be retried from (sent again under a new id).
RETRYABLE = (FAILED, BLOCKED, OUTCOME_UNKNOWN)


class _AnswerWatch:
    """Wraps the scheduler's transport to note when the server last answered, and how
    fast (anything with a status; timeouts and dropped connections are not answers)."""

    def __init__(self, inner: Any, wall: Any):
        self.inner = inner
        self.wall = wall
        self.at: float | None = None
        self.latency: float | None = None

    async def request(self, *a: Any, **kw: Any) -> Any:
        out = await self.inner.request(*a, **kw)
        if getattr(out, "status", None) is not None:
            self.at = self.wall()
            self.latency = getattr(out, "latency", None)
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def page_of(
    views: list[JobView],
    offset: int,
    limit: int,
    text: str = "",
    order: str = "created",
    descending: bool = True,
) -> tuple[list[JobView], int]:
    """``jobs_page`` over jobs in memory: the same filter and sort as the store's."""
    text = text.lower()
    if text:
        views = [
            v
            for v in views
            if any(text in f.lower() for f in (v.id, v.state, v.endpoint, v.reason))
        ]
    if order not in JobView.__dataclass_fields__:
        order = "created"

    def key(v: JobView) -> tuple[bool, Any]:
        x = getattr(v, order)
        return (x is not None, x if x is not None else 0)

    views = sorted(views, key=key, reverse=descending)
    return views[max(0, offset) : max(0, offset) + max(0, limit)], len(views)


def run_monitor(
    settings: Settings,
    *,
    specs: list[JobSpec],
    refresh: float,
    debug_log: str | None,
    demo: bool,
    metrics_port: int | None = None,
    keys: dict[str, str] | None = None,
    proxy: str | None = None,
) -> int:
    """Open the monitor; returns the exit status. ``keys``: binding id -> key; ``proxy``:
    serve the governing proxy on this ADDR:PORT and show its engine."""
    from .ui.app import create_app

    async def main() -> int:
        live = LiveEngine(settings=settings, proxy_listen=proxy)
        app = create_app(
            live,
            refresh=refresh,
            debug_log=debug_log,
            keys=keys,
            after_first_frame=lambda: live.boot(specs, demo),
        )
        server: Any = None
        if metrics_port:
            from .metrics import serve_metrics

            # Prometheus scrapes from its own thread: give it the last built snapshot,
            # never a call into the scheduler.
            server = serve_metrics(lambda: live.last, metrics_port)
        try:
            await app.run_async()
        finally:
            await live.shutdown()
            if server is not None:
                with contextlib.suppress(Exception):
                    server.close()
        return int(app.return_code or 0)

    return asyncio.run(main())
