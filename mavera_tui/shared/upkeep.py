"""The fleet hook's upkeep (a mixin of :class:`.fleet.Fleet`): releasing leases after their
answers (batched, idempotent), the fleet's balance and alerts, the heartbeat that renews
leases and the registry, and the pub/sub listener that wakes the loop when a release frees
what it waits for."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from typing import TYPE_CHECKING, Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .. import client as api
from .. import snapshot as S
from ..client import Outcome
from ..config import SharedSettings
from ..gates.model import Job
from .state import Release, SharedState, SharedUnavailable

if TYPE_CHECKING:
    from ..gates.loop import Scheduler
    from .fleet import SharedSlotGate

log = logging.getLogger("mavera_tui.shared")


class Upkeep:
    """Release, heartbeat and wake-ups for one process in the fleet."""

    state: SharedState
    settings: SharedSettings
    sched: Scheduler | None
    proc: str
    host: str
    pid: int
    role: str
    live: int
    down: str | None
    leases: dict[str, tuple[str, float]]
    own_at: dict[str, float]
    job_lease: dict[str, str]
    pending: list[Release]
    moves: dict[str, float]
    moved: set[str]
    _alerts: list[dict[str, Any]]
    _flush: asyncio.Event
    _tasks: list[asyncio.Task[None]]
    run: str
    _ledger_n: itertools.count[int]

    if TYPE_CHECKING:  # the Fleet's, used here

        @property
        def slot_gate(self) -> SharedSlotGate: ...

        def _window(self) -> float: ...

        def _went_down(self, why: str) -> None: ...

        def _came_back(self) -> None: ...

        def _best_waiting(self) -> int | None: ...

        def _capped_need(self) -> int: ...

        def fleet_parked(self) -> bool: ...

    def written(self, job: Job) -> None:
        """A job's request was just written: its admission in the fleet's window moves to
        now (sent with the next flush, before its answer: see ``scripts.WRITTEN``)."""
        lease = self.job_lease.get(job.id)
        held = self.leases.get(lease) if lease is not None else None
        if lease is None or held is None:
            return
        delay = time.monotonic() - held[1]
        if delay > 0.001:
            self.moves[lease] = delay
            self.moved.add(lease)
            self._flush.set()

    def done(self, job: Job, out: Outcome | None, *, unsent: bool = False) -> None:
        """A job's attempt is over (answered, cancelled or never sent): release its lease
        (idempotent: a second call finds none)."""
        lease = self.job_lease.pop(job.id, None)
        if lease is not None:
            self._release(lease, out, unsent=unsent, job=job)

    def done_own(self, lease: str | None, out: Outcome | None) -> None:
        """One of the engine's own requests is over."""
        if lease is not None:
            self.own_at.pop(lease, None)
            self._release(lease, out, unsent=out is None)

    def _release(
        self, lease: str, out: Outcome | None, *, unsent: bool, job: Job | None = None
    ) -> None:
        held = self.leases.pop(lease, None)
        rel = Release(lease, unsent=unsent)
        if out is None:
            self.moves.pop(lease, None)
            self.moved.discard(lease)
        s = self.sched
        if out is not None and s is not None:
            h = out.headers
            rel.remaining = h.remaining if h.remaining is not None else -1
            rel.limit = h.limit if h.limit is not None else -1
            rel.fresh = out.latency <= self._window() / 10
            rel.credits = out.credits_used if out.credits_used is not None else -1
            if lease in self.moved:
                # Moved at its write already, or the move is still to send: it goes here.
                self.moved.discard(lease)
                rel.delay = self.moves.pop(lease, 0.0)
            elif held is not None:
                # From the admission to the write (the answer's latency is the rest).
                rel.delay = max(0.0, time.monotonic() - held[1] - out.latency)
            err = out.error
            if err is not None and err.kind == api.RATE_LIMITED:
                rel.hold_ms = s.window.hold_remaining(s.clock.now()) * 1000
            if err is not None and err.kind in (api.CREDITS, api.BUDGET):
                # The park lasts until a balance read ends it: the heartbeats of the
                # processes polling for credits renew it; a lease time after the last of
                # them went, it ends (a poll waits for the window, which may be longer
                # than a few polls: a park that ran out on its own let paid work go on the
                # balance the 402 had just contradicted).
                rel.park_ms = max(3 * s.config.credit_poll, self.settings.lease_ttl) * 1000
            # Who wrote it (host, pid, role) and its number in this run: entries from
            # every process share one stream, and an archive keeps each once.
            rel.entry = {
                "proc": self.proc,
                "host": self.host,
                "pid": self.pid,
                "role": self.role,
                "run": self.run,
                "n": next(self._ledger_n),
                "job": job.id if job is not None else None,
                "endpoint": job.ep.key if job is not None else "billing_credits",
                "attempt": job.attempts if job is not None else 1,
                "status": out.status,
                "kind": str(err.kind) if err is not None else "ok",
                "credits": out.credits_used,
                "latency": round(out.latency, 4),
            }
        self.pending.append(rel)
        self._flush.set()

    def alert(self, level: str, kind: str, message: str, wall: float) -> None:
        """Keep this process's alert among the fleet's recent ones."""
        self._alerts.append(
            {"t": wall, "proc": self.proc, "level": level, "kind": kind, "message": message}
        )
        self._flush.set()

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        async def run() -> None:
            try:
                await coro
            except SharedUnavailable as e:
                self._went_down(str(e))

        task = asyncio.create_task(run())
        self._tasks.append(task)
        task.add_done_callback(self._forget)
        return task

    def _forget(self, task: asyncio.Task[None]) -> None:
        if task in self._tasks:
            self._tasks.remove(task)

    async def _send_pending(self) -> None:
        while self.moves:
            # Taken out before the call: a release meanwhile must not move them again.
            moves = list(itertools.islice(self.moves.items(), 500))
            for lease, _ in moves:
                del self.moves[lease]
            await self.state.written(moves)
        while self.pending:
            items = self.pending[:500]
            await self.state.release(items, window=self._window(), margin=self.settings.margin)
            del self.pending[: len(items)]
        alerts, self._alerts = self._alerts, []
        for a in alerts[-20:]:
            await self.state.add_alert(a)

    async def _flush_loop(self) -> None:
        """Send releases (and alerts) in batches: whatever piled up since the last call."""
        while True:
            await self._flush.wait()
            self._flush.clear()
            if self.down is not None:
                continue  # the heartbeat notices the return and sets the flag again
            try:
                await self._send_pending()
            except SharedUnavailable as e:
                if len(self.pending) > 20_000:  # their leases expire anyway
                    del self.pending[:-20_000]
                self._went_down(str(e))

    # ======================================================= heartbeat, wake-ups ==

    async def _heartbeat_loop(self) -> None:
        """Renew leases and the registry every third of a lease; while Redis is away,
        look for it twice a second."""
        ttl = self.settings.lease_ttl
        while True:
            s = self.sched
            need = self._capped_need()
            try:
                _, self.live = await self.state.heartbeat(
                    self.proc,
                    host=self.host,
                    pid=self.pid,
                    role=self.role,
                    in_flight=s.slots.in_flight_total() if s is not None else 0,
                    queued=sum(s.queue.count.values()) if s is not None else 0,
                    best=self._best_waiting(),
                    ttl=ttl,
                    leases=list(self.leases),
                    need=need,
                    parked=s is not None and (s.credits.hold is not None or self.fleet_parked()),
                )
                if self.down is not None:
                    self._came_back()
                    self._flush.set()
            except SharedUnavailable as e:
                self._went_down(str(e))
            pause = min(ttl / 3, 5.0)
            if need > 0:  # what it keeps for its capped jobs must stay fresh in Redis
                pause = min(pause, max(0.2, self._window() / 20))
            end = time.monotonic() + pause
            while time.monotonic() < end:  # Redis lost meanwhile: look for it sooner
                await asyncio.sleep(min(0.25, pause))
                if self.down is not None:
                    break

    async def _listen_loop(self) -> None:
        """Releases publish what they freed: open that endpoint's gate (or look at the
        credits again) and wake the loop, instead of polling."""
        while True:
            pubsub = self.state.r.pubsub()
            try:
                await pubsub.subscribe(self.state.channel)
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.4)
                    if msg is None or self.sched is None:
                        continue
                    what = msg.get("data")
                    blocked = self.slot_gate.blocked
                    if what in blocked:
                        del blocked[what]
                        self.sched._wake.set()
                    elif what == "credits":
                        self._wake_credit_waiters()
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(pubsub.aclose(), 0.5)
                raise
            except Exception as e:  # listen again later
                log.debug("fleet listener: %s", e)
                # OSError, or redis-py's own ConnectionError / TimeoutError (not OSErrors).
                if isinstance(e, (OSError, RedisConnectionError, RedisTimeoutError)):
                    # Redis went away: say so now. The heartbeat may be seconds off, and a
                    # process with nothing to admit meanwhile would never have said it (it
                    # comes back through the heartbeat, which looks again every 0.25 s).
                    self._went_down(f"{type(e).__name__} on the pub/sub connection")
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(pubsub.aclose(), 0.5)
                await asyncio.sleep(0.5)

    def _wake_credit_waiters(self) -> None:
        """Credits were freed in the fleet: jobs it refused for credits try again now."""
        s = self.sched
        if s is None:
            return
        delayed = s.queue.delayed
        due = [
            e for e in delayed if e[2].state == S.WAITING_CREDITS and e[2].reason[:6] == "fleet:"
        ]
        if not due:
            return
        s.queue.delayed = [e for e in delayed if e not in due]
        heapq.heapify(s.queue.delayed)
        for _, _, job in due:
            s.queue.push(job)
        s._wake.set()
