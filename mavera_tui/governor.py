"""The Python API: the scheduler in-process, for code that already calls the Mavera API.

``async with Governor.from_env() as g: resp = await g.request("POST", "/responses",
json={...})`` sends one request as a job of the engine (the same gates, store and
settings as ``mavera-tui run``): it waits for the key's window and its endpoint's slot
instead of meeting a 429, is priced and pre-flighted (a request the balance cannot cover is
answered 402 at once, never sent), and comes back as the API answered it
(:class:`GovernedResponse`: status, every header, the body bytes). It is repeated only where
that is safe (a 429; a connection refused before the request was written; a GET): a 5xx,
a timeout or a dropped connection of a POST is the caller's answer. ``g.submit(spec)`` and
``g.result(id)`` / ``g.collect()`` / ``g.as_completed()`` fire and collect jobs with the
engine's own retries.

The proxy (:mod:`mavera_tui.proxy`) is this class behind an HTTP server: one Governor per
API key. This module queues and waits; what each answer says (the API's, or the governor's
own refusals) is :mod:`mavera_tui.governed`.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import math
import re
import secrets
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

from . import catalog
from . import governed as A
from .api_types import StreamSink
from .clock import Clock
from .config import Config, load_config
from .engine import Engine, Settings
from .estimate import Estimate, EstimateError, preflight
from .gates.model import Job

# The answers live in mavera_tui.governed; these names stay importable from here.
from .governed import GOVERNOR as GOVERNOR
from .governed import ORIGIN_HEADER as ORIGIN_HEADER
from .governed import UPSTREAM as UPSTREAM
from .governed import GovernedResponse, JobResult, error_body
from .governed import own_answer as own_answer
from .jobs import PRIORITY_RANGE, JobSpec
from .scheduler import Scheduler
from .states import JobState
from .store import Store

__all__ = [
    "GovernedResponse",
    "Governor",
    "JobResult",
    "JobSpec",
    "StreamSink",
    "error_body",
    "key_id",
]


_CALLER_RE = re.compile(r"[^A-Za-z0-9._-]+")
#: Callers counted by name; the rest are counted together as "(other)".
MAX_CALLERS = 500


def key_id(key: str) -> str:
    """How a key is named in logs, job ids and metrics: a short hash, never the key."""
    return hashlib.sha256(key.encode()).hexdigest()[:10]


@dataclass
class CallerStats:
    """Per caller (the X-Mavera-Caller header, or "-"): what it asked and got."""

    requests: int = 0
    waiting: int = 0
    refused: int = 0
    credits: int = 0


@dataclass
class GovernorStats:
    """What the governor's door saw: refusals by reason, waits by priority, callers."""

    refusals: dict[str, int] = field(default_factory=dict)
    #: priority -> [requests sent, seconds they waited in all] (a Prometheus summary)
    waits: dict[int, list[float]] = field(default_factory=dict)
    callers: dict[str, CallerStats] = field(default_factory=dict)

    def waited(self, priority: int, seconds: float) -> None:
        w = self.waits.get(priority)
        if w is None:
            w = self.waits[priority] = [0, 0.0]
        w[0] += 1
        w[1] += seconds

    def refuse(self, reason: str, caller: str) -> None:
        self.refusals[reason] = self.refusals.get(reason, 0) + 1
        self.caller(caller).refused += 1

    def caller(self, name: str) -> CallerStats:
        c = self.callers.get(name)
        if c is None:
            if len(self.callers) >= MAX_CALLERS:  # made-up names must not grow it forever
                name = "(other)"
                c = self.callers.get(name)
            if c is None:
                c = self.callers[name] = CallerStats()
        return c


