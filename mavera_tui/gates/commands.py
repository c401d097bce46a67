"""What callers ask of the scheduler: take jobs (one, many, or watched until final),
cancel or re-prioritize a job not yet sent, drop a job whose caller went away, and pause
or resume dispatch. A mixin of :class:`.loop.Scheduler`: each command changes the queue
and the gates' holdings, records it, and wakes the dispatch loop, which does the rest."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable

from .. import snapshot as S
from ..jobs import JobSpec
from .model import Job, SubmitResult
from .views import Observing


class Commands(Observing):
    """The scheduler's commands (the EngineControl and OperatorControl verbs)."""

    async def submit(self, spec: JobSpec) -> str:
        """Persist and enqueue one job."""
        result = await self.submit_many([spec])
        if not result.accepted:
            raise ValueError(result.messages()[0])
        return result.accepted[0]

    async def submit_watched(
        self, spec: JobSpec, prepare: Callable[[Job], None] | None = None
    ) -> asyncio.Future[Job]:
        """Persist and enqueue one job, and return a future that resolves to the job when
        it is final (its ``last`` answer kept if ``prepare`` set ``keep_raw``). ``prepare``
        sets the job's caller options (passthrough, sink, ...) before it can be sent.
        Raises ValueError (the message says why) for a duplicate id or an unpriceable body."""
        fut: asyncio.Future[Job] = asyncio.get_running_loop().create_future()
        result = await self.submit_many([spec], prepare=prepare, waiters={spec.id: fut})
        if not result.accepted:
            raise ValueError(result.messages()[0])
        return fut

    def watch(self, job_id: str) -> asyncio.Future[Job]:
        """A future that resolves to the job when it is final (at once if it already is).
        KeyError for a job this scheduler does not hold."""
        fut: asyncio.Future[Job] = asyncio.get_running_loop().create_future()
        job = self.jobs.get(job_id) or self._recent.get(job_id)
        if job is None:
            raise KeyError(job_id)
        if job.state in S.FINAL_STATES:
            fut.set_result(job)
        else:
            prev = self._waiters.get(job_id)
            if prev is not None:
                return prev
            self._waiters[job_id] = fut
        return fut

    def abandon(self, job_id: str) -> bool:
        """The caller of a job went away: a job not yet sent is cancelled; a streaming one
        in flight has its request closed (its slot freed at once); any other in flight is
        left to finish (the server works on it and holds its slot) and its answer dropped.
        Never repeated either way. False if the job is unknown or final."""
        job = self.jobs.get(job_id) or self._recent.get(job_id)
        if job is None or job.state in S.FINAL_STATES:
            return False
        job.abandoned = True
        if job.state != S.IN_FLIGHT:
            self.queue.remove(job)
            self.credits.remove(job)
            self._finish(job, S.CANCELLED, "the caller went away before it was sent")
            self._wake.set()
        elif job.sink is not None and job.task is not None:
            job.task.cancel()
        return True

    async def submit_many(
        self,
        specs: list[JobSpec],
        *,
        prepare: Callable[[Job], None] | None = None,
        waiters: dict[str, asyncio.Future[Job]] | None = None,
    ) -> SubmitResult:
        """Persist (one transaction) and enqueue jobs. Ids already known (in this run or in
        the database) are refused as duplicates; jobs that cannot be priced as invalid.
        ``prepare`` sets each new job's caller options; ``waiters`` resolve when final."""
        result = SubmitResult()
        fresh: list[Job] = []
        seen: set[str] = set()
        in_db = await self.store.existing_ids([s.id for s in specs]) if self.store else set()
        wall = self.clock.wall()
        for spec in specs:
            if spec.id in self.jobs or spec.id in seen or spec.id in in_db:
                result.duplicates.append(spec.id)
                continue
            try:
                est = spec.estimate()
            except ValueError as e:
                result.invalid.append((spec.id, str(e)))
                continue
            seen.add(spec.id)
            fresh.append(Job(spec, spec.endpoint, est, next(self._seq), created=wall, updated=wall))
        if prepare is not None:
            for j in fresh:
                prepare(j)
        await self._persist_new(fresh)
        for j in fresh:
            self._adopt(j)
            if waiters is not None and j.id in waiters:
                self._waiters[j.id] = waiters[j.id]
            self._enqueue(j)
        self._wake.set()
        result.accepted.extend(j.id for j in fresh)
        return result

    def pause(self) -> None:
        """Stop admitting jobs (those in flight finish)."""
        if not self._paused:
            self._paused = True
            self._alert("info", "paused", "dispatch paused by the operator")

    def resume(self) -> None:
        """Admit jobs again."""
        if self._paused:
            self._paused = False
            self._alert("info", "resumed", "dispatch resumed")
            self._wake.set()

    @property
    def paused(self) -> bool:
        """Whether the operator paused dispatch."""
        return self._paused

    def stop_admitting(self, why: str) -> int:
        """The caller stops waiting for the jobs left (``run`` gave up on credits that did
        not come): nothing more is admitted, so that what its summary says stays true (a
        job the fleet's park let go a moment later would be sent, charged, and missing
        from it). Returns how many jobs are left unfinished."""
        left = sum(1 for j in self.jobs.values() if j.state not in S.FINAL_STATES)
        if left and not self._paused:
            self._paused = True
            self._alert("info", "stopped", f"{left} jobs left unsent: {why}")
        return left

    def cancel(self, job_id: str) -> bool:
        """Cancel a job that has not been sent; False if unknown, in flight or final."""
        job = self.jobs.get(job_id)
        if job is None or job.state in S.FINAL_STATES or job.state == S.IN_FLIGHT:
            return False
        self.queue.remove(job)
        self.credits.remove(job)
        self._finish(job, S.CANCELLED, "cancelled by the operator")
        self._wake.set()
        return True

    def set_priority(self, job_id: str, priority: int) -> bool:
        """Give a job that has not been sent a new priority; False if it is unknown, in
        flight or final. A ready job is re-ordered at once; one that waits (back-off,
        credits, a hold) takes its new place when it becomes ready. With a database the
        change is stored, so a restart resumes the job at its new priority."""
        job = self.jobs.get(job_id)
        if job is None or job.state not in S.WAITING_STATES:
            return False
        job.spec = dataclasses.replace(job.spec, priority=int(priority))
        self.queue.reprioritize(job)
        if self.store is not None:
            self.store.set_priority(job_id, priority)
        self._touch(job)
        self._wake.set()
        return True
