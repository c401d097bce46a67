"""The fleet hook's admission (a mixin of :class:`.fleet.Fleet`): each batch the loop chose
asked of the fleet in one script call, what the fleet refused taken back from the local
gates and put back in the queue (its gate closed until Redis's time or a release's
wake-up), and the engine's own requests (balance reads) admitted ahead of every job."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import TYPE_CHECKING, Any

from .. import snapshot as S
from ..catalog import Endpoint
from ..config import SharedSettings
from ..estimate import with_buffer
from ..gates.model import Job
from . import state as st
from .state import AdmitRequest, SharedState, SharedUnavailable

if TYPE_CHECKING:
    from ..gates.loop import Scheduler
    from .fleet import SharedSlotGate, SharedWindowGate

#: Seconds after its jobs were last refused for the fleet's 402 park that a process still
#: counts as parked (they are asked again within a second while the park lasts).
PARK_RECENT = 5.0


class Admission:
    """Asking the fleet to admit this process's batches, and undoing what it refused."""

    state: SharedState
    settings: SharedSettings
    sched: Scheduler | None
    proc: str
    down: str | None
    epoch: str | None
    leases: dict[str, tuple[str, float]]
    job_lease: dict[str, str]
    _seq: itertools.count[int]
    admit_calls: int
    admit_jobs: int
    admit_seconds: float
    own_at: dict[str, float]
    #: Local monotonic time this process's jobs were last refused for the fleet's 402 park.
    park_seen: float = -1e18
    _park_poll: asyncio.Task[None] | None = None

    if TYPE_CHECKING:  # the Fleet's, used here

        @property
        def window_gate(self) -> SharedWindowGate: ...

        @property
        def slot_gate(self) -> SharedSlotGate: ...

        def _window(self) -> float: ...

        def _went_down(self, why: str) -> None: ...

        def _say(self, level: str, kind: str, message: str) -> None: ...

        def _spawn(self, coro: Any) -> asyncio.Task[None]: ...

    def _lease(self) -> str:
        return f"{self.proc}#{next(self._seq)}"

    def _best_waiting(self) -> int | None:
        s = self.sched
        if s is None:
            return None
        best: int | None = None
        for key, n in s.queue.count.items():
            if n > 0:
                head = s.queue.head(key)
                if head is not None and (best is None or head.spec.priority > best):
                    best = head.spec.priority
        return best

    def _queued(self) -> int:
        """Jobs this process has waiting to be sent (ready or due later)."""
        s = self.sched
        if s is None:
            return 0
        return sum(s.queue.count.values()) + len(s.queue.delayed)

    def _limit(self) -> int:
        w = self.sched.window if self.sched is not None else None
        return getattr(w, "full_limit", w.limit if w is not None else 60)

    def _capped_need(self) -> int:
        """Window admissions this process wants kept for its capped jobs (the loop's own
        reckoning, over every priority)."""
        s = self.sched
        if s is None:
            return 0
        try:
            return s.slots.reserve_for_capped(s.clock.now(), -(1 << 62), s.window, s.queue)
        except (ValueError, ZeroDivisionError):
            return 0

    async def _admit(self, reqs: list[AdmitRequest], best: int | None) -> st.AdmitResult:
        t0 = time.perf_counter()
        res = await self.state.admit(
            self.proc,
            reqs,
            limit=self._limit(),
            window=self._window(),
            margin=self.settings.margin,
            ttl=self.settings.lease_ttl,
            best=best,
            known_epoch=self.epoch,
            need=self._capped_need(),
            queued=self._queued(),
        )
        self.admit_seconds += time.perf_counter() - t0
        self.admit_calls += 1
        if self.epoch is not None and res.epoch != self.epoch:
            self._say(
                "warning",
                "shared_restarted",
                "the shared state was lost (Redis restarted empty): every process waits "
                "one window, which the server still counts",
            )
        self.epoch = res.epoch
        return res

    async def admit(self, batch: list[Job]) -> list[Job]:
        """Ask the fleet for ``batch`` (already through the local gates): returns what was
        admitted; the rest goes back to the queue, its gates closed until Redis's time."""
        s = self.sched
        assert s is not None
        if self.down is not None:
            if self.settings.fallback == "local":
                return batch  # the local gates, on this process's share, admitted them
            self._refuse(batch, [st.REFUSED_HOLD] * len(batch), 0.5)
            return []
        reqs = []
        for job in batch:
            lease = self._lease()
            self.job_lease[job.id] = lease
            high = max(0, job.est.high)
            reqs.append(
                AdmitRequest(
                    lease,
                    job.ep.key,
                    job.ep.cap or 0,
                    job.spec.priority,
                    with_buffer(high) if high > 0 else 0,
                    high,
                )
            )
        try:
            res = await self._admit(reqs, self._best_waiting())
        except SharedUnavailable as e:
            for job in batch:
                self.job_lease.pop(job.id, None)
            self._went_down(str(e))
            if self.settings.fallback == "local":
                return batch
            self._refuse(batch, [st.REFUSED_HOLD] * len(batch), 0.5)
            return []
        self.admit_jobs += res.codes.count(st.ADMITTED)
        self.window_gate.heard(res.room, s.clock.now())
        admitted, refused, codes = [], [], []
        # From when the call went, not when its answer came: a write's delay from this puts
        # the admission in the fleet's log no earlier than the write (an answer read late
        # by a busy loop would otherwise move it short, and it left the log before the
        # server stopped counting it).
        t = res.asked
        for job, req, code in zip(batch, reqs, res.codes, strict=True):
            if code == st.ADMITTED:
                self.leases[req.lease] = (job.ep.key, t)
                admitted.append(job)
            else:
                self.job_lease.pop(job.id, None)
                refused.append(job)
                codes.append(code)
        if refused:
            self._refuse(refused, codes, res.retry_in())
        return admitted

    def _refuse(self, jobs: list[Job], codes: list[int], retry_in: float | None) -> None:
        """Undo the local admissions of refused jobs and put them back; close the gate
        that refused until Redis's time (or a release's wake-up)."""
        s = self.sched
        assert s is not None
        now = s.clock.now()
        w = self._window()
        soon = now + min(1.0, w / 10)
        until = now + (retry_in if retry_in is not None else min(1.0, w / 20))
        gate = self.window_gate
        for job, code in zip(jobs, codes, strict=True):
            s.window.release()
            s.slots.release(job)
            s.credits.settle(job)
            if gate.probe_job is job:
                gate.probe_job = None
            if code in (st.REFUSED_WINDOW, st.REFUSED_HOLD):
                gate.blocked_until = max(gate.blocked_until, until)
                s._enqueue(job)
            elif code == st.REFUSED_SLOT:
                # Until a release on the endpoint is published (or, should that message be
                # lost, a look again within two seconds; a killed holder's lease runs out).
                self.slot_gate.blocked[job.ep.key] = min(until, now + 2.0)
                s._enqueue(job)
            elif code == st.YIELDED and retry_in is not None:
                # Left to the fleet's capped jobs: uncapped work waits until the window has
                # room past what they keep.
                if job.ep.cap is None:
                    gate_s = self.slot_gate
                    gate_s.uncapped_until = max(gate_s.uncapped_until, until)
                s._enqueue(job, until)
            else:  # credits, park, or yielding to higher priority: look again soon
                if code == st.REFUSED_PARK:
                    self._parked_by_fleet()
                s._enqueue(job, soon, S.WAITING_CREDITS if code != st.YIELDED else S.QUEUED)
            job.reason = "fleet: " + st.CODES.get(code, "refused")

    def fleet_parked(self) -> bool:
        """This process's jobs were refused for the fleet's 402 park within the last few
        seconds (they are asked again every second or less while it lasts)."""
        return time.monotonic() - self.park_seen < PARK_RECENT

    def _parked_by_fleet(self) -> None:
        """Refused for another process's 402: this process is parked too. It renews the
        park by its heartbeat and polls the balance (a read with credits ends the park, for
        every process): else the park lapsed a lease time after the last process that got
        the 402 left, and paid work went on the balance the 402 had contradicted."""
        self.park_seen = time.monotonic()
        if self._park_poll is None or self._park_poll.done():
            self._park_poll = self._spawn(self._park_poll_loop())

    async def _park_poll_loop(self) -> None:
        s = self.sched
        while s is not None and not s._closing and self.fleet_parked():
            await s.clock.sleep(s.config.credit_poll)
            # (A 402 of its own polls already, by the local credit gate.)
            if s._closing or not self.fleet_parked() or s.credits.hold is not None:
                continue
            # For the fleet: its jobs wait for the fleet's answer (a read with credits ends
            # the park and wakes them), as a 402 of their own would have them wait.
            await s.balance.refresh(adopt=False)

    async def admit_own(self, ep: Endpoint) -> str | None:
        """Admission for one of the engine's own requests (a balance read): waits until
        the fleet has room. None when it goes without a lease (Redis away, local
        fallback) or the scheduler is closing."""
        s = self.sched
        assert s is not None
        while not s._closing:
            if self.down is not None:
                if self.settings.fallback == "local":
                    return None
                await s.clock.sleep(0.5)
                continue
            lease = self._lease()
            req = AdmitRequest(lease, ep.key, 0, st.OWN_PRIORITY, 0, 0)
            try:
                res = await self._admit([req], None)
            except SharedUnavailable as e:
                self._went_down(str(e))
                continue
            if res.codes[0] == st.ADMITTED:
                self._own_admitted(lease, ep, res)
                return lease
            await s.clock.sleep(max(0.01, min(res.retry_in() or 0.2, self._window())))
        return None

    async def admit_free(self, ep: Endpoint) -> str | None:
        """One try at admitting an engine request that must cost the fleet nothing (a
        deferred balance read): admitted only into room no queued send of the fleet needs.
        The lease, or None (not now, or Redis away)."""
        if self.down is not None or self.sched is None:
            return None
        lease = self._lease()
        req = AdmitRequest(lease, ep.key, 0, st.FREE_PRIORITY, 0, 0)
        try:
            res = await self._admit([req], self._best_waiting())
        except SharedUnavailable as e:
            self._went_down(str(e))
            return None
        if res.codes[0] != st.ADMITTED:
            return None
        self._own_admitted(lease, ep, res)
        return lease

    def _own_admitted(self, lease: str, ep: Endpoint, res: st.AdmitResult) -> None:
        self.leases[lease] = (ep.key, res.asked)
        # Redis's time of the admission: a balance read admitted before a 402 reached the
        # fleet may predate it, and does not end the fleet's park.
        self.own_at[lease] = res.now_ms
