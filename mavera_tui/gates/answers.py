"""What the scheduler does with an answer: stamp the send, settle it, and carry out the
retry policy's step (a mixin of :class:`.loop.Scheduler`; the decisions are the gates' and
the policy's, this applies them)."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from typing import TYPE_CHECKING, Any

from .. import client as api
from .. import snapshot as S
from ..client import Outcome
from . import credits as C
from . import retry as R
from .journal import Journal
from .model import Job

if TYPE_CHECKING:
    from ..budget import Budget
    from ..estimate import Calibration
    from ..limiter import SlidingWindow
    from ..shared.fleet import Fleet
    from .balance import BalanceKeeper
    from .credits import CreditGate
    from .model import Transport
    from .slots import SlotGate
    from .window import WindowGate

log = logging.getLogger("mavera_tui.scheduler")


class _Stamp:
    """When a send was written (None until it is)."""

    __slots__ = ("at",)

    def __init__(self) -> None:
        self.at: float | None = None


def _jsonable_key(path: str, body: dict[str, Any]) -> str:
    return path + "?" + json.dumps(body, sort_keys=True, separators=(",", ":"))


class Answers(Journal):
    """Sends a job and applies what its answer means."""

    def _hold_key(self, out: Outcome, now: float, sent_at: float) -> tuple[float, bool]:
        """A window 429 for a request sent at ``sent_at`` (a job's or the engine's own):
        note it (a refused probe of an early Reset is then held only to the mirror's room,
        not the extra second Retry-After's rounding adds) and hold the whole key. Returns
        for how long, and whether the key was already held (the same event)."""
        cfg = self.config
        already_held = self.window_gate.note_429(now, sent_at, out.headers.retry_after)
        wait = self.window_gate.hold_key(
            out.headers,
            now,
            self.clock.wall(),
            base=cfg.backoff_base,
            cap=cfg.backoff_cap,
            max_retry_after=cfg.max_retry_after,
        )
        return wait, already_held

    transport: Transport
    window: SlidingWindow
    window_gate: WindowGate
    slots: SlotGate
    credits: CreditGate
    budget: Budget
    balance: BalanceKeeper
    calibration: Calibration
    _cache: dict[str, tuple[float, Any]]
    _fatal: str | None
    _wake: asyncio.Event
    _storm_alerted_at: float
    _rng: random.Random
    fleet: Fleet | None

    if TYPE_CHECKING:  # the loop's, used here

        def _release(self, jobs: list[Job]) -> None: ...

    def _serve_cached(self, job: Job, now: float) -> bool:
        hit = self._cache.get(_jsonable_key(job.spec.path, job.spec.body))
        if hit is None or hit[0] < now:
            return False
        job.actual = 0
        self._finish(job, S.SUCCEEDED, "served from cache (identical GET, no request sent)")
        return True

    def _stamper(self, job: Job | None) -> tuple[_Stamp, dict[str, Any]]:
        """Stamp a reserved send in the window as it is written.

        A transport that reports writes (real sockets) calls back as the request's headers
        go out; the stamp is then within a write of the server's count, however long the
        task waited for the loop or a connection. Otherwise (in-process) it is stamped now.
        Returns the stamp (``at`` stays None until written) and the keyword arguments for
        ``request``.
        """
        stamp = _Stamp()

        def written() -> None:
            if stamp.at is None:
                stamp.at = t = self.clock.now()
                if job is not None:
                    job.sent_at = t
                    if self.fleet is not None:
                        self.fleet.written(job)
                self.window.record_send(t, reserved=True)

        if getattr(self.transport, "reports_writes", False):
            return stamp, {"on_written": written}
        written()
        return stamp, {}

    async def _attempt(self, job: Job) -> None:
        if self.fleet is None:
            await self._attempt_one(job)
            return
        answer: list[Outcome] = []
        try:
            await self._attempt_one(job, answer)
        finally:  # answered, cancelled or crashed: the lease goes back (idempotent)
            self.fleet.done(job, answer[0] if answer else None)

    async def _attempt_one(self, job: Job, answer: list[Outcome] | None = None) -> None:
        sent_at = job.sent_at = self.clock.now()
        stamp, kw = self._stamper(job)
        if job.keep_raw:
            kw["raw"] = True
        if job.sink is not None:
            kw["sink"] = job.sink
        try:
            out = await self.transport.request(
                job.spec.method,
                job.spec.path,
                job.spec.body,
                timeout=self.config.request_timeout,
                **kw,
            )
        except asyncio.CancelledError:
            self.slots.release(job)
            if stamp.at is None:  # it may have been written as we were cancelled
                self.window.record_send(self.clock.now(), reserved=True)
            if not job.abandoned:
                raise
            # The caller went away and closed this request (a stream): its slot is free
            # now; what the server did with it is not known.
            job.task = None
            self.credits.settle(job)
            self._finish(
                job,
                S.OUTCOME_UNKNOWN,
                "the caller went away while it was in flight; the request was closed "
                "(the server may have charged it)",
            )
            self.balance.verify()
            self._wake.set()
            return
        except Exception as e:  # the transport should not raise; never lose the job if it does
            log.exception("transport raised")
            out = Outcome(
                None,
                self.clock.now() - sent_at,
                error=api.ApiError(api.CONNECTION, None, None, f"client error: {e}"),
            )
        job.task = None
        if job.keep_raw:
            job.last = out
        if answer is not None:
            answer.append(out)
        now = self.clock.now()
        self.slots.release(job)
        if stamp.at is not None:
            sent_at = stamp.at
        else:  # never written (refused, timed out waiting for a connection): not counted
            self.window.release()
        self.window.observe(sent_at, now, out.headers, self.clock.wall_at(now))
        self.stats.answered(out)
        self.stats.last_done = now
        self._ledger(job.id, job.ep, job.spec.path, job.attempts, sent_at, out, job.est.high)
        self.credits.settle(job)
        err = out.error
        if err is not None and err.kind.charge_unknown:
            self.stats.credits_unknown_attempts += 1
            self.stats.credits_unknown_max += job.est.high
        self.window_gate.answered(job, err is not None and err.kind == api.RATE_LIMITED)
        self._apply(job, out, now)
        self._wake.set()

    def _apply(self, job: Job, out: Outcome, now: float) -> None:
        """Carry out the retry policy's step for an answer."""
        err = out.error
        if job.sink is not None and getattr(job.sink, "gone", False):
            job.abandoned = True  # its app closed the stream under us
        if job.abandoned:  # nobody waits for it: never repeated, never parked
            if err is None:
                self._on_success(job, out, now)
            elif err.kind.charge_unknown:
                self._finish(
                    job,
                    S.OUTCOME_UNKNOWN,
                    "the caller went away; the request was closed (the server may have "
                    "charged it): " + err.describe(),
                )
                self.balance.verify()
            else:
                self._finish(job, S.CANCELLED, "the caller went away: " + err.describe())
            return
        busy = (
            self.slots.refused(job.ep.key)
            if (err is not None and err.kind == api.CONCURRENCY)
            else 0
        )
        step = R.next_step(job, out, self.config, busy=busy, jitter=self._rng.random)
        job.failures = step.failures
        a = step.action
        if a == R.SUCCEED:
            self._on_success(job, out, now)
        elif a in (R.HOLD_KEY, R.TOO_LONG):
            self._on_429(job, out, now, step)
        elif a == R.PARK and err is not None:
            self._on_402(job, err, step.reason)
        elif a in (R.WAIT_SLOT, R.RETRY):
            if a == R.WAIT_SLOT:
                until = self.slots.hold_until(job.ep.key, now + step.delay)
                self._enqueue(job, until, S.WAITING_SLOT)
            else:
                self._enqueue(job, now + step.delay, S.BACKOFF)
            job.reason = step.reason
            self._persist_state(job)
        else:
            self._finish(job, S.FAILED, step.reason)
            if a == R.FATAL:
                self._fatal = "the API key was rejected (HTTP 401): check MAVERA_API_KEY"
                self._alert("error", "unauthorized", self._fatal)
            elif step.alert:
                self._alert("warning", "bad_response", step.alert)

    def _on_success(self, job: Job, out: Outcome, now: float) -> None:
        credits = out.credits_used if out.credits_used is not None else 0
        job.actual = credits
        self.calibration.add(job.ep.key, job.est.high, credits)
        self.slots.answered(job.ep.key, out.latency)
        for a in self.budget.charge(credits, now):
            self._alert(a.level, a.kind, a.message)
        self.credits.charged(job, credits)
        if job.spec.method == "GET" and self.config.cache_ttl > 0:
            self._cache[_jsonable_key(job.spec.path, job.spec.body)] = (
                now + self.config.cache_ttl,
                out.body,
            )
        self._finish(job, S.SUCCEEDED, "")
        if self.credits.settle_wait:
            self._release(self.credits.settle_wait)

    def _on_429(self, job: Job, out: Outcome, now: float, step: R.Step) -> None:
        self.stats.responses_429 += 1
        cfg = self.config
        asked = out.headers.retry_after
        wait, already_held = self._hold_key(out, now, job.sent_at)
        if not already_held:  # one event per hold, not one per job that runs into it
            self._alert(
                "warning",
                "rate_limited",
                f"429 rate limit on {job.ep.path}: the whole key is held "
                f"{wait:.0f} s"
                + (
                    " (Retry-After)"
                    if asked is not None
                    else " (no usable Retry-After: backing off)"
                ),
            )
        if step.action == R.TOO_LONG:
            self._finish(job, S.FAILED, step.reason)
            self._alert(
                "error",
                "retry_after_too_long",
                f"429 with Retry-After {step.delay:.0f} s "
                f"(max {cfg.max_retry_after:.0f} s): job {job.id} failed; the "
                "key is held by the window and Reset only; raise --max-retry-after "
                "to wait it out",
            )
            return
        self._enqueue(job, now + wait, S.WAITING_WINDOW)
        job.reason = f"rate limited (429); retry in {wait:.1f} s"
        self._persist_state(job)
        recent = len(self.window_gate.recent_429)
        if recent >= cfg.storm_threshold and now - self._storm_alerted_at > 60:
            self._storm_alerted_at = now
            self._alert("warning", "429_storm", f"{recent} rate-limit 429s in the last minute")

    def _on_402(self, job: Job, err: api.ApiError, reason: str) -> None:
        self.stats.count_402 += 1
        first = self.credits.refused(err.kind, err.code, err.kind == api.CREDITS)
        self.credits.wait(job, C.PARK, reason)
        self._persist_state(job)
        if first:
            self.balance.announce_park(err.kind, f"402 {err.code or err.kind}", err.message)
