"""The scheduler's bookkeeping: the store (jobs, attempts, alerts), the recent-jobs list,
final states, and resuming a run from its database. A mixin of :class:`.loop.Scheduler`:
these methods only record what the loop and its gates decided."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Any

from .. import catalog
from .. import snapshot as S
from ..catalog import Endpoint
from ..client import Outcome
from ..jobs import JobSpec
from .model import Job

if TYPE_CHECKING:
    from ..clock import Clock
    from ..store import Store
    from .model import SchedulerConfig
    from .stats import RunStats

log = logging.getLogger("mavera_tui.scheduler")


class Journal:
    """Records jobs' states, attempts and alerts (in memory and in the store)."""

    clock: Clock
    store: Store | None
    config: SchedulerConfig
    stats: RunStats
    jobs: dict[str, Job]
    _seq: Any
    _recent: OrderedDict[str, Job]
    _alerts: deque[S.AlertView]
    _unfinished: int
    _block_alert_at: float
    _blocked_recent: int
    _waiters: dict[str, asyncio.Future[Job]]

    if TYPE_CHECKING:  # the loop's, used here

        def _enqueue(self, job: Job, not_before: float = 0.0, state: str = S.QUEUED) -> None: ...

        def _check_done(self) -> None: ...

        def _unsend(self, batch: list[Job], e: Exception) -> None: ...

    def _adopt(self, job: Job) -> None:
        """A new (or resumed) job is ours."""
        self.jobs[job.id] = job
        self._unfinished += 1
        self.stats.jobs_seen += 1

    def _finish(self, job: Job, state: str, reason: str) -> None:
        if job.state not in S.FINAL_STATES:
            self._unfinished -= 1
        job.state, job.reason = state, reason
        if not self.config.keep_finished:
            self.jobs.pop(job.id, None)
        job.in_heap = False
        self.stats.final(job.state)
        self._persist_state(job)
        self._touch(job)
        if self._waiters:
            fut = self._waiters.pop(job.id, None)
            if fut is not None and not fut.done():
                fut.set_result(job)
        self._check_done()

    def _block(self, job: Job, reason: str) -> None:
        self._finish(job, S.BLOCKED, reason)
        now = self.clock.now()
        self._blocked_recent += 1
        if now - self._block_alert_at >= 10.0:  # one alert per burst, not one per job
            extra = self._blocked_recent - 1
            self._alert(
                "warning",
                "preflight",
                f"job {job.id} not sent: {reason}"
                + (f" (and {extra} more refused since the last alert)" if extra else ""),
            )
            self._block_alert_at, self._blocked_recent = now, 0

    def _persist_state(self, job: Job) -> None:
        job.updated = self.clock.wall()
        if self.store is not None:
            self.store.update_job(
                job.id,
                job.state,
                reason=job.reason,
                actual=job.actual,
                attempts=job.attempts,
                wall=job.updated,
            )

    async def _persist_new(self, fresh: list[Job]) -> None:
        if self.store is not None and fresh:
            await self.store.add_jobs(
                [
                    (
                        j.id,
                        j.seq,
                        j.spec.method,
                        j.spec.path,
                        j.ep.key,
                        json.dumps(j.spec.body),
                        j.spec.priority,
                        S.QUEUED,
                        j.est.high,
                        "",
                        j.created,
                    )
                    for j in fresh
                ]
            )

    async def _persist_dispatch(self, batch: list[Job]) -> bool:
        """Mark a batch in flight in the store before it is sent; False (and the batch put
        back) when the store refuses: we do not send what we cannot account for."""
        if self.store is None:
            return True
        try:
            await self.store.mark_dispatch([(j.id, j.attempts, self.clock.wall()) for j in batch])
        except Exception as e:
            self._unsend(batch, e)
            await asyncio.sleep(0)
            return False
        return True

    async def _flush(self) -> None:
        if self.store is not None:
            with contextlib.suppress(Exception):
                await self.store.flush()

    def _touch(self, job: Job) -> None:
        r = self._recent
        r[job.id] = job
        r.move_to_end(job.id)
        if len(r) > self.config.recent_jobs:
            r.popitem(last=False)

    def _ledger(
        self,
        job_id: str | None,
        ep: Endpoint,
        path: str,
        attempt: int,
        sent_at: float,
        out: Outcome,
        estimate: int,
    ) -> None:
        if self.store is None:
            return
        wall_now = self.clock.wall()
        err = out.error
        self.store.record_attempt(
            {
                "t": wall_now - (self.clock.now() - sent_at),
                "t_done": wall_now,
                "job_id": job_id,
                "endpoint": ep.key,
                "method": ep.method,
                "path": path,
                "attempt": attempt,
                "status": out.status,
                "kind": err.kind if err else "ok",
                "code": err.code if err else None,
                "credits_used": out.credits_used,
                "tokens": out.tokens,
                "estimate": estimate,
                "latency": out.latency,
                "rl_limit": out.headers.limit,
                "rl_remaining": out.headers.remaining,
                "rl_reset": out.headers.reset_at,
                "retry_after": out.headers.retry_after,
                "message": err.message[:500] if err else "",
            }
        )

    def _alert(self, level: str, kind: str, message: str) -> None:
        wall = self.clock.wall()
        self._alerts.appendleft(S.AlertView(wall, level, kind, message))
        if self.store is not None:
            self.store.add_alert(wall, level, kind, message)
        log.info("alert %s %s: %s", level, kind, message)

    def _view(self, j: Job) -> S.JobView:
        return S.JobView(
            j.id,
            j.ep.key,
            j.spec.method,
            j.spec.path,
            j.state,
            j.spec.priority,
            j.est.high,
            j.actual,
            j.attempts,
            j.created,
            j.updated,
            j.reason,
        )

    async def _resume_from_store(self) -> None:
        assert self.store is not None
        rows = await self.store.load_jobs(S.ACTIVE_STATES + (S.OUTCOME_UNKNOWN,))
        self._seq = itertools.count(await self.store.next_seq() + 1)
        wall = self.clock.wall()
        for r in rows:
            spec = JobSpec(r.id, r.method, r.path, r.body, r.priority)
            ep = catalog.find_endpoint(r.method, r.path)
            if ep is None:
                continue
            try:
                est = spec.estimate()
            except ValueError:
                continue
            job = Job(spec, ep, est, r.seq, attempts=r.attempts, created=r.created, updated=wall)
            self._adopt(job)
            if self._resume_one(job, r.state, r.reason):
                self._enqueue(job)
        if rows:
            n = sum(1 for j in self.jobs.values() if j.state not in S.FINAL_STATES)
            self._alert(
                "info", "resumed", f"resumed {n} unfinished jobs from {self.store.path.name}"
            )

    def _resume_one(self, job: Job, state: str, reason: str) -> bool:
        """Settle a resumed job's fate; True if it goes back in the queue."""
        if state == S.OUTCOME_UNKNOWN:
            job.reason = reason
            self._finish(job, S.OUTCOME_UNKNOWN, reason)
            return False
        if state != S.IN_FLIGHT:
            return True
        limit = self.config.resend_unknown_up_to
        if job.est.high <= limit:
            job.reason = (
                f"re-sent after a restart: was in flight, costs at most {job.est.high} (<= {limit})"
            )
            return True
        self._finish(
            job,
            S.OUTCOME_UNKNOWN,
            "was in flight when the process stopped; it may or may not "
            "have run (and been charged). Not re-sent: check the "
            "dashboard, then resubmit under a new id if needed.",
        )
        self._alert(
            "warning",
            "outcome_unknown",
            f"job {job.id} was in flight at the last stop: outcome unknown",
        )
        return False
