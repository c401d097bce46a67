"""The monitor's commands on jobs: new, cancel (one or every match), retry, priority,
detail and history. A base of :class:`~mavera_tui.ui.app.MaveraApp`, which holds the
engine, the last snapshot and the panes these read."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from textual.app import App
from textual.screen import Screen

from ..control import EngineControl, OperatorControl
from ..snapshot import FINAL_STATES, IN_FLIGHT, WAITING_STATES, JobView, Snapshot
from .form import JobForm
from .jobs import JobsPane
from .screens import Confirm, JobDetail, PriorityScreen
from .text import clean

log = logging.getLogger("mavera_tui.ui")


class JobCommands(App[None]):
    """The job actions of the monitor (bound to keys and the palette in MaveraApp)."""

    if TYPE_CHECKING:
        engine: EngineControl
        snap: Snapshot | None
        layout_name: str

        @property
        def main(self) -> Screen: ...

        def poll(self) -> None: ...

        def _set_view(self, view: str) -> None: ...

    def action_new_job(self) -> None:
        if self.snap is None:
            return

        def done(job_id: str | None) -> None:
            if job_id:
                self.notify(f"submitted {job_id}", title="New job")
                self.main.query_one(JobsPane).show_next_at_once()
                self.poll()

        self.push_screen(JobForm(self.engine, self.snap), done)

    def _selected(self) -> JobView | None:
        pane = self.main.query_one(JobsPane)
        job_id = pane.selected_job
        if job_id is None:
            self.notify("no job selected: move the cursor in the jobs table", severity="warning")
            return None
        return pane.job(job_id)

    def action_cancel_job(self) -> None:
        job = self._selected()
        if job is None:
            return
        name = clean(job.id, limit=60)
        if job.state == IN_FLIGHT:
            self.notify(
                f"{name} is in flight: its request is sent and cannot be "
                "recalled; the answer will be charged as usual",
                markup=False,
                severity="warning",
            )
            return
        if job.state in FINAL_STATES:
            self.notify(
                f"{name} is already {job.state}: nothing to cancel",
                markup=False,
                severity="warning",
            )
            return

        def done(yes: bool | None) -> None:
            if not yes:
                return
            ok = self.engine.cancel(job.id)
            self.notify(
                f"cancelled {name}"
                if ok
                else f"{name} could not be cancelled: it was sent or finished meanwhile",
                markup=False,
                severity="information" if ok else "warning",
            )
            log.info("operator cancelled %s: %s", job.id, ok)
            self.poll()

        self.push_screen(
            Confirm(
                f"Cancel job {name}?\n{job.state} · {clean(job.endpoint)} · estimate "
                f"{job.estimate} credits. It has not been sent: nothing is charged.",
                yes="Cancel job (y)",
                no="Keep it (n)",
            ),
            done,
        )

    async def _matching(self, states: tuple[str, ...]) -> list[JobView]:
        """Jobs in ``states`` whose row matches the jobs filter: from the engine's full list
        when it offers one (not only the recent jobs on screen), else from the table."""
        pane = self.main.query_one(JobsPane)
        if isinstance(self.engine, OperatorControl):
            page, _ = await self.engine.jobs_page(0, 1_000_000, "")
            return [j for j in page if j.state in states and pane.matches(j)]
        return [j for j in pane.jobs() if j.state in states and pane.matches(j)]

    async def action_cancel_matching(self) -> None:
        jobs = await self._matching(WAITING_STATES)
        pane = self.main.query_one(JobsPane)
        what = f"matching '{pane.filter}'" if pane.filter else "(no filter: all of them)"
        if not jobs:
            self.notify(f"no queued job {what}", severity="warning")
            return

        def done(yes: bool | None) -> None:
            if not yes:
                return
            n = sum(1 for j in jobs if self.engine.cancel(j.id))
            self.notify(
                f"cancelled {n} of {len(jobs)} queued jobs"
                + ("" if n == len(jobs) else " (the rest were sent meanwhile)")
            )
            log.info("operator cancelled %d queued jobs %s", n, what)
            self.poll()

        self.push_screen(
            Confirm(
                f"Cancel {len(jobs)} queued job(s) {what}?\nJobs in flight are not touched.",
                yes=f"Cancel {len(jobs)} (y)",
                no="Keep them (n)",
            ),
            done,
        )

    async def action_retry_matching(self) -> None:
        from ..monitor import RETRYABLE

        jobs = await self._matching(RETRYABLE)
        pane = self.main.query_one(JobsPane)
        what = f"matching '{pane.filter}'" if pane.filter else "(no filter: all of them)"
        if not jobs:
            self.notify(f"no failed, blocked or unknown-outcome job {what}", severity="warning")
            return
        cost = sum(j.estimate for j in jobs)

        async def send() -> None:
            done_n, errors = 0, []
            for j in jobs:
                try:
                    await self.engine.retry(j.id)  # type: ignore[attr-defined]
                    done_n += 1
                except ValueError as e:
                    errors.append(str(e))
            self.notify(
                f"retried {done_n} job(s) under new ids (~rN)"
                + (f"; {len(errors)} refused: {errors[0]}" if errors else ""),
                severity="warning" if errors else "information",
            )
            log.info("operator retried %d jobs %s", done_n, what)
            self.main.query_one(JobsPane).show_next_at_once()
            self.poll()

        def done(yes: bool | None) -> None:
            if yes:
                self.run_worker(send(), name="retry")

        self.push_screen(
            Confirm(
                f"Retry {len(jobs)} job(s) {what}?\nEach is sent again "
                f"under a new id; up to {cost:,} credits (estimates).",
                yes=f"Retry {len(jobs)} (y)",
                no="No (n)",
            ),
            done,
        )

    def action_set_priority(self) -> None:
        job = self._selected()
        if job is None:
            return
        name = clean(job.id, limit=60)
        if job.state not in WAITING_STATES:
            self.notify(
                f"{name} is {job.state}: only a job not yet sent can change priority",
                markup=False,
                severity="warning",
            )
            return
        from ..jobs import PRIORITY_RANGE

        def done(value: int | None) -> None:
            if value is None or value == job.priority:
                return
            ok = self.engine.set_priority(job.id, value)  # type: ignore[attr-defined]
            self.notify(
                f"{name}: priority {job.priority} → {value}"
                if ok
                else f"{name} was sent or finished meanwhile: priority unchanged",
                markup=False,
                severity="information" if ok else "warning",
            )
            log.info("operator set priority of %s to %d: %s", job.id, value, ok)
            self.main.query_one(JobsPane).show_next_at_once()
            self.poll()

        self.push_screen(PriorityScreen(job, PRIORITY_RANGE), done)

    def action_job_detail(self) -> None:
        job = self._selected()
        if job is not None:
            self.open_detail(job)

    def open_detail(self, job: JobView) -> None:
        """Show a job and, once read, its attempts from the ledger."""
        screen = JobDetail(job)
        self.push_screen(screen)
        if not isinstance(self.engine, OperatorControl):
            screen.show_attempts(None, "this engine keeps no ledger")
            return
        engine = self.engine

        async def load() -> None:
            try:
                attempts = await engine.job_attempts(job.id)
            except Exception as e:  # a read error is shown, not raised into the app
                log.exception("ledger read failed")
                screen.show_attempts(None, f"could not read the ledger: {e}")
                return
            if attempts is None:
                screen.show_attempts(
                    None, "no ledger: the monitor runs without --db, so attempts are not kept"
                )
            else:
                screen.show_attempts(attempts)

        self.run_worker(load(), name="job-detail")

    def action_job_history(self) -> None:
        from .history_view import JobHistory

        self.push_screen(JobHistory(self.engine))

    def action_filter_jobs(self) -> None:
        if self.layout_name == "compact":
            self._set_view("jobs")
        self.main.query_one(JobsPane).open_filter()