class Governor:
    """The engine for code in this process: ``request`` (one governed HTTP request),
    ``submit`` + ``result`` / ``collect`` / ``as_completed`` (fire and collect).

    Build it with :meth:`from_env` (the settings as every command reads them: defaults,
    config file, environment; the key from ``MAVERA_API_KEY``), or directly with a
    :class:`~mavera_tui.config.Config`. Use it as an async context manager."""

    def __init__(
        self,
        config: Config | None = None,
        *,
        db: str | None = None,
        api_key: str | None = None,
        store: Store | None = None,
        clock: Clock | None = None,
        sim: Any = None,
        resume: bool = True,
        role: str = "governor",
    ) -> None:
        self.config = config or Config()
        self.engine = Engine(
            Settings(config=self.config, db=db, keep_finished=False, mode="live", role=role),
            clock=clock,
            sim=sim,
            api_key=api_key,
            store=store,
            resume=resume,
        )
        self.key_id = key_id(api_key) if api_key else "env"
        self.stats = GovernorStats()
        self._run = secrets.token_hex(3)
        self._seq = itertools.count(1)
        self._submitted: dict[str, asyncio.Future[Job]] = {}
        self._started = False

    @classmethod
    def from_env(cls, *, config_path: str | None = None, db: str | None = None) -> Governor:
        """A governor with the settings every command reads (defaults < config file <
        ``MAVERA_TUI_*`` environment) and the key from ``MAVERA_API_KEY``; with no key and
        no base URL, the embedded simulator (``notice`` says so)."""
        return cls(load_config(config_path).config, db=db)

    # ------------------------------------------------------------------ lifecycle ----

    async def start(self) -> Governor:
        """Build the client, open the store, learn the limit and balance, start."""
        if not self._started:
            await self.engine.start()
            self._started = True
        return self

    async def close(self) -> None:
        """Stop: requests in flight are waited for; jobs still queued end (their callers
        get a CancelledError)."""
        if self._started:
            self._started = False
            await self.engine.stop()

    async def __aenter__(self) -> Governor:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def scheduler(self) -> Scheduler:
        """The running scheduler (after ``start``)."""
        if self.engine.scheduler is None:
            raise RuntimeError("the Governor is not started: use 'async with' or start()")
        return self.engine.scheduler

    @property
    def notice(self) -> str:
        """Where requests go (the embedded simulator is said out loud)."""
        return self.engine.notice

    # ------------------------------------------------------------------- the queue ----

    def queue_depth(self) -> int:
        """Jobs waiting to be sent (ready, delayed, or waiting for credits)."""
        s = self.scheduler
        q = s.queue
        return (
            sum(q.count.values())
            + len(q.delayed)
            + len(s.credits.parked)
            + len(s.credits.settle_wait)
        )

    def send_eta(self, ahead: int) -> float:
        """Seconds until ``ahead`` more jobs could have been sent at the key's limit: the
        key's hold or full window first, then the window's pace."""
        s = self.scheduler
        now = s.clock.now()
        win = s.window
        first = max(0.0, win.next_free(now) - now, win.hold_remaining(now))
        return first + max(0, ahead) * win.window / max(1, win.limit)

    # ---------------------------------------------------------------- request() ----

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        priority: int = 0,
        caller: str | None = None,
        sink: StreamSink | None = None,
        max_wait: float | None = None,
        max_queue: int | None = None,
    ) -> GovernedResponse:
        """Send one request as a job and return the API's answer as it came (or the
        governor's own: 402 pre-flight, 429 overflow with Retry-After, 400/404 for a
        request it cannot price). ``sink``: a 2xx event stream is passed there as it
        arrives. ``max_wait`` / ``max_queue`` default to the ``[proxy]`` settings.
        Cancelling the call abandons the job (a queued one is never sent; a stream is
        closed)."""
        sched = self.scheduler
        pcfg = self.config.proxy
        who = _caller_name(caller)
        cstats = self.stats.caller(who)
        cstats.requests += 1
        method = method.upper()
        rel = _relative(path)
        ep = catalog.find_endpoint(method, rel)
        if ep is None:
            self.stats.refuse("unknown_endpoint", who)
            return A.unknown_endpoint(method, rel)
        body = {} if json is None else json
        if not isinstance(body, dict):
            self.stats.refuse("bad_request", who)
            return A.bad_body()
        if not isinstance(priority, int) or not (
            PRIORITY_RANGE[0] <= priority <= PRIORITY_RANGE[1]
        ):
            priority = max(PRIORITY_RANGE[0], min(PRIORITY_RANGE[1], int(priority)))
        spec = JobSpec(f"{self._run}-{next(self._seq)}-{who}", method, rel, body, priority)
        try:
            est = spec.estimate()
        except EstimateError as e:
            self.stats.refuse("bad_request", who)
            return A.unpriceable(e)
        refusal = await self._preflight(est)
        if refusal is not None:
            self.stats.refuse("preflight", who)
            return refusal
        limit_q = pcfg.max_queue if max_queue is None else max_queue
        depth = self.queue_depth()
        if depth >= limit_q:
            self.stats.refuse("queue_full", who)
            return A.queue_full(depth, limit_q, self.send_eta(depth - limit_q + 1))
        holder: list[Job] = []

        def prepare(job: Job) -> None:
            job.passthrough = True
            job.keep_raw = True
            job.park_402 = pcfg.park_402
            job.sink = sink
            holder.append(job)

        t0 = sched.clock.now()
        fut = await sched.submit_watched(spec, prepare=prepare)
        job = holder[0]
        cstats.waiting += 1
        try:
            wait_max = pcfg.max_wait if max_wait is None else max_wait
            return await self._await(job, fut, t0, wait_max, who)
        except asyncio.CancelledError:
            sched.abandon(job.id)
            raise
        finally:
            cstats.waiting -= 1
            if job.actual:
                cstats.credits += job.actual

    async def _await(
        self, job: Job, fut: asyncio.Future[Job], t0: float, max_wait: float, who: str
    ) -> GovernedResponse:
        sched = self.scheduler
        try:
            async with asyncio.timeout(max_wait):
                await asyncio.shield(fut)
        except TimeoutError:
            pass
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not fut.cancelled() or (task is not None and task.cancelling()):
                raise  # our caller is cancelled (its app went away)
        if fut.cancelled():  # the engine is stopping: nobody will send it
            return A.stopping(job, sent=False)
        if not fut.done() and job.state != JobState.IN_FLIGHT:
            # Waited too long and still not sent: give it up, and say when to come back.
            ahead = self.queue_depth()
            parked_402 = A.answer_of(job)
            sched.abandon(job.id)
            self.stats.refuse("max_wait", who)
            self.stats.waited(job.spec.priority, sched.clock.now() - t0)
            if parked_402 is not None and parked_402.status == 402:
                return parked_402  # parked on the API's 402: its answer is the truth
            return A.not_sent_in_time(job, max_wait, max(1, math.ceil(self.send_eta(ahead))))
        if job.sent_at:
            self.stats.waited(job.spec.priority, max(0.0, job.sent_at - t0))
        try:
            done = await asyncio.shield(fut)  # in flight: a sent request is always waited for
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not fut.cancelled() or (task is not None and task.cancelling()):
                raise
            return A.stopping(job, sent=True)
        return A.final_answer(done)

    async def _preflight(self, est: Estimate) -> GovernedResponse | None:
        """The 402 at once for a request the balance (or a budget cap) can never cover,
        even with nothing else running; None if it may go. A balance older than the gate's
        max age is read again before refusing."""
        if est.high <= 0:
            return None
        sched = self.scheduler
        budget = sched.budget
        cap = budget.cap_refusal(0, est.high)
        if cap is not None:
            return A.over_cap(cap)
        if budget.total is None:
            return None
        verdict = preflight(est, budget.total, 0)
        if verdict.ok:
            return None
        if sched.clock.now() - sched.credits.balance_at > sched.credits.balance_max_age:
            await sched.refresh_balance()
            if budget.total is None:
                return None
            verdict = preflight(est, budget.total, 0)
            if verdict.ok:
                return None
        return A.over_balance(est, verdict)

    # ------------------------------------------------------------ fire and collect ----

    async def submit(self, spec: JobSpec, *, keep_response: bool = True) -> str:
        """Enqueue a job (the engine's own retries and 402 parking apply); returns its id.
        ValueError for a duplicate id or a body that cannot be priced."""

        def prepare(job: Job) -> None:
            job.keep_raw = keep_response

        fut = await self.scheduler.submit_watched(spec, prepare=prepare)
        self._submitted[spec.id] = fut
        return spec.id

    async def submit_many(self, specs: Iterable[JobSpec]) -> list[str]:
        """``submit`` each; returns their ids."""
        return [await self.submit(s) for s in specs]

    async def result(self, job_id: str) -> JobResult:
        """Wait for a submitted job to be final. KeyError for an id not submitted here
        (or already collected)."""
        fut = self._submitted[job_id]
        job = await asyncio.shield(fut)
        self._submitted.pop(job_id, None)
        return A.result_of(job)

    async def collect(self, ids: Iterable[str] | None = None) -> list[JobResult]:
        """Wait for the given submitted jobs (default: every one not yet collected);
        results in the order asked."""
        wanted = list(self._submitted) if ids is None else list(ids)
        return [await self.result(i) for i in wanted]

    async def as_completed(self) -> AsyncIterator[JobResult]:
        """Every submitted job not yet collected, as each becomes final."""
        pending = {fut: jid for jid, fut in self._submitted.items()}
        while pending:
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for fut in done:
                jid = pending.pop(fut)
                self._submitted.pop(jid, None)
                yield A.result_of(fut.result())


def _caller_name(caller: str | None) -> str:
    """A caller's name as it may appear in a job id and a metric label."""
    if not caller:
        return "-"
    name = _CALLER_RE.sub("_", caller.strip())[:40].strip("_")
    return name or "-"


def _relative(path: str) -> str:
    """``/api/v1/responses``, ``/api/responses`` or ``/responses`` -> ``/responses``."""
    p = "/" + path.split("?", 1)[0].lstrip("/")
    for prefix in ("/api/v1", "/api", "/v1"):
        if p == prefix or p.startswith(prefix + "/"):
            return p[len(prefix) :] or "/"
    return p
