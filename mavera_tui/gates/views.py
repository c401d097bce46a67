"""The scheduler as the UI, the monitor and the recorder see it: a snapshot."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import TYPE_CHECKING, Any

from .. import catalog
from .. import snapshot as S
from ..estimate import Estimate, Verdict
from ..jobs import JobSpec
from .answers import Answers
from .model import Job
from .stats import RunSummary

if TYPE_CHECKING:
    from .loop import Scheduler
    from .ready import ReadyQueue
    from .stats import RunStats


def _queue_counts(sched: Scheduler, now: float) -> tuple[dict[str, int], dict[str, int]]:
    """Waiting jobs by state (why each ready job waits) and by endpoint."""
    queue = dict.fromkeys(S.WAITING_STATES, 0)
    window_room = sched.window.available(now) > 0
    ready = sched.queue.count
    for key, ep in catalog.ENDPOINTS.items():
        n = ready[key]
        if n:
            if sched.paused:
                queue[S.PAUSED] += n
            elif sched.slots.free(ep, now) <= 0:
                queue[S.WAITING_SLOT] += n
            elif not window_room:
                queue[S.WAITING_WINDOW] += n
            else:
                queue[S.QUEUED] += n
    waiting_by_ep = dict(ready)
    for _, _, j in sched.queue.delayed:
        if j.state in S.WAITING_STATES:
            queue[j.state] += 1
            waiting_by_ep[j.ep.key] += 1
    for j in itertools.chain(sched.credits.parked, sched.credits.settle_wait):
        if j.state == S.WAITING_CREDITS:
            queue[S.WAITING_CREDITS] += 1
            waiting_by_ep[j.ep.key] += 1
    queue[S.IN_FLIGHT] = sched.slots.in_flight_total()
    return queue, waiting_by_ep


def snapshot(sched: Scheduler) -> S.Snapshot:
    """The scheduler's state now."""
    now = sched.clock.now()
    wall = sched.clock.wall()
    queue, waiting_by_ep = _queue_counts(sched, now)
    slots, st, cal = sched.slots, sched.stats, sched.calibration
    endpoints = tuple(
        S.EndpointState(
            key,
            ep.path,
            ep.cap,
            len(slots.in_flight[key]),
            waiting_by_ep[key],
            max(0.0, slots.hold[key] - now),
            st.sent_by_ep[key],
            cal.actual.get(key, 0),
            cal.estimated.get(key, 0),
            slots.max_seen[key],
        )
        for key, ep in catalog.ENDPOINTS.items()
        if key != "billing_credits"
    )
    jobs = tuple(sched._view(j) for j in reversed(sched._recent.values()))
    b, w = sched.budget, sched.window
    return S.Snapshot(
        t=wall,
        elapsed=now - (st.started_at or now),
        mode=sched.mode,
        target=sched.target,
        simulated=sched.simulated,
        paused=sched.paused,
        limit=w.limit,
        window_seconds=w.window,
        window_used=w.used(now),
        foreign=w.foreign(now),
        remaining=w.last_remaining,
        reset_in=max(0.0, w.next_free(now) - now),
        key_hold_s=w.hold_remaining(now),
        requests_total=st.requests_total,
        responses_429_total=st.responses_429,
        retries_total=st.retries,
        status_counts=dict(st.status_counts),
        endpoints=endpoints,
        queue=queue,
        jobs_total=st.jobs_seen,
        finished=dict(st.finished),
        balance=b.total,
        plan_remaining=b.plan_remaining,
        purchased=b.purchased,
        allocation=b.allocation,
        month_used=b.period_used,
        credits_used_total=sched.credits_used_total,
        reserved=sched.credits.reserved,
        estimated_total=sum(cal.estimated.values()),
        burn_1m=b.burn(now, 1),
        burn_5m=b.burn(now, 5),
        burn_15m=b.burn(now, 15),
        eta_s=b.eta_seconds(now),
        month_projection=b.month_projection(now, wall),
        recharge_spent_eur=b.recharge_spent_eur,
        jobs=jobs,
        alerts=tuple(sched._alerts),
    )


def _alias(obj: str, attr: str) -> Any:
    """A read-write attribute that lives on one of the scheduler's parts (kept so code and
    tests written against the one-class scheduler keep working)."""
    return property(
        lambda self: getattr(getattr(self, obj), attr),
        lambda self, v: setattr(getattr(self, obj), attr, v),
    )


