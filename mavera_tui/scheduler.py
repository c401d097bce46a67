"""The scheduler: a durable priority queue, the gates (window, slots, credits), dispatch and retry.

A job is admitted when (1) the key's sliding window has room, (2) its endpoint has a free
slot and no concurrency hold, (3) pre-flight says the balance minus what admitted jobs
reserve covers its estimate plus 20%. Admission reserves the estimate; the answer settles
it. Among admissible jobs the operator's priority decides first; then jobs on capped
endpoints go before uncapped ones (the endpoint with the most queued work per slot
first, longest jobs first), and a few window admissions are held back for capped jobs
whose slots are about to free, because a batch can only finish as early as its slowest
capped endpoint allows if that endpoint's slots never sit idle.

Outcomes: a window 429 holds the whole key until Retry-After; a concurrency 429 holds only
its endpoint; 5xx, timeouts and dropped connections back off exponentially with jitter;
a 402 parks the affected jobs as waiting for credits and polls the balance; a Retry-After
over the configured maximum is reported, not silently waited out.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import json
import logging
import math
import random
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from . import catalog
from . import client as api
from . import snapshot as S
from .budget import Budget, BudgetConfig
from .catalog import Endpoint
from .client import Outcome, parse_balance
from .clock import Clock
from .estimate import Calibration, Estimate, Verdict, preflight
from .jobs import JobSpec
from .limiter import SlidingWindow
from .store import Store

log = logging.getLogger(__name__)


class Transport(Protocol):
    """What the scheduler sends requests through (ApiClient, or an instant fake in benches)."""

    async def request(self, method: str, path: str, body: dict[str, Any] | None = None,
                      timeout: float | None = None, on_written: Any = None) -> Outcome: ...


@dataclass
class SchedulerConfig:
    """Scheduler settings. Times are seconds."""

    window_seconds: float = catalog.WINDOW_SECONDS
    limit: int | None = None              # None: the default tier's, until headers say
    max_attempts: int = 5                 # for 5xx / timeouts / dropped connections
    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    max_retry_after: float = catalog.MAX_BACKOFF_SECONDS
    request_timeout: float = 300.0
    # Requests in flight at once on endpoints without a documented cap (responses, ...).
    # Thousands handed to the HTTP client at once starve the loop and make every stamp
    # late; 256 keeps >1,000 requests/s possible over loopback at a 0.2 s latency.
    max_in_flight: int = 256
    credit_poll: float = 30.0             # balance poll while jobs wait for credits
    balance_refresh: float = 0.0          # periodic balance re-sync (0: off)
    cache_ttl: float = 30.0               # identical GETs inside this are served from cache
    balance_max_age: float = 10.0         # re-read the balance before refusing on an older one
    resend_unknown_up_to: int = 0         # after a crash, re-send in-flight jobs costing <= this
    storm_threshold: int = 5              # 429s within a minute that make a "429 storm"
    recent_jobs: int = 200
    keep_finished: bool = True            # False for long runs (monitor, record): finished
                                          # jobs then live only in the store and recent list
    seed: int | None = None
    budget: BudgetConfig = field(default_factory=BudgetConfig)


@dataclass(eq=False)
class Job:
    """A job's live state inside the scheduler."""

    spec: JobSpec
    ep: Endpoint
    est: Estimate
    seq: int
    state: str = S.QUEUED
    attempts: int = 0
    failures: int = 0                 # 5xx / timeouts / drops so far (for the backoff)
    not_before: float = 0.0
    reason: str = ""
    actual: int | None = None
    reserved: int = 0
    created: float = 0.0
    updated: float = 0.0
    sent_at: float = 0.0
    in_heap: bool = False

    @property
    def id(self) -> str:
        return self.spec.id


def _purchases_since(body: Any, since_wall: float) -> int:
    """Credits purchased (auto-recharge, dashboard) after ``since_wall``, from the billing
    answer's transaction history (absent or unreadable: 0)."""
    txs = body.get("transactions") if isinstance(body, dict) else None
    total = 0
    for tx in txs if isinstance(txs, list) else []:
        if not isinstance(tx, dict) or tx.get("type") != "purchase":
            continue
        amount, ts = tx.get("amount"), tx.get("timestamp")
        if not isinstance(amount, (int, float)) or isinstance(amount, bool):
            continue
        try:
            when = datetime.fromisoformat(str(ts).replace("Z", "+00:00")).timestamp()
        except (TypeError, ValueError):
            continue
        if when >= since_wall - 1.0:
            total += int(abs(amount))
    return total


class _Stamp:
    """When a send was written (None until it is)."""

    __slots__ = ("at",)

    def __init__(self) -> None:
        self.at: float | None = None


def _jsonable_key(path: str, body: dict[str, Any]) -> str:
    return path + "?" + json.dumps(body, sort_keys=True, separators=(",", ":"))


