"""The dispatch loop: the scheduler around its gates.

A job is admitted when (1) the key's sliding window has room (:mod:`.window`), (2) its
endpoint has a free slot and no concurrency hold (:mod:`.slots`), (3) pre-flight says the
balance minus what admitted jobs reserve covers its estimate plus 20% (:mod:`.credits`).
Admission reserves the estimate; the answer settles it. Among admissible jobs the
operator's priority decides first; then jobs on capped endpoints go before uncapped ones
(the endpoint with the most queued work per slot first, longest jobs first), and a few
window admissions are held back for capped jobs whose slots are about to free, because a
batch can only finish as early as its slowest capped endpoint allows if that endpoint's
slots never sit idle. What happens after an answer is the retry policy's (:mod:`.retry`);
the loop sleeps until the earliest time a gate may open, or an event wakes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Any

from .. import catalog
from .. import snapshot as S
from ..budget import Budget
from ..catalog import Endpoint
from ..clock import Clock
from ..estimate import Calibration
from ..limiter import SlidingWindow
from ..store import Store
from . import credits as C
from .balance import BalanceKeeper
from .commands import Commands
from .model import Job, SchedulerConfig, Transport
from .ready import ReadyQueue
from .slots import SlotGate
from .stats import RunStats
from .window import WindowGate

if TYPE_CHECKING:
    from ..shared.fleet import Fleet

log = logging.getLogger("mavera_tui.scheduler")

_UNCAPPED = frozenset(k for k, e in catalog.ENDPOINTS.items() if e.cap is None)


class Scheduler(Commands):
    """Runs jobs against the API as fast as the limits allow; implements EngineControl."""

    def __init__(
        self,
        transport: Transport,
        *,
        clock: Clock | None = None,
        store: Store | None = None,
        config: SchedulerConfig | None = None,
        mode: str = "live",
        target: str = "",
        simulated: bool = False,
    ):
        self.transport = transport
        self.clock = clock or Clock()
        self.store = store
        self.config = cfg = config or SchedulerConfig()
        self.mode, self.target, self.simulated = mode, target, simulated
        self.window = SlidingWindow(
            cfg.limit or catalog.TIERS[catalog.DEFAULT_TIER], cfg.window_seconds
        )
        self.window_gate = WindowGate(self.window)
        self.slots = SlotGate(cfg.max_in_flight)
        self.queue = ReadyQueue(list(catalog.ENDPOINTS), self.slots.latency)
        self.budget = Budget(cfg.budget)
        self.credits = C.CreditGate(self.budget, cfg.balance_max_age)
        self.balance = BalanceKeeper(self)
        self.calibration = Calibration()
        self.stats = RunStats()
        self._rng = random.Random(cfg.seed)
        self.jobs: dict[str, Job] = {}
        self._seq = itertools.count(1)
        self._paused = False
        # Dispatch held while a run that stops waiting makes sure of what is left, and a
        # batch the fleet is admitting meanwhile (see wait_idle).
        self._ending = False
        self._launching = False
        self._fatal: str | None = None
        self._wake = asyncio.Event()
        self._done = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._dispatcher: asyncio.Task[None] | None = None
        self._closing = False
        self._cache: dict[str, tuple[float, Any]] = {}
        self._recent: OrderedDict[str, Job] = OrderedDict()
        self._alerts: deque[S.AlertView] = deque(maxlen=100)
        self._block_alert_at = -1e18
        self._blocked_recent = 0
        self._storm_alerted_at = -1e18
        self._unfinished = 0
        self._waiters: dict[str, asyncio.Future[Job]] = {}
        # With --shared: the fleet's admission (mavera_tui.shared.fleet), else None.
        self.fleet: Fleet | None = None

    # ====================================================================== lifecycle ====

    async def start(
        self, *, fetch_balance: bool = True, resume: bool = True, batch: int | None = None
    ) -> None:
        """Resume persisted jobs (unless ``resume`` is False: a store shared by several
        engines, whose unfinished jobs no caller waits for any more), learn the limit and
        balance, start dispatching. ``batch``: how many jobs the caller is about to submit
        (``run``), for when to read the balance (``balance_read``)."""
        now = self.clock.now()
        self.stats.started_at = now
        self.budget.note_started(now)
        if self.store is not None and resume:
            await self._resume_from_store()
        elif self.store is not None:
            self._seq = await self.store.seq_counter()
        if fetch_balance and batch is not None and self.config.balance_read != "start":
            fetch_balance = await self.balance.plan(batch)
        if fetch_balance and batch is not None and self.fleet is None:
            # A batch (``run``): its jobs are journaled while the read is on the wire (at
            # W = 6 s, the 30-50 ms of a 500-job journal write is 0.5% of a batch); the
            # dispatcher sends none of them before the read is answered. Not in a fleet:
            # there, queued jobs take part in the key's order (the heartbeat advertises the
            # best waiting) and the others would make way for jobs not yet sendable.
            self._dispatcher = asyncio.create_task(self._read_then_dispatch(), name="dispatcher")
            return
        if fetch_balance:
            await self.balance.first()
        self._dispatcher = asyncio.create_task(self._dispatch_loop(), name="dispatcher")
        self.balance.start_refresh()

    async def _read_then_dispatch(self) -> None:
        await self.balance.first()
        self.balance.start_refresh()
        await self._dispatch_loop()

    async def close(self) -> None:
        """Stop dispatching; wait for in-flight requests; flush the store."""
        self._closing = True
        self._wake.set()
        for t in [x for x in (self._dispatcher,) if x] + self.balance.tasks():
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._drop_waiters()
        await self._flush()

    async def abort(self) -> None:
        """Stop at once (SIGTERM): in-flight requests are cancelled and stay 'in flight' in
        the store, so a restart marks them 'outcome unknown' rather than re-sending them.
        The balance tasks (poll, verification) are cancelled too."""
        self._closing = True
        self._wake.set()
        own = [x for x in (self._dispatcher,) if x] + self.balance.tasks()
        for t in list(self._tasks) + own:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for t in own:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._drop_waiters()
        await self._flush()

    def _drop_waiters(self) -> None:
        """Stopping: nobody will finish the jobs still waited for; their waiters end."""
        waiters, self._waiters = self._waiters, {}
        for fut in waiters.values():
            if not fut.done():
                fut.cancel()

    # ======================================================================== queueing ====

    def _enqueue(self, job: Job, not_before: float = 0.0, state: str = S.QUEUED) -> None:
        job.state = state
        job.not_before = not_before
        if not_before > self.clock.now():
            self.queue.defer(job, not_before)
        else:
            self.queue.push(job)
        self._touch(job)

    def _release(self, jobs: list[Job]) -> None:
        for j in self.credits.take_all(jobs):
            self._enqueue(j)
        self._wake.set()

    # ======================================================================= dispatching ==

    async def _dispatch_loop(self) -> None:
        try:
            while not self._closing:
                self._wake.clear()
                now = self.clock.now()
                for job in self.queue.promote(now):
                    self._touch(job)
                held = self._paused or self._ending or self._fatal
                batch = [] if held else self._select(now)
                if batch:
                    await self._launch(batch)
                    continue
                self._check_done()
                wake_at = self._next_wakeup(now)
                timeout = None if wake_at is None else max(0.0, wake_at - now)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug here must not silently stop all work
            log.exception("dispatcher crashed")
            self._fatal = "internal error in the dispatcher (see the --debug log)"
            self._alert("error", "internal", self._fatal)
            self._done.set()

    def _pick(self, now: float, blocked: set[str] | frozenset[str]) -> Job | None:
        """The ready job to consider next: highest priority; then capped endpoints (most
        queued work per slot first); among the uncapped, the longest (measured) first, so
        the last window holds the shortest jobs and the batch ends as soon after it as it
        can."""
        q, slots = self.queue, self.slots
        best: Job | None = None
        best_key: tuple[int, float, int] | None = None
        for key, n in q.count.items():
            if n <= 0 or key in blocked:
                continue
            ep = catalog.ENDPOINTS[key]
            if slots.free(ep, now) <= 0:
                continue
            head = q.head(key)
            if head is None:
                continue
            urgency = q.work[key] / ep.cap if ep.cap else -1.0 / (1.0 + slots.expected_latency(key))
            k = (head.spec.priority, urgency, -head.seq)
            if best_key is None or k > best_key:
                best, best_key = head, k
        return best

    def _select(self, now: float) -> list[Job]:
        """Choose the jobs to send now, and take their window admissions and slots."""
        avail = self.window_gate.room(now)
        batch: list[Job] = []
        reserve: int | None = None
        blocked: set[str] = set()
        learning = self.window_gate.learning
        while avail > 0:
            job = self.queue.quickest(self.slots.expected_latency) if learning else None
            job = job or self._pick(now, blocked)
            if job is None:
                break
            if job.ep.cap is None and job.est.high >= 0:
                if reserve is None:
                    reserve = self.slots.reserve_for_capped(
                        now, job.spec.priority, self.window, self.queue
                    )
                if avail <= reserve:
                    blocked.update(_UNCAPPED)
                    continue
            self.queue.pop(job.ep.key)
            if not self._credit_pass(job, now):
                continue
            # A caller that wants the answer as it came gets the API's, not a cached body.
            if job.spec.method == "GET" and not job.keep_raw and self._serve_cached(job, now):
                continue
            self.credits.reserve(job)
            batch.append(job)
            self.slots.take(job)
            avail -= 1
            if self.window_gate.admit(job, now):
                break  # the probe goes alone
        return batch

    def _credit_pass(self, job: Job, now: float) -> bool:
        """Ask the credit gate; park, hold or block the job when it may not go now."""
        action, reason = self.credits.decide(job, now)
        if action == C.GO:
            return True
        if action == C.BLOCK:
            self._block(job, reason)
            return False
        self.credits.wait(job, C.PARK if action == C.PARK else C.SETTLE, reason)
        self._persist_state(job)
        if action == C.VERIFY:
            self.balance.verify()
        return False

    async def _launch(self, batch: list[Job]) -> None:
        if self.fleet is not None:  # the key's other processes have their say
            self._launching = True
            try:
                batch = await self.fleet.admit(batch)
            finally:
                self._launching = False
            if not batch:
                return
        for job in batch:
            job.attempts += 1
            job.state = S.IN_FLIGHT
            job.reason = ""
        if not await self._persist_dispatch(batch):
            return
        now = self.clock.now()
        st = self.stats
        if st.first_send is None:
            st.first_send = now
        for job in batch:
            job.sent_at = now
            self.slots.note_sent(job)
            st.sent(job.ep.key)
            if job.attempts > 1:
                st.retries += 1
            self._touch(job)
            task = asyncio.create_task(self._attempt(job))
            if job.sink is not None:
                job.task = task  # abandon() closes a stream by cancelling it
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _unsend(self, batch: list[Job], e: Exception) -> None:
        """The store refused a batch before it was sent: undo its admissions; retry soon."""
        for job in batch:
            self.window.release()
            self.slots.release(job)
            self.credits.settle(job)
            if self.fleet is not None:
                self.fleet.done(job, None, unsent=True)
            job.attempts -= 1
            self._enqueue(job, self.clock.now() + 1.0, S.BACKOFF)
            job.reason = f"not sent: {e}"
        self._alert("error", "store", f"cannot persist jobs before sending: {e}")

    def _next_wakeup(self, now: float) -> float | None:
        """The earliest time a gate may open without an event waking us."""
        waiting = not (self._paused or self._ending) and self.queue.any_ready()
        times = self.window_gate.next_open(now, waiting)
        due = self.queue.next_due()
        if due is not None:
            times.append(due)
        if waiting:
            times.extend(self.slots.next_open(now))
            times.extend(self.credits.next_open(now))
        future = [t for t in times if t > now]
        if future:
            return min(future)
        return now + 0.001 if times else None


__all__ = ["Endpoint", "Job", "Scheduler", "SchedulerConfig", "Transport"]
