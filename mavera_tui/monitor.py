"""The live monitor: the engine and the Textual app in one event loop.

The app draws its first frame at once while the engine starts behind it (opening the
store, fetching the balance); until then the panes show a "starting" snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from .estimate import Estimate, Verdict
from .jobs import JobSpec
from .snapshot import AlertView, Snapshot

if TYPE_CHECKING:
    from .engine import Engine, Settings

log = logging.getLogger(__name__)


class LiveEngine:
    """EngineControl over an Engine that starts in the background.

    Give it the Engine, or the Settings to build one in ``boot()`` (after the first frame:
    the engine's imports, httpx and aiosqlite, cost a few hundred milliseconds).
    """

    def __init__(self, engine: Engine | Settings):
        self.engine: Any = engine if hasattr(engine, "start") else None
        self._settings = None if self.engine is not None else engine
        self.error: str | None = None
        self._demo: asyncio.Task[None] | None = None
        #: The last snapshot handed to the app: what other threads (metrics) may read.
        self.last: Snapshot = Snapshot(mode="starting")

    @property
    def sched(self):  # noqa: ANN201
        return self.engine.scheduler if self.engine is not None else None

    def snapshot(self) -> Snapshot:
        if self.sched is not None:
            self.last = self.sched.snapshot()
            return self.last
        alerts = ()
        if self.error:
            alerts = (AlertView(0.0, "error", "start", self.error),)
        target = self.engine.target if self.engine is not None else ""
        return Snapshot(mode="starting", target=target or "starting...",
                        alerts=alerts)

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

    async def boot(self, specs: list[JobSpec], demo: bool) -> None:
        try:
            if self.engine is None:
                from .engine import Engine

                self.engine = Engine(self._settings)
            sched = await self.engine.start()
        except Exception as e:  # shown in the alerts pane; the app stays up to say so
            log.exception("engine failed to start")
            self.error = f"could not start: {e}"
            return
        if specs:
            _, errors = await sched.submit_many(specs)
            for e in errors:
                if "already exists" not in e:
                    sched._alert("warning", "job_file", e)
        if demo and self.engine.simulated:
            from .demo import start_demo

            self._demo = start_demo(sched)

    async def shutdown(self) -> None:
        if self._demo is not None:
            self._demo.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._demo
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


def run_monitor(settings: Settings, *, specs: list[JobSpec], refresh: float,
                debug_log: str | None, demo: bool, metrics_port: int | None = None) -> int:
    """Open the monitor; returns the exit status."""
    from .ui.app import create_app

    async def main() -> int:
        live = LiveEngine(settings)
        app = create_app(live, refresh=refresh, debug_log=debug_log,
                         after_first_frame=lambda: live.boot(specs, demo))
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