class Scheduler:
    """Runs jobs against the API as fast as the limits allow; implements EngineControl."""

    def __init__(self, transport: Transport, *, clock: Clock | None = None,
                 store: Store | None = None, config: SchedulerConfig | None = None,
                 mode: str = "live", target: str = "", simulated: bool = False):
        self.transport = transport
        self.clock = clock or Clock()
        self.store = store
        self.config = config or SchedulerConfig()
        cfg = self.config
        self.mode = mode
        self.target = target
        self.simulated = simulated
        self.window = SlidingWindow(cfg.limit or catalog.TIERS[catalog.DEFAULT_TIER],
                                    cfg.window_seconds)
        self.budget = Budget(cfg.budget)
        self.calibration = Calibration()
        self._rng = random.Random(cfg.seed)
        self.jobs: dict[str, Job] = {}
        self._seq = itertools.count(1)
        self._ready: dict[str, list[tuple[tuple[int, int, int], Job]]] = {
            k: [] for k in catalog.ENDPOINTS}
        self._ready_n: dict[str, int] = dict.fromkeys(catalog.ENDPOINTS, 0)
        self._ready_work: dict[str, float] = dict.fromkeys(catalog.ENDPOINTS, 0.0)
        self._delayed: list[tuple[float, int, Job]] = []
        self._parked: list[Job] = []           # waiting for credits
        self._settle_wait: list[Job] = []      # affordable once reservations settle
        self._in_flight: dict[str, set[Job]] = {k: set() for k in catalog.ENDPOINTS}
        self._uncapped_in_flight = 0           # requests in flight on endpoints with no cap
        self._ep_hold: dict[str, float] = dict.fromkeys(catalog.ENDPOINTS, 0.0)
        self._ep_busy: dict[str, int] = dict.fromkeys(catalog.ENDPOINTS, 0)  # 429 streak
        self._max_in_flight: dict[str, int] = dict.fromkeys(catalog.ENDPOINTS, 0)
        self._latency: dict[str, float] = {
            k: (e.latency[0] + e.latency[1]) / 2 for k, e in catalog.ENDPOINTS.items()}
        self._latency_seen: dict[str, bool] = dict.fromkeys(catalog.ENDPOINTS, False)
        self.reserved = 0
        self._paused = False
        self._credit_hold: str | None = None   # None, or the 402 code that parked jobs
        self._fatal: str | None = None
        self._wake = asyncio.Event()
        self._done = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._dispatcher: asyncio.Task[None] | None = None
        self._poller: asyncio.Task[None] | None = None
        self._verifier: asyncio.Task[None] | None = None
        self._balance_at = -1e18               # loop time of the last balance we read
        self._billing_path = catalog.ENDPOINTS["billing_credits"].path
        self._block_alert_at = -1e18
        self._blocked_recent = 0
        self._closing = False
        self._cache: dict[str, tuple[float, Any]] = {}
        self._recent: OrderedDict[str, Job] = OrderedDict()
        self._alerts: deque[S.AlertView] = deque(maxlen=100)
        self._recent_429: deque[float] = deque()
        # After a 429 without a usable Retry-After we cannot know when the key is free:
        # when the hold ends, send one job alone (a probe) and release the rest only when
        # it is not answered 429 (or no 429 came within _probe_grace), so a server that is
        # still refusing costs one 429 per hold, not one per queued job.
        self._probe_needed = False
        self._probe_job: Job | None = None
        self._probe_at = 0.0
        self._probe_grace = min(2.0, cfg.window_seconds / 30)
        self._storm_alerted_at = -1e18
        self.started_at: float | None = None
        self.first_send: float | None = None
        self.last_done: float | None = None
        # Counters (cumulative) for snapshots and summaries.
        self.requests_total = 0
        self.responses_429 = 0
        self.retries = 0
        self.status_counts: dict[str, int] = {}
        self.sent_by_ep: dict[str, int] = dict.fromkeys(catalog.ENDPOINTS, 0)
        self.credits_by_ep: dict[str, int] = dict.fromkeys(catalog.ENDPOINTS, 0)
        self.estimated_by_ep: dict[str, int] = dict.fromkeys(catalog.ENDPOINTS, 0)
        self.credits_used_total = 0
        # Attempts whose charge we cannot know (timeouts, dropped connections, unreadable
        # 2xx bodies: the server may have done and billed the work) and the most they can
        # have cost (their estimates): the API may have charged up to that beyond
        # credits_used_total; GET /billing/credits tells the truth.
        self.credits_unknown_attempts = 0
        self.credits_unknown_max = 0
        # The first balance read, to reconcile unknowable charges at the end of a run.
        self.balance_start: int | None = None
        self.balance_start_wall = 0.0
        self._billing_body: Any = None
        self.credits_reconciled: int | None = None
        self.reconcile_note = ""
        self.count_402 = 0
        self.finished: dict[str, int] = {}
        self._unfinished = 0
        self.jobs_seen = 0                     # every job this engine took on (cumulative)

    # ====================================================================== lifecycle ====

    async def start(self, *, fetch_balance: bool = True) -> None:
        """Resume persisted jobs, learn the limit and balance, start dispatching."""
        now = self.clock.now()
        self.started_at = now
        self.budget.note_started(now)
        if self.store is not None:
            await self._resume_from_store()
        if fetch_balance:
            # Pre-flight is blind without a balance: a lost answer (5xx, drop, timeout) at
            # start is worth a couple of retries before the first job goes out.
            for delay in (1.0, 2.0, 0.0):
                if await self.refresh_balance() or self._closing or not delay:
                    break
                await self.clock.sleep(delay)
        self._dispatcher = asyncio.create_task(self._dispatch_loop(), name="dispatcher")
        if self.config.balance_refresh > 0:
            self._poller = asyncio.create_task(self._refresh_loop(), name="balance-refresh")

    async def close(self) -> None:
        """Stop dispatching; wait for in-flight requests; flush the store."""
        self._closing = True
        self._wake.set()
        for t in (self._dispatcher, self._poller, self._verifier):
            if t is not None:
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.store is not None:
            with contextlib.suppress(Exception):
                await self.store.flush()

    async def abort(self) -> None:
        """Stop at once (SIGTERM): in-flight requests are cancelled and stay 'in flight' in
        the store, so a restart marks them 'outcome unknown' rather than re-sending them."""
        self._closing = True
        self._wake.set()
        for t in list(self._tasks) + [x for x in (self._dispatcher, self._poller) if x]:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for t in (self._dispatcher, self._poller):
            if t is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
        if self.store is not None:
            with contextlib.suppress(Exception):
                await self.store.flush()

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
            job = Job(spec, ep, est, r.seq, attempts=r.attempts, created=r.created,
                      updated=wall)
            self.jobs[job.id] = job
            self._unfinished += 1
            self.jobs_seen += 1
            if r.state == S.OUTCOME_UNKNOWN:
                job.reason = r.reason
                self._finish(job, S.OUTCOME_UNKNOWN, r.reason)
                continue
            if r.state == S.IN_FLIGHT:
                if est.high <= self.config.resend_unknown_up_to:
                    job.reason = (f"re-sent after a restart: was in flight, costs at most "
                                  f"{est.high} (<= {self.config.resend_unknown_up_to})")
                else:
                    self._finish(job, S.OUTCOME_UNKNOWN,
                                 "was in flight when the process stopped; it may or may not "
                                 "have run (and been charged). Not re-sent: check the "
                                 "dashboard, then resubmit under a new id if needed.")
                    self._alert("warning", "outcome_unknown",
                                f"job {job.id} was in flight at the last stop: outcome unknown")
                    continue
            self._enqueue(job)
        if rows:
            n = sum(1 for j in self.jobs.values() if j.state not in S.FINAL_STATES)
            self._alert("info", "resumed",
                        f"resumed {n} unfinished jobs from {self.store.path.name}")

    # ======================================================================= commands ====

    async def submit(self, spec: JobSpec) -> str:
        """Persist and enqueue one job."""
        accepted, errors = await self.submit_many([spec])
        if errors:
            raise ValueError(errors[0])
        return accepted[0]

    async def submit_many(self, specs: list[JobSpec]) -> tuple[list[str], list[str]]:
        """Persist (one transaction) and enqueue jobs. Returns (accepted ids, error messages);
        ids already known (in this run or in the database) are refused."""
        errors: list[str] = []
        fresh: list[Job] = []
        seen: set[str] = set()
        in_db = await self.store.existing_ids([s.id for s in specs]) if self.store else set()
        wall = self.clock.wall()
        for spec in specs:
            if spec.id in self.jobs or spec.id in seen or spec.id in in_db:
                errors.append(f"job id {spec.id!r} already exists")
                continue
            try:
                est = spec.estimate()
            except ValueError as e:
                errors.append(f"job {spec.id!r}: {e}")
                continue
            seen.add(spec.id)
            fresh.append(Job(spec, spec.endpoint, est, next(self._seq), created=wall,
                             updated=wall))
        if self.store is not None and fresh:
            await self.store.add_jobs([
                (j.id, j.seq, j.spec.method, j.spec.path, j.ep.key,
                 json.dumps(j.spec.body), j.spec.priority, S.QUEUED, j.est.high, "",
                 j.created) for j in fresh])
        for j in fresh:
            self.jobs[j.id] = j
            self._unfinished += 1
            self.jobs_seen += 1
            self._enqueue(j)
        self._wake.set()
        return [j.id for j in fresh], errors

    def pause(self) -> None:
        if not self._paused:
            self._paused = True
            self._alert("info", "paused", "dispatch paused by the operator")

    def resume(self) -> None:
        if self._paused:
            self._paused = False
            self._alert("info", "resumed", "dispatch resumed")
            self._wake.set()

    @property
    def paused(self) -> bool:
        return self._paused

    def cancel(self, job_id: str) -> bool:
        job = self.jobs.get(job_id)
        if job is None or job.state in S.FINAL_STATES or job.state == S.IN_FLIGHT:
            return False
        if job.in_heap and job.state in (S.QUEUED,):
            self._ready_n[job.ep.key] -= 1
            self._ready_work[job.ep.key] -= self._work(job)
        if job in self._parked:
            self._parked.remove(job)
        if job in self._settle_wait:
            self._settle_wait.remove(job)
        job.in_heap = False
        self._finish(job, S.CANCELLED, "cancelled by the operator")
        self._wake.set()
        return True

    def preflight(self, est: Estimate) -> Verdict:
        """The pre-flight verdict for a new job now (the form asks this as the user types)."""
        remaining = self.budget.total
        if remaining is None:
            return Verdict(True, est.high, est.high, 0, 0, self.reserved,
                           "balance unknown: not checked (the API's 402 still protects you)")
        cap = self.budget.cap_refusal(self.reserved, est.high)
        if cap:
            return Verdict(False, est.high, est.high, remaining - self.reserved, remaining,
                           self.reserved, cap)
        return preflight(est, remaining, self.reserved)

    async def refresh_balance(self) -> bool:
        """GET /billing/credits through the window; adopt the balance. False on failure."""
        ep = catalog.ENDPOINTS["billing_credits"]
        out, sent_at = await self._send_engine_request(ep, self._billing_path)
        if out is not None and out.status == 404 and self._billing_path == ep.path:
            # The packs page documents GET /api/billing/credits, outside /api/v1: a server
            # that only serves that path is found here once and remembered.
            alt = getattr(self.transport, "origin_path", lambda p: None)(
                catalog.BILLING_ALT_PATH)
            if alt:
                out2, _ = await self._send_engine_request(ep, alt)
                if out2 is not None and out2.status != 404:
                    self._billing_path, out = alt, out2
        if out is None:
            return False
        bal = parse_balance(out.body) if out.ok else None
        if bal is None:
            if out.ok:
                self._alert("warning", "balance_unreadable",
                            "GET /billing/credits answered without a balance we could read")
            return False
        self._balance_at = self.clock.now()
        self._note_latency("billing_credits", out.latency)
        self._billing_body = out.body
        if self.balance_start is None and self.first_send is None:
            # Only a balance read before our first job is a baseline for reconciling.
            self.balance_start, self.balance_start_wall = bal.total, self.clock.wall()
        for a in self.budget.set_balance(bal):
            self._alert(a.level, a.kind, a.message)
        return True

    async def reconcile_credits(self) -> None:
        """After a run with charges we could not read (drops after the work, timeouts,
        unreadable answers): read the balance again and, if its movement is consistent
        with what we know (at least the known charges, at most known + the unknown
        attempts' estimates), adopt it as what the API charged."""
        if not self.credits_unknown_attempts:
            return
        if self.balance_start is None:
            self.reconcile_note = "no balance was read before the first job: cannot reconcile"
            return
        if not await self.refresh_balance() or self.budget.total is None:
            self.reconcile_note = "could not read the balance to reconcile unknown charges"
            return
        purchases = _purchases_since(self._billing_body, self.balance_start_wall)
        moved = self.balance_start - self.budget.total + purchases
        known = self.credits_used_total
        if known <= moved <= known + self.credits_unknown_max:
            self.credits_reconciled = moved - known
            self.credits_used_total = moved
            self.reconcile_note = (f"{moved - known} credits of {self.credits_unknown_attempts} "
                                   "attempt(s) with unreadable outcomes, from the balance")
        else:
            self.reconcile_note = (f"the balance moved by {moved}, not between {known} and "
                                   f"{known + self.credits_unknown_max}: other spending on "
                                   "the account? credits_used counts only readable charges")

    async def _verify_balance(self) -> None:
        """Re-read the balance, then give the jobs waiting on it their verdict again."""
        if not await self.refresh_balance():
            self._balance_at = self.clock.now()  # unreadable: decide on what we have
        self._release(self._settle_wait)

    async def _send_engine_request(self, ep: Endpoint,
                                   path: str | None = None) -> tuple[Outcome | None, float]:
        """One request of the engine's own (not a job): waits for the window like any other."""
        while True:
            now = self.clock.now()
            if self._closing:
                return None, now
            if self.window.available(now) > 0:
                break
            await self.clock.sleep(max(0.01, self.window.next_free(now) - now))
        self.window.reserve()
        self.requests_total += 1
        self.sent_by_ep[ep.key] += 1
        path = path or ep.path
        stamp, kw = self._stamper(None)
        try:
            out = await self.transport.request(ep.method, path, None,
                                               timeout=min(30.0, self.config.request_timeout),
                                               **kw)
        finally:
            if stamp.at is None:
                self.window.release()
        now = stamp.at if stamp.at is not None else now
        done = self.clock.now()
        self.window.observe(now, done, out.headers, self.clock.wall())
        self._count_status(out)
        self._ledger(None, ep, path, 1, now, out, 0)
        if out.error is not None and out.error.kind == api.RATE_LIMITED:
            self._key_hold(out, done)
        return out, now

    # ======================================================================== queueing ====

    def _work(self, job: Job) -> float:
        return self._latency[job.ep.key]

    def _enqueue(self, job: Job, not_before: float = 0.0, state: str = S.QUEUED) -> None:
        now = self.clock.now()
        job.state = state
        job.not_before = not_before
        if not_before > now:
            heapq.heappush(self._delayed, (not_before, job.seq, job))
        else:
            self._push_ready(job)
        self._touch(job)

    def _push_ready(self, job: Job) -> None:
        job.state = S.QUEUED
        job.in_heap = True
        # Longest first on capped endpoints (the estimate is our proxy for length).
        lpt = -job.est.high if job.ep.cap else 0
        heapq.heappush(self._ready[job.ep.key], ((-job.spec.priority, lpt, job.seq), job))
        self._ready_n[job.ep.key] += 1
        self._ready_work[job.ep.key] += self._work(job)

    def _promote(self, now: float) -> None:
        d = self._delayed
        while d and d[0][0] <= now:
            _, _, job = heapq.heappop(d)
            if job.state in S.FINAL_STATES:
                continue
            self._push_ready(job)
            self._touch(job)

    def _head(self, key: str) -> Job | None:
        h = self._ready[key]
        while h:
            job = h[0][1]
            if job.state == S.QUEUED and job.in_heap:
                return job
            heapq.heappop(h)
        return None

    def _pop(self, key: str) -> Job:
        _, job = heapq.heappop(self._ready[key])
        job.in_heap = False
        self._ready_n[key] -= 1
        self._ready_work[key] -= self._work(job)
        return job

    # ======================================================================= dispatching ==

    async def _dispatch_loop(self) -> None:
        try:
            while not self._closing:
                self._wake.clear()
                now = self.clock.now()
                self._promote(now)
                batch = [] if (self._paused or self._fatal) else self._select(now)
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

    def _slots_free(self, ep: Endpoint, now: float) -> int:
        if self._ep_hold[ep.key] > now:
            return 0
        if ep.cap is None:
            return self.config.max_in_flight - self._uncapped_in_flight
        return ep.cap - len(self._in_flight[ep.key])

    def _reserve_for_capped(self, now: float, priority: int) -> int:
        """Window admissions to keep for capped jobs that can start before the window gives
        one back: each slot frees when its job ends and can then run one job after another
        (at the endpoint's measured latency) until then. A batch ends no earlier than its
        capped work allows, so those slots must not idle for want of an admission while
        short uncapped jobs, which fit in any window, take them all."""
        room_at = self.window.room_after_burst(now, self.window.window / 60)
        if room_at is None:  # none of ours in the window: room comes back as others' leave
            room_at = now + self.window.window
        need = 0
        for key, jobs in self._in_flight.items():
            ep = catalog.ENDPOINTS[key]
            if ep.cap is None or not jobs or self._ready_n[key] <= 0:
                continue  # no slot will free: free ones are filled first, in _select
            head = self._head(key)
            if head is None or head.spec.priority < priority:
                continue
            lat = max(self._expected_latency(key), 1e-3)
            frees = [max(now, j.sent_at + lat) for j in jobs]
            frees += [now] * max(0, ep.cap - len(jobs))
            starts = sum(math.ceil((room_at - f) / lat) for f in frees if f < room_at)
            need += min(starts, self._ready_n[key])
        return need

    def _expected_latency(self, key: str) -> float:
        """The endpoint's measured latency, or before any answer the catalog's typical one
        scaled by how the balance read (answered before the first job) compared with its
        own: a server that answers ten times faster than the catalog's guess answers
        everything so (the simulator's time scale, a nearby API)."""
        if self._latency_seen[key]:
            return self._latency[key]
        prior = catalog.ENDPOINTS[key].latency
        scale = 1.0
        if self._latency_seen["billing_credits"]:
            b = catalog.ENDPOINTS["billing_credits"].latency
            scale = self._latency["billing_credits"] / ((b[0] + b[1]) / 2)
        return (prior[0] + prior[1]) / 2 * min(1.0, max(scale, 0.01))

    def _note_latency(self, key: str, lat: float) -> None:
        # The catalog's typical latency is only a prior: the first answer replaces it.
        self._latency[key] = lat if not self._latency_seen[key] else (
            0.8 * self._latency[key] + 0.2 * lat)
        self._latency_seen[key] = True

    def _select(self, now: float) -> list[Job]:
        """Choose the jobs to send now, and take their window admissions and slots."""
        avail = self.window.available(now)
        if avail <= 0:
            return []
        if self._probe_job is not None:
            if now < self._probe_at + self._probe_grace:
                return []
            self._probe_job, self._probe_needed = None, False  # no quick 429: key is open
        batch: list[Job] = []
        reserve: int | None = None
        blocked_eps: set[str] = set()
        while avail > 0:
            best: Job | None = None
            best_key: tuple[int, float, int] | None = None
            for key, n in self._ready_n.items():
                if n <= 0 or key in blocked_eps:
                    continue
                ep = catalog.ENDPOINTS[key]
                if self._slots_free(ep, now) <= 0:
                    continue
                head = self._head(key)
                if head is None:
                    continue
                # Capped endpoints first (most queued work per slot first); among the
                # uncapped, the longest (measured) first, so the last window holds the
                # shortest jobs and the batch ends as soon after it as it can.
                urgency = (self._ready_work[key] / ep.cap if ep.cap
                           else -1.0 / (1.0 + self._expected_latency(key)))
                k = (head.spec.priority, urgency, -head.seq)
                if best_key is None or k > best_key:
                    best, best_key = head, k
            if best is None:
                break
            job = best
            if job.ep.cap is None and job.est.high >= 0:
                if reserve is None:
                    reserve = self._reserve_for_capped(now, job.spec.priority)
                if avail <= reserve:
                    blocked_eps.update(k for k, e in catalog.ENDPOINTS.items() if e.cap is None)
                    continue
            self._pop(job.ep.key)
            gate = self._credit_gate(job)
            if gate is not None:
                continue
            if job.spec.method == "GET" and self._serve_cached(job, now):
                continue
            job.reserved = job.est.high
            self.reserved += job.reserved
            batch.append(job)
            self._take_slot(job)
            self.window.reserve()  # stamped by the job's own task as it is written
            avail -= 1
            if self._probe_needed:
                self._probe_job, self._probe_at = job, now
                break
        return batch

    def _credit_gate(self, job: Job) -> str | None:
        """Park, block or pass a job on credits. Returns a reason when it may not go now."""
        high = job.est.high
        if high <= 0:
            return None
        if self._credit_hold is not None:
            self._park(job, f"waiting for credits ({self._credit_hold}); "
                            "polling the balance")
            return "parked"
        cap = self.budget.cap_refusal(self.reserved, high)
        if cap is not None:
            if self.reserved > 0 and self.budget.cap_refusal(0, high) is None:
                self._wait_settle(job, "waiting for running jobs to settle: " + cap)
                return "settle"
            self._block(job, cap)
            return "blocked"
        if self.budget.total is None:
            return None
        v = preflight(job.est, self.budget.total, self.reserved)
        if v.ok:
            return None
        if self.reserved > 0 and preflight(job.est, self.budget.total, 0).ok:
            self._wait_settle(job, "waiting for running jobs to settle: " + v.message)
            return "settle"
        if self.clock.now() - self._balance_at > self.config.balance_max_age:
            # Our balance is tracked from responses; purchases (auto-recharge, the
            # dashboard) only show in GET /billing/credits. Never refuse on a stale number.
            self._wait_settle(job, "checking the balance before refusing: " + v.message)
            if self._verifier is None or self._verifier.done():
                self._verifier = asyncio.create_task(self._verify_balance(),
                                                     name="balance-verify")
            return "settle"
        self._block(job, "pre-flight refused: " + v.message)
        return "blocked"

    def _park(self, job: Job, reason: str) -> None:
        job.state, job.reason = S.WAITING_CREDITS, reason
        self._parked.append(job)
        self._persist_state(job)

    def _wait_settle(self, job: Job, reason: str) -> None:
        job.state, job.reason = S.WAITING_CREDITS, reason
        self._settle_wait.append(job)
        self._persist_state(job)

    def _block(self, job: Job, reason: str) -> None:
        self._finish(job, S.BLOCKED, reason)
        now = self.clock.now()
        self._blocked_recent += 1
        if now - self._block_alert_at >= 10.0:  # one alert per burst, not one per job
            extra = self._blocked_recent - 1
            self._alert("warning", "preflight",
                        f"job {job.id} not sent: {reason}"
                        + (f" (and {extra} more refused since the last alert)" if extra else ""))
            self._block_alert_at, self._blocked_recent = now, 0

    def _serve_cached(self, job: Job, now: float) -> bool:
        hit = self._cache.get(_jsonable_key(job.spec.path, job.spec.body))
        if hit is None or hit[0] < now:
            return False
        job.actual = 0
        self._finish(job, S.SUCCEEDED, "served from cache (identical GET, no request sent)")
        return True

    async def _launch(self, batch: list[Job]) -> None:
        wall = self.clock.wall()
        for job in batch:
            job.attempts += 1
            job.state = S.IN_FLIGHT
            job.reason = ""
        if self.store is not None:
            try:
                await self.store.mark_dispatch([(j.id, j.attempts, wall) for j in batch])
            except Exception as e:  # cannot persist: do not send what we cannot account for
                for job in batch:
                    self.window.release()
                    self._free_slot(job)
                    self._settle(job)
                    job.attempts -= 1
                    self._enqueue(job, self.clock.now() + 1.0, S.BACKOFF)
                    job.reason = f"not sent: {e}"
                self._alert("error", "store", f"cannot persist jobs before sending: {e}")
                await asyncio.sleep(0)
                return
        now = self.clock.now()
        if self.first_send is None:
            self.first_send = now
        for job in batch:
            job.sent_at = now
            n = len(self._in_flight[job.ep.key])
            if n > self._max_in_flight[job.ep.key]:
                self._max_in_flight[job.ep.key] = n
            self.requests_total += 1
            self.sent_by_ep[job.ep.key] += 1
            if job.attempts > 1:
                self.retries += 1
            self._touch(job)
            task = asyncio.create_task(self._attempt(job))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _next_wakeup(self, now: float) -> float | None:
        """The next time something may become sendable without an event waking us."""
        times: list[float] = []
        if self._probe_job is not None:
            times.append(self._probe_at + self._probe_grace)
        if self._delayed:
            times.append(self._delayed[0][0])
        if not self._paused and any(n > 0 for n in self._ready_n.values()):
            if self.window.available(now) <= 0:
                times.append(self.window.next_free(now))
            else:
                # Room, but held back for capped jobs: look again when the window slides.
                oldest = self.window.oldest_expiry(now)
                if oldest is not None:
                    times.append(oldest)
            times.extend(h for h in self._ep_hold.values() if h > now)
        future = [t for t in times if t > now]
        if future:
            return min(future)
        return now + 0.001 if times else None

    # ========================================================================= outcomes ===

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
                self.window.record_send(t, reserved=True)

        if getattr(self.transport, "reports_writes", False):
            return stamp, {"on_written": written}
        written()
        return stamp, {}

    def _take_slot(self, job: Job) -> None:
        self._in_flight[job.ep.key].add(job)
        if job.ep.cap is None:
            self._uncapped_in_flight += 1

    def _free_slot(self, job: Job) -> None:
        slots = self._in_flight[job.ep.key]
        if job in slots:
            slots.discard(job)
            if job.ep.cap is None:
                self._uncapped_in_flight -= 1

    async def _attempt(self, job: Job) -> None:
        sent_at = job.sent_at = self.clock.now()
        stamp, kw = self._stamper(job)
        try:
            out = await self.transport.request(job.spec.method, job.spec.path, job.spec.body,
                                               timeout=self.config.request_timeout, **kw)
        except asyncio.CancelledError:
            self._free_slot(job)
            if stamp.at is None:  # it may have been written as we were cancelled
                self.window.record_send(self.clock.now(), reserved=True)
            raise
        except Exception as e:  # the transport should not raise; never lose the job if it does
            log.exception("transport raised")
            out = Outcome(None, self.clock.now() - sent_at,
                          error=api.ApiError(api.CONNECTION, None, None, f"client error: {e}"))
        now = self.clock.now()
        self._free_slot(job)
        if stamp.at is not None:
            sent_at = stamp.at
        else:  # never written (refused, timed out waiting for a connection): not counted
            self.window.release()
        self.window.observe(sent_at, now, out.headers, self.clock.wall())
        self._count_status(out)
        self.last_done = now
        self._ledger(job.id, job.ep, job.spec.path, job.attempts, sent_at, out, job.est.high)
        self._settle(job)
        err = out.error
        if err is not None and err.kind in (api.TIMEOUT, api.CONNECTION, api.BAD_RESPONSE):
            self.credits_unknown_attempts += 1
            self.credits_unknown_max += job.est.high
        if job is self._probe_job:
            self._probe_job = None
            if err is None or err.kind != api.RATE_LIMITED:
                self._probe_needed = False
        if err is None:
            self._on_success(job, out, now)
        elif err.kind == api.RATE_LIMITED:
            self._on_429(job, out, now)
        elif err.kind == api.CONCURRENCY:
            # The server's slots can be taken by requests we gave up on (timeouts) that
            # still run there for an unknown time: back off per consecutive refusal rather
            # than collect a 429 every Retry-After second.
            hold = out.headers.retry_after if out.headers.retry_after is not None else 1.0
            self._ep_busy[job.ep.key] += 1
            streak = min(self._ep_busy[job.ep.key] - 1, 4)
            hold = max(hold, self.config.backoff_base * 2 ** streak)
            self._ep_hold[job.ep.key] = max(self._ep_hold[job.ep.key], now + min(hold, 60.0))
            self._enqueue(job, self._ep_hold[job.ep.key], S.WAITING_SLOT)
            job.reason = "endpoint busy (429 concurrency limit): " + err.describe()
            self._persist_state(job)
        elif err.kind in (api.CREDITS, api.BUDGET):
            self._on_402(job, err, now)
        elif err.kind in api.RETRYABLE:
            self._on_retryable(job, err, now)
        elif err.kind == api.AUTH:
            self._finish(job, S.FAILED, "the API key was rejected: " + err.describe()
                         + "; check MAVERA_API_KEY")
            self._fatal = "the API key was rejected (HTTP 401): check MAVERA_API_KEY"
            self._alert("error", "unauthorized", self._fatal)
        elif err.kind == api.BAD_RESPONSE:
            self._finish(job, S.FAILED, err.describe())
            self._alert("warning", "bad_response",
                        f"job {job.id}: unreadable response; its charge is unknown")
        else:
            self._finish(job, S.FAILED, err.describe())
        self._wake.set()

    def _on_success(self, job: Job, out: Outcome, now: float) -> None:
        self._ep_busy[job.ep.key] = 0
        credits = out.credits_used if out.credits_used is not None else 0
        job.actual = credits
        self.credits_used_total += credits
        self.credits_by_ep[job.ep.key] += credits
        self.estimated_by_ep[job.ep.key] += job.est.high
        self.calibration.add(job.ep.key, job.est.high, credits)
        lat = out.latency
        self._note_latency(job.ep.key, lat)
        for a in self.budget.charge(credits, now):
            self._alert(a.level, a.kind, a.message)
        if job.spec.method == "GET" and self.config.cache_ttl > 0:
            self._cache[_jsonable_key(job.spec.path, job.spec.body)] = (
                now + self.config.cache_ttl, out.body)
        self._finish(job, S.SUCCEEDED, "")
        if self._settle_wait:
            self._release(self._settle_wait)

    def _key_hold(self, out: Outcome, now: float) -> float:
        ra = out.headers.retry_after
        if ra is None or ra <= 0 or ra > self.config.max_retry_after:
            # No usable Retry-After (absent, garbage, zero/negative, or over the maximum,
            # which _on_429 reports): wait until our mirror and the 429's own Reset say the
            # window has room, and at least a growing backoff so a confused server is not
            # hammered, but never longer than the maximum (a bogus 10^9 s would hang us).
            streak = len(self._recent_429)
            ra = max(self.window.next_free(now) - now,
                     min(self.config.backoff_cap, self.config.backoff_base * 2 ** min(streak, 8)))
            if out.headers.reset_at is not None:  # whole seconds; clocks differ a little
                ra = max(ra, out.headers.reset_at - self.clock.wall() + self.window.margin)
            ra = min(ra, self.config.max_retry_after)
            self._probe_needed = True
        until = now + ra
        self.window.hold(until)
        return ra

    def _on_429(self, job: Job, out: Outcome, now: float) -> None:
        self.responses_429 += 1
        self._recent_429.append(now)
        while self._recent_429 and self._recent_429[0] < now - 60:
            self._recent_429.popleft()
        already_held = self.window.hold_remaining(now) > 0
        ra = out.headers.retry_after
        if not already_held and (ra is None or ra <= max(1.0, self.window.window / 10)):
            # We sent it because the mirror had room: a short refusal means the server
            # counts our sends later than we stamp them (a long one is something else).
            self.window.unexpected_429(job.sent_at)
        wait = self._key_hold(out, now)
        if not already_held:  # one event per hold, not one per job that runs into it
            asked = out.headers.retry_after
            self._alert("warning", "rate_limited",
                        f"429 rate limit on {job.ep.path}: the whole key is held "
                        f"{wait:.0f} s" + (" (Retry-After)" if asked is not None else
                                            " (no usable Retry-After: backing off)"))
        asked = out.headers.retry_after
        if asked is not None and asked > self.config.max_retry_after:
            wait = asked
            self._finish(job, S.FAILED,
                         f"the server asked to retry after {wait:.0f} s, over the maximum of "
                         f"{self.config.max_retry_after:.0f} s (--max-retry-after); "
                         "not waited out")
            self._alert("error", "retry_after_too_long",
                        f"429 with Retry-After {wait:.0f} s "
                        f"(max {self.config.max_retry_after:.0f} s): job {job.id} failed; the "
                        "key is held by the window and Reset only; raise --max-retry-after "
                        "to wait it out")
            return
        self._enqueue(job, now + wait, S.WAITING_WINDOW)
        job.reason = f"rate limited (429); retry in {wait:.1f} s"
        self._persist_state(job)
        if (len(self._recent_429) >= self.config.storm_threshold
                and now - self._storm_alerted_at > 60):
            self._storm_alerted_at = now
            self._alert("warning", "429_storm",
                        f"{len(self._recent_429)} rate-limit 429s in the last minute")

    def _on_402(self, job: Job, err: api.ApiError, now: float) -> None:
        self.count_402 += 1
        first = self._credit_hold is None
        self._credit_hold = err.code or err.kind
        if err.kind == api.CREDITS:
            self.budget.exhausted()
        self._park(job, "waiting for credits: " + err.describe())
        if first:
            self._alert("error", err.kind,
                        f"402 {err.code or err.kind}: jobs that cost credits are parked; "
                        f"polling the balance every {self.config.credit_poll:g} s. "
                        f"Server said: {err.message}")
            if self._poller is None or self._poller.done():
                self._poller = asyncio.create_task(self._credit_poll_loop(),
                                                   name="credit-poll")

    def _on_retryable(self, job: Job, err: api.ApiError, now: float) -> None:
        job.failures += 1
        if job.failures >= self.config.max_attempts:
            self._finish(job, S.FAILED,
                         f"gave up after {job.failures} failed attempts: {err.describe()}")
            return
        base = min(self.config.backoff_cap,
                   self.config.backoff_base * 2 ** (job.failures - 1))
        delay = base * (0.5 + 0.5 * self._rng.random())   # "equal jitter"
        self._enqueue(job, now + delay, S.BACKOFF)
        job.reason = f"retry {job.failures}/{self.config.max_attempts - 1} in {delay:.1f} s: " \
                     + err.describe()
        self._persist_state(job)

    async def _credit_poll_loop(self) -> None:
        """While jobs wait for credits: poll the balance; resume when it covers them."""
        while self._credit_hold is not None and not self._closing:
            await self.clock.sleep(self.config.credit_poll)
            if self._closing:
                return
            ok = await self.refresh_balance()
            parked = [j for j in self._parked if j.state == S.WAITING_CREDITS]
            if not parked:
                self._credit_hold = None
                return
            cheapest = min(parked, key=lambda j: j.est.high)
            if self._credit_hold == catalog.CODE_BUDGET_EXCEEDED:
                # The balance does not show a workspace budget: probe with one job.
                self._credit_hold = None
                self._parked.remove(cheapest)
                self._enqueue(cheapest)
                self._alert("info", "probe", f"probing the workspace budget with {cheapest.id}")
                self._wake.set()
                return
            if ok and self.budget.total is not None and \
                    preflight(cheapest.est, self.budget.total, self.reserved).ok:
                self._credit_hold = None
                n = len(parked)
                self._release(self._parked)
                self._alert("info", "credits_resumed",
                            f"credits available ({self.budget.total}): resumed {n} parked jobs")
                return

    def _release(self, jobs: list[Job]) -> None:
        items = list(jobs)
        jobs.clear()
        for j in items:
            if j.state == S.WAITING_CREDITS:
                self._enqueue(j)
        self._wake.set()

    async def _refresh_loop(self) -> None:
        while not self._closing:
            await self.clock.sleep(self.config.balance_refresh)
            if not self._paused:
                await self.refresh_balance()

    # ======================================================================= bookkeeping ==

    def _settle(self, job: Job) -> None:
        if job.reserved:
            self.reserved -= job.reserved
            job.reserved = 0

    def _finish(self, job: Job, state: str, reason: str) -> None:
        if job.state not in S.FINAL_STATES:
            self._unfinished -= 1
        job.state, job.reason = state, reason
        if not self.config.keep_finished:
            self.jobs.pop(job.id, None)
        job.in_heap = False
        self._count_final(job)
        self._persist_state(job)
        self._touch(job)
        self._check_done()

    def _count_final(self, job: Job) -> None:
        self.finished[job.state] = self.finished.get(job.state, 0) + 1

    def _persist_state(self, job: Job) -> None:
        job.updated = self.clock.wall()
        if self.store is not None:
            self.store.update_job(job.id, job.state, reason=job.reason, actual=job.actual,
                                  attempts=job.attempts, wall=job.updated)

    def _touch(self, job: Job) -> None:
        r = self._recent
        r[job.id] = job
        r.move_to_end(job.id)
        if len(r) > self.config.recent_jobs:
            r.popitem(last=False)

    def _count_status(self, out: Outcome) -> None:
        key = str(out.status) if out.status is not None else (
            out.error.kind if out.error else "none")
        self.status_counts[key] = self.status_counts.get(key, 0) + 1

    def _ledger(self, job_id: str | None, ep: Endpoint, path: str, attempt: int,
                sent_at: float, out: Outcome, estimate: int) -> None:
        if self.store is None:
            return
        wall_now = self.clock.wall()
        err = out.error
        self.store.record_attempt({
            "t": wall_now - (self.clock.now() - sent_at), "t_done": wall_now,
            "job_id": job_id, "endpoint": ep.key, "method": ep.method, "path": path,
            "attempt": attempt, "status": out.status, "kind": err.kind if err else "ok",
            "code": err.code if err else None, "credits_used": out.credits_used,
            "tokens": out.tokens, "estimate": estimate, "latency": out.latency,
            "rl_limit": out.headers.limit, "rl_remaining": out.headers.remaining,
            "rl_reset": out.headers.reset_at, "retry_after": out.headers.retry_after,
            "message": err.message[:500] if err else "",
        })

    def _alert(self, level: str, kind: str, message: str) -> None:
        wall = self.clock.wall()
        self._alerts.appendleft(S.AlertView(wall, level, kind, message))
        if self.store is not None:
            self.store.add_alert(wall, level, kind, message)
        log.info("alert %s %s: %s", level, kind, message)

    # ======================================================================= observing ====

    def unfinished(self) -> int:
        return self._unfinished

    def _check_done(self) -> None:
        if self._unfinished == 0:
            self._done.set()
        else:
            self._done.clear()

    async def wait_idle(self, credit_wait: float | None = None) -> None:
        """Until every job is final, or all that remain wait for credits that do not come
        within ``credit_wait`` seconds, or a fatal error (401) stops the run."""
        parked_since: float | None = None
        while True:
            self._check_done()
            if self._done.is_set() or self._fatal:
                return
            live = [j for j in self.jobs.values() if j.state not in S.FINAL_STATES]
            now = self.clock.now()
            if live and all(j.state == S.WAITING_CREDITS for j in live):
                parked_since = parked_since if parked_since is not None else now
                if credit_wait is not None and now - parked_since >= credit_wait:
                    return
            else:
                parked_since = None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._done.wait(), 0.25)

    def snapshot(self) -> S.Snapshot:
        now = self.clock.now()
        wall = self.clock.wall()
        queue = dict.fromkeys(S.WAITING_STATES, 0)
        window_room = self.window.available(now) > 0
        endpoints = []
        for key, ep in catalog.ENDPOINTS.items():
            n = self._ready_n[key]
            if n:
                if self._paused:
                    queue[S.PAUSED] += n
                elif self._slots_free(ep, now) <= 0:
                    queue[S.WAITING_SLOT] += n
                elif not window_room:
                    queue[S.WAITING_WINDOW] += n
                else:
                    queue[S.QUEUED] += n
        waiting_by_ep = dict(self._ready_n)
        for _, _, j in self._delayed:
            if j.state in S.WAITING_STATES:
                queue[j.state] += 1
                waiting_by_ep[j.ep.key] += 1
        for j in itertools.chain(self._parked, self._settle_wait):
            if j.state == S.WAITING_CREDITS:
                queue[S.WAITING_CREDITS] += 1
                waiting_by_ep[j.ep.key] += 1
        in_flight = sum(len(s) for s in self._in_flight.values())
        queue[S.IN_FLIGHT] = in_flight
        for key, ep in catalog.ENDPOINTS.items():
            if key == "billing_credits":
                continue
            endpoints.append(S.EndpointState(
                key, ep.path, ep.cap, len(self._in_flight[key]), waiting_by_ep[key],
                max(0.0, self._ep_hold[key] - now), self.sent_by_ep[key],
                self.credits_by_ep[key], self.estimated_by_ep[key],
                self._max_in_flight[key]))
        jobs = tuple(self._view(j) for j in reversed(self._recent.values()))
        b = self.budget
        return S.Snapshot(
            t=wall, elapsed=now - (self.started_at or now), mode=self.mode,
            target=self.target, simulated=self.simulated, paused=self._paused,
            limit=self.window.limit, window_seconds=self.window.window,
            window_used=self.window.used(now), foreign=self.window.foreign(now),
            remaining=self.window.last_remaining,
            reset_in=max(0.0, self.window.next_free(now) - now),
            key_hold_s=self.window.hold_remaining(now),
            requests_total=self.requests_total, responses_429_total=self.responses_429,
            retries_total=self.retries, status_counts=dict(self.status_counts),
            endpoints=tuple(endpoints), queue=queue, jobs_total=self.jobs_seen,
            finished=dict(self.finished), balance=b.total, plan_remaining=b.plan_remaining,
            purchased=b.purchased, allocation=b.allocation, month_used=b.period_used,
            credits_used_total=self.credits_used_total, reserved=self.reserved,
            estimated_total=sum(self.estimated_by_ep.values()),
            burn_1m=b.burn(now, 1), burn_5m=b.burn(now, 5), burn_15m=b.burn(now, 15),
            eta_s=b.eta_seconds(now), month_projection=b.month_projection(now, wall),
            recharge_spent_eur=b.recharge_spent_eur, jobs=jobs, alerts=tuple(self._alerts))

    def _view(self, j: Job) -> S.JobView:
        return S.JobView(j.id, j.ep.key, j.spec.method, j.spec.path, j.state, j.spec.priority,
                         j.est.high, j.actual, j.attempts, j.created, j.updated, j.reason)

    def summary(self, ids: list[str] | None = None) -> dict[str, Any]:
        """The run summary (``--summary``): counts, credits, statuses, makespan."""
        sel = [self.jobs[i] for i in ids if i in self.jobs] if ids is not None \
            else list(self.jobs.values())
        by_state: dict[str, int] = {}
        for j in sel:
            by_state[j.state] = by_state.get(j.state, 0) + 1
        makespan = 0.0
        if self.first_send is not None and self.last_done is not None:
            makespan = max(0.0, self.last_done - self.first_send)
        return {
            "jobs": len(sel),
            "succeeded": by_state.get(S.SUCCEEDED, 0),
            "failed": by_state.get(S.FAILED, 0),
            "blocked_preflight": by_state.get(S.BLOCKED, 0),
            "waiting_for_credits": by_state.get(S.WAITING_CREDITS, 0),
            "outcome_unknown": by_state.get(S.OUTCOME_UNKNOWN, 0),
            "cancelled": by_state.get(S.CANCELLED, 0),
            "not_finished": sum(v for k, v in by_state.items()
                                if k not in S.FINAL_STATES and k != S.WAITING_CREDITS),
            "credits_used": self.credits_used_total,
            "credits_reconciled": self.credits_reconciled,
            "credits_reconcile_note": self.reconcile_note,
            "credits_unknown_attempts": self.credits_unknown_attempts,
            "credits_unknown_max": self.credits_unknown_max,
            "credits_estimated": sum(j.est.high for j in sel
                                     if j.state == S.SUCCEEDED),
            "credits_estimated_all": sum(j.est.high for j in sel),
            "status_counts": dict(sorted(self.status_counts.items())),
            "requests": self.requests_total,
            "responses_429": self.responses_429,
            "count_402": self.count_402,
            "retries": self.retries,
            "makespan_s": round(makespan, 3),
            "max_in_flight": {k: v for k, v in self._max_in_flight.items() if v},
            "estimated_vs_actual": {k: {"jobs": n, "estimated": e, "actual": a}
                                    for k, n, e, a in self.calibration.rows()},
            "balance_end": self.budget.total,
            "limit": self.window.limit,
            # How late the server counts our sends, as measured, and what the window held.
            "window_margin_s": round(self.window.margin, 4),
            "server_count_delay_s": round(self.window.delay_seen, 4),
            "foreign_max_seen": self.window.foreign_max_seen,
            "server_counts_at_answer": self.window.reads_at_answer,
        }
