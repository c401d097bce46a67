"""A frozen engine and a deterministic demo state, for tests, snapshots and screenshots.

``FrozenEngine`` implements EngineControl over a fixed Snapshot and records the commands it
receives; ``demo_snapshot()`` is a realistic busy moment; ``demo_history()`` the fifteen
minutes of snapshots that led to it, so the charts have something to draw.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from .. import catalog
from ..estimate import Estimate, Verdict, preflight
from ..history import History
from ..jobs import JobSpec
from ..snapshot import (
    BACKOFF,
    BLOCKED,
    CANCELLED,
    FAILED,
    FINAL_STATES,
    IN_FLIGHT,
    OUTCOME_UNKNOWN,
    QUEUED,
    SUCCEEDED,
    WAITING_CREDITS,
    WAITING_SLOT,
    WAITING_WINDOW,
    AlertView,
    EndpointState,
    FleetAlert,
    FleetProcess,
    FleetState,
    JobView,
    Snapshot,
)
from ..states import ErrorKind

#: A fixed instant (2026-01-15 09:30:00 UTC) so that rendered times never depend on "now".
DEMO_T = 1_768_469_400.0


class FrozenEngine:
    """EngineControl over a snapshot that changes only when a test says so."""

    def __init__(self, snapshot: Snapshot | None = None):
        self.snap = snapshot if snapshot is not None else demo_snapshot()
        self.submitted: list[JobSpec] = []
        self.pauses = 0
        self.resumes = 0
        self.cancelled: list[str] = []
        self.retried: list[str] = []
        self.polls = 0

    def snapshot(self) -> Snapshot:
        self.polls += 1
        return self.snap

    async def submit(self, spec: JobSpec) -> str:
        if any(s.id == spec.id for s in self.submitted):
            raise ValueError(f"duplicate job id {spec.id!r}")
        self.submitted.append(spec)
        est = spec.estimate()
        job = JobView(
            spec.id,
            spec.endpoint.key,
            spec.method,
            spec.path,
            QUEUED,
            spec.priority,
            est.high,
            created=self.snap.t,
            updated=self.snap.t,
        )
        self.snap = dataclasses.replace(
            self.snap, jobs=(job,) + self.snap.jobs, jobs_total=self.snap.jobs_total + 1
        )
        return spec.id

    def pause(self) -> None:
        self.pauses += 1
        self.snap = dataclasses.replace(self.snap, paused=True)

    def resume(self) -> None:
        self.resumes += 1
        self.snap = dataclasses.replace(self.snap, paused=False)

    def cancel(self, job_id: str) -> bool:
        self.cancelled.append(job_id)
        return any(
            j.id == job_id and j.state not in FINAL_STATES and j.state != IN_FLIGHT
            for j in self.snap.jobs
        )

    def preflight(self, est: Estimate) -> Verdict:
        return preflight(est, self.snap.balance or 0, self.snap.reserved)

    # OperatorControl: a fixed ledger, the snapshot's jobs as the history, recorded retries.
    durable = False

    async def job_attempts(self, job_id: str) -> list[dict[str, Any]] | None:
        job = next((j for j in self.snap.jobs if j.id == job_id), None)
        if job is None:
            return []
        return [demo_attempt(job, i) for i in range(job.attempts)]

    async def jobs_page(
        self,
        offset: int,
        limit: int,
        text: str = "",
        order: str = "created",
        descending: bool = True,
    ) -> tuple[list[JobView], int]:
        from ..monitor import page_of

        return page_of(list(self.snap.jobs), offset, limit, text, order, descending)

    def set_priority(self, job_id: str, priority: int) -> bool:
        jobs = list(self.snap.jobs)
        for i, j in enumerate(jobs):
            if j.id == job_id and j.state not in FINAL_STATES and j.state != IN_FLIGHT:
                jobs[i] = dataclasses.replace(j, priority=priority)
                self.snap = dataclasses.replace(self.snap, jobs=tuple(jobs))
                return True
        return False

    async def retry(self, job_id: str) -> str:
        job = next((j for j in self.snap.jobs if j.id == job_id), None)
        if job is None or job.state not in (FAILED, BLOCKED, OUTCOME_UNKNOWN):
            raise ValueError(f"{job_id} cannot be retried")
        self.retried.append(job_id)
        return f"{job_id}~r{len(self.retried)}"


def demo_attempt(job: JobView, i: int) -> dict[str, Any]:
    """A ledger row for the ``i``-th attempt of ``job``: earlier attempts failed (503),
    the last has the job's outcome."""
    last = i == job.attempts - 1
    status = (
        (200 if job.state == SUCCEEDED else 400 if job.state == FAILED else None) if last else 503
    )
    return {
        "t": job.created + 5 + 20 * i,
        "t_done": job.created + 7 + 20 * i,
        "attempt": i + 1,
        "status": status,
        "kind": "ok"
        if status == 200
        else "in flight"
        if status is None
        else "invalid_request"
        if status == 400
        else ErrorKind.SERVER,
        "code": None,
        "credits_used": job.actual if last else None,
        "estimate": job.estimate,
        "latency": 1.8 + i,
        "rl_limit": 120,
        "rl_remaining": 90 - i,
        "rl_reset": None,
        "retry_after": None if last else 8.0,
        "message": job.reason
        if last and job.state == FAILED
        else ("" if last else "upstream overloaded [try later]"),
    }