class Observing(Answers):
    """What the scheduler answers about itself: snapshot, summary, idleness, and the
    attributes of the one-class scheduler (now on its parts)."""

    queue: ReadyQueue
    stats: RunStats
    _paused: bool
    _ending: bool
    _launching: bool
    _done: asyncio.Event
    _unfinished: int

    reserved = _alias("credits", "reserved")
    requests_total = _alias("stats", "requests_total")
    responses_429 = _alias("stats", "responses_429")
    retries = _alias("stats", "retries")
    count_402 = _alias("stats", "count_402")
    status_counts = _alias("stats", "status_counts")
    sent_by_ep = _alias("stats", "sent_by_ep")
    finished = _alias("stats", "finished")
    jobs_seen = _alias("stats", "jobs_seen")
    started_at = _alias("stats", "started_at")
    first_send = _alias("stats", "first_send")
    last_done = _alias("stats", "last_done")
    credits_unknown_attempts = _alias("stats", "credits_unknown_attempts")
    credits_unknown_max = _alias("stats", "credits_unknown_max")
    credits_reconciled = _alias("stats", "credits_reconciled")
    reconcile_note = _alias("stats", "reconcile_note")
    balance_start = _alias("stats", "balance_start")
    _ready = _alias("queue", "heaps")
    _in_flight = _alias("slots", "in_flight")

    @property
    def credits_used_total(self) -> int:
        """Credits charged: as read from answers, plus what reconciling found."""
        return self.budget.spent + self.stats.credits_extra

    @property
    def credits_by_ep(self) -> dict[str, int]:
        """Credits charged per endpoint, as read from answers."""
        return {k: self.calibration.actual.get(k, 0) for k in catalog.ENDPOINTS}

    @property
    def estimated_by_ep(self) -> dict[str, int]:
        """Estimates of the jobs that succeeded, per endpoint."""
        return {k: self.calibration.estimated.get(k, 0) for k in catalog.ENDPOINTS}

    def _head(self, key: str) -> Job | None:
        return self.queue.head(key)

    def preflight(self, est: Estimate) -> Verdict:
        """The pre-flight verdict for a new job now (the form asks this as the user types)."""
        return self.credits.verdict(est)

    def sent_any(self) -> bool:
        """Whether a job has been sent yet (not before the balance read is answered)."""
        return self.stats.first_send is not None

    async def refresh_balance(self) -> bool:
        """GET /billing/credits through the window; adopt the balance. False on failure."""
        return await self.balance.refresh()

    async def reconcile_credits(self) -> None:
        """Reconcile charges we could not read with the balance (see BalanceKeeper)."""
        await self.balance.reconcile()

    def snapshot(self) -> S.Snapshot:
        """What the UI, the monitor and the recorder show."""
        return snapshot(self)  # type: ignore[arg-type]  # self is the Scheduler

    def run_summary(self, ids: list[str] | None = None) -> RunSummary:
        """The run summary of ``ids`` (None: every job held)."""
        sel = (
            [self.jobs[i] for i in ids if i in self.jobs]
            if ids is not None
            else list(self.jobs.values())
        )
        return RunSummary.of(
            sel,
            self.stats,
            credits_used=self.credits_used_total,
            calibration=self.calibration,
            budget=self.budget,
            window=self.window,
            max_seen=self.slots.max_seen,
            balance_read=self.balance.when,
        )

    def summary(self, ids: list[str] | None = None) -> dict[str, Any]:
        """The run summary (``--summary``): counts, credits, statuses, makespan."""
        return self.run_summary(ids).to_dict()

    def unfinished(self) -> int:
        """Jobs not final yet."""
        return self._unfinished

    # --- the jobs held in memory, as front ends may read them --------------------------

    def job_ids(self) -> list[str]:
        """Ids of the jobs this scheduler holds (all of them while ``keep_finished``;
        otherwise the unfinished ones), in the order they were taken."""
        return list(self.jobs)

    def job_view(self, job_id: str) -> S.JobView | None:
        """A job held in memory (live, or among the recent ones the jobs pane shows);
        None when it is not held."""
        job = self.jobs.get(job_id) or self._recent.get(job_id)
        return self._view(job) if job is not None else None

    def job_spec(self, job_id: str) -> JobSpec | None:
        """The request of a job held in memory (for a retry); None when it is not held."""
        job = self.jobs.get(job_id) or self._recent.get(job_id)
        return job.spec if job is not None else None

    def held_views(self) -> list[S.JobView]:
        """Every job held in memory, live or recent, once each."""
        held = {**self._recent, **self.jobs}
        return [self._view(j) for j in held.values()]

    def alert(self, level: str, kind: str, message: str) -> None:
        """Raise an alert (shown in the alerts pane, kept in the store when there is one)."""
        self._alert(level, kind, message)

    def _check_done(self) -> None:
        if self._unfinished == 0:
            self._done.set()
        else:
            self._done.clear()

    def _all_live_wait_for_credits(self) -> bool:
        """Some job is not final, and every one that is not waits for credits. Stops at the
        first job that does not wait (a list of every live job four times a second was 1% of
        a 20,000-job batch's CPU)."""
        final, waiting = S.FINAL_STATES, S.WAITING_CREDITS
        any_live = False
        for j in self.jobs.values():
            if j.state in final:
                continue
            if j.state != waiting:
                return False
            any_live = True
        return any_live

    async def wait_idle(self, credit_wait: float | None = None) -> None:
        """Until every job is final, or all that remain wait for credits that do not come
        within ``credit_wait`` seconds, or a fatal error (401) stops the run."""
        parked_since: float | None = None
        while True:
            self._check_done()
            if self._done.is_set() or self._fatal:
                return
            now = self.clock.now()
            if self._all_live_wait_for_credits():
                parked_since = parked_since if parked_since is not None else now
                if credit_wait is not None and now - parked_since >= credit_wait:
                    # Give up, unless a batch the fleet is admitting right now changes
                    # that (its jobs were popped as waiting; the fleet's answer decides):
                    # dispatch stays held, so what the summary says stays true.
                    self._ending = True
                    while self._launching:
                        await asyncio.sleep(0.01)
                    live = [j for j in self.jobs.values() if j.state not in S.FINAL_STATES]
                    if all(j.state == S.WAITING_CREDITS for j in live):
                        return
                    self._ending = False
                    parked_since = None
            else:
                parked_since = None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._done.wait(), 0.25)