_JOBS = (
    # id, endpoint key, state, estimate, actual, attempts, age s, reason
    ("fg-q3-brand-014", "focus_groups", IN_FLIGHT, 135, None, 1, 52, ""),
    ("fg-q3-brand-015", "focus_groups", WAITING_SLOT, 135, None, 0, 47, "5/5 slots busy"),
    ("mave-competitors-07", "mave", IN_FLIGHT, 75, None, 1, 21, ""),
    ("resp-support-2231", "responses", SUCCEEDED, 5, 3, 1, 64, ""),
    ("video-launch-cut", "video_analyses", IN_FLIGHT, 350, None, 1, 95, ""),
    (
        "gen-tagline-88",
        "generations",
        WAITING_WINDOW,
        30,
        None,
        0,
        12,
        "window full: next slot in 4s",
    ),
    ("mave-pricing-02", "mave", BACKOFF, 75, None, 2, 130, "503 from server; retry 2 in 8s"),
    (
        "persona-cfo",
        "personas_create",
        WAITING_CREDITS,
        300,
        None,
        0,
        210,
        "parked: needs 360 with buffer, 310 available",
    ),
    ("resp-support-2230", "responses", SUCCEEDED, 5, 2, 1, 140, ""),
    ("news-ai-act", "news_analyze", SUCCEEDED, 20, 14, 1, 180, ""),
    ("fg-q3-brand-013", "focus_groups", SUCCEEDED, 135, 118, 1, 260, ""),
    (
        "gen-tagline-87",
        "generations",
        FAILED,
        30,
        None,
        3,
        300,
        "400 invalid_request: 'prompt' too long",
    ),
    ("brand-voice-nordic", "brand_voices", SUCCEEDED, 50, 50, 1, 420, ""),
    ("resp-support-2229", "responses", CANCELLED, 5, None, 0, 500, "cancelled by operator"),
    ("mave-competitors-06", "mave", SUCCEEDED, 75, 41, 1, 560, ""),
)


def demo_snapshot(t: float = DEMO_T, *, step: int = 90) -> Snapshot:
    """A busy, deterministic moment: the ``step``-th of 90 ten-second steps of demo traffic."""
    elapsed = 900.0 * step / 90
    requests = _requests(step)
    credits = _credits(step)
    window_used = requests - _requests(step - 6)
    r429 = sum(1 for i in range(step) if i % 17 == 5)
    retries = r429 + sum(1 for i in range(step) if i % 11 == 3)
    limit = catalog.TIERS["basic"]
    allocation = catalog.PLANS["basic"] or 0
    month_used = 400 + credits
    caps = {e.key: e.cap for e in catalog.ENDPOINTS.values()}
    in_flight = {
        "mave": 7,
        "focus_groups": 5,
        "video_analyses": 1,
        "responses": 2,
        "generations": 1,
    }
    waiting = {"mave": 3, "focus_groups": 4, "generations": 1}
    endpoints = tuple(
        EndpointState(
            e.key,
            e.path,
            caps[e.key],
            in_flight=in_flight.get(e.key, 0),
            waiting=waiting.get(e.key, 0),
            hold_s=6.0 if e.key == "focus_groups" else 0.0,
        )
        for e in catalog.ENDPOINTS.values()
        if e.key != "billing_credits"
    )
    wave = int(3 + 3 * math.sin(step / 8.0))
    queue: dict[str, int] = {
        QUEUED: 2 + wave,
        WAITING_WINDOW: 3,
        WAITING_SLOT: 8 - wave // 2,
        BACKOFF: 1,
        WAITING_CREDITS: 1,
        IN_FLIGHT: sum(in_flight.values()),
    }
    jobs = tuple(
        JobView(
            jid,
            ep,
            catalog.ENDPOINTS[ep].method,
            catalog.ENDPOINTS[ep].path,
            state,
            0,
            est,
            actual,
            att,
            created=t - age,
            updated=t - max(0, age - 30),
            reason=reason,
        )
        for jid, ep, state, est, actual, att, age, reason in _JOBS
    )
    alerts = (
        AlertView(t - 35, "warning", "429_storm", "6 responses 429 in 60s; holding the key 8s"),
        AlertView(t - 120, "info", "resumed", "job mave-pricing-02 resumed after back-off"),
        AlertView(t - 210, "warning", "parked", "persona-cfo parked: waiting for credits"),
        AlertView(t - 400, "warning", "budget_75", "75% of the monthly allocation used"),
        AlertView(t - 800, "info", "budget_50", "50% of the monthly allocation used"),
    )
    burn_5m = (credits - _credits(step - 30)) / 5.0
    plan_remaining = max(0, allocation - month_used)
    purchased = 500
    balance = plan_remaining + purchased
    return Snapshot(
        t=t,
        elapsed=elapsed,
        mode="demo",
        target="embedded simulator",
        simulated=True,
        limit=limit,
        window_used=window_used,
        foreign=6,
        remaining=limit - window_used,
        reset_in=4.0,
        requests_total=requests,
        responses_429_total=r429,
        retries_total=retries,
        status_counts={"200": requests - r429, "429": r429},
        endpoints=endpoints,
        queue=queue,
        jobs_total=412,
        finished={SUCCEEDED: 371, FAILED: 6, CANCELLED: 2},
        balance=balance,
        plan_remaining=plan_remaining,
        purchased=purchased,
        allocation=allocation,
        month_used=month_used,
        credits_used_total=credits,
        reserved=560,
        estimated_total=int(credits * 1.31),
        burn_1m=float(credits - _credits(step - 6)),
        burn_5m=burn_5m,
        burn_15m=(credits - _credits(step - 90)) / 15.0,
        eta_s=balance / burn_5m * 60 if burn_5m else None,
        month_projection=int(month_used + burn_5m * 60 * 24 * 16),
        jobs=jobs,
        alerts=alerts,
    )


def _requests(step: int) -> int:
    # Cumulative counters grow with a slow wave so the charts have shape.
    return int(sum(7 + 5 * math.sin(i / 6.0) for i in range(max(0, step))))


def _credits(step: int) -> int:
    return int(
        sum(9 + 7 * math.sin(i / 9.0 + 1) + (40 if i % 23 == 0 else 0) for i in range(max(0, step)))
    )


def demo_history(t: float = DEMO_T) -> History:
    """The fifteen minutes of ten-second snapshots that led to ``demo_snapshot(t)``."""
    h = History()
    for step in range(0, 91):
        h.add(demo_snapshot(t - 900 + step * 10, step=step))
    return h


def demo_fleet(t: float = DEMO_T, *, error: str = "", hostile: bool = True) -> FleetState:
    """A deterministic fleet of four processes on one key: this monitor, a cron run on
    another host, a proxy, and a run that died (its heartbeat 40 s old); with ``hostile``
    its host name and an alert message hold markup and an escape sequence (shown
    literally)."""
    bad = "[b]evil\x1b[31m" if hostile else "old-cron"
    procs = (
        FleetProcess("ops-1:4242", "ops-1", 4242, "monitor", 2, 3, 0.4, True, 14),
        FleetProcess("batch-7:991", "batch-7", 991, "run", 6, 212, 0.8, True, 61),
        FleetProcess("gw-2:77", "gw-2", 77, "proxy", 3, 9, 1.2, True, 18),
        FleetProcess(f"{bad}:13", bad, 13, "run", 0, 40, 40.3, False, 2),
    )
    alerts = (
        FleetAlert(t - 12, "batch-7:991", "warning", "429_storm", "3 429s in 10 s on mave"),
        FleetAlert(t - 95, "ops-1:4242", "info", "shared_back", "shared state is back"),
        FleetAlert(
            t - 140,
            f"{bad}:13",
            "error",
            "x[/b]" if hostile else "402",
            "[red]not markup[/red]" if hostile else "credits exhausted: paid work parked",
        ),
    )
    return FleetState(
        redis="redis://10.0.0.5:6379/0",
        me="ops-1:4242",
        at=t - (30 if error else 0.5),
        error=error,
        processes=procs,
        window_used=95,
        limit=120,
        foreign=4,
        hold_s=0.0,
        parked=False,
        balance=48_210,
        reserved=1_340,
        slots=(("focus_groups", 4), ("mave", 9), ("video_analyses", 1)),
        alerts=alerts,
    )


def demo_fleet_snapshot(t: float = DEMO_T, *, error: str = "") -> Snapshot:
    """The demo moment with a shared key (``demo_fleet``)."""
    return dataclasses.replace(demo_snapshot(t), fleet=demo_fleet(t, error=error))
