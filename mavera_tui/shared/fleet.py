"""The scheduler's side of a shared key: gates that ask the fleet, and the hook that talks
to Redis for them.

With ``--shared`` the scheduler keeps its gates and its loop; three of them change:

* :class:`FleetWindow` mirrors only this process's own sends (the others' are in Redis,
  and the foreign estimate is kept there: what the server counted beyond the fleet's log);
* :class:`SharedWindowGate` and :class:`SharedSlotGate` close while the fleet refused
  (until the time Redis gave, or until a release wakes them over pub/sub);
* :class:`Fleet` admits each batch the loop chose in one script call (what does not fit
  goes back to the queue), releases each lease after its answer (batched, idempotent,
  also from a ``finally``), renews the leases by heartbeat, registers the process, and
  says at once when Redis cannot be reached: then nothing is admitted (``wait``, the
  default) or the local gates run with this process's share of the limit (``local``).
  Its admission is in :mod:`.admission`, its release and heartbeat in :mod:`.upkeep`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import re
import secrets
import socket
import sys
from typing import TYPE_CHECKING, Any

from .. import catalog
from ..api_types import RateHeaders
from ..catalog import Endpoint
from ..config import SharedSettings
from ..gates.slots import SlotGate
from ..gates.window import WindowGate
from ..limiter import SlidingWindow
from . import state as st
from .admission import Admission
from .balance import FleetBalance
from .state import Release, SharedState, SharedUnavailable
from .upkeep import Upkeep

if TYPE_CHECKING:
    from ..gates.loop import Scheduler

log = logging.getLogger("mavera_tui.shared")


class FleetWindow(SlidingWindow):
    """This process's own sends; the fleet's window and the foreign estimate are in Redis.
    The limit is the key's, or this process's share of it while Redis is away and the
    fallback is local."""

    share = 1

    def observe(
        self, sent_at: float, now: float, headers: RateHeaders, wall_now: float | None = None
    ) -> None:
        """Learn the limit and Remaining; what others sent is the fleet's business."""
        if headers.limit is not None:
            self.full_limit = headers.limit
            self.limit = max(1, headers.limit // self.share)
            self.limit_learned = True
        if headers.remaining is not None:
            self.last_remaining = headers.remaining

    def set_share(self, share: int) -> None:
        """Run on ``limit / share`` (1: the whole key's)."""
        full = getattr(self, "full_limit", self.limit * self.share)
        self.full_limit = full
        self.share = max(1, share)
        self.limit = max(1, full // self.share)


class SharedWindowGate(WindowGate):
    """The window gate, closed while the fleet's window refused us (until Redis's time)."""

    def __init__(self, window: SlidingWindow, fleet: Fleet) -> None:
        super().__init__(window)
        self.fleet = fleet
        self.blocked_until = 0.0
        # The fleet's room after our last admission, believed for a moment: the loop then
        # sizes its batch (and keeps admissions for capped jobs) by the fleet's room, not
        # by our own mirror's, which does not see the others' sends.
        self.hint: int | None = None
        self.hint_until = 0.0

    def room(self, now: float) -> int:
        """Our own mirror's room (at most the fleet's, as last heard), or 0 while the fleet
        said full (or Redis is away)."""
        if self.fleet.closed_for_redis() or now < self.blocked_until:
            return 0
        room = super().room(now)
        if self.hint is not None and now < self.hint_until:
            room = min(room, self.hint)
        return room

    def heard(self, room: int, now: float) -> None:
        """The fleet's room after an admission (at least 1: one more call finds out)."""
        self.hint = max(1, room)
        self.hint_until = now + min(0.5, self.window.window / 20)

    def next_open(self, now: float, waiting: bool) -> list[float]:
        """As the local gate, and when the fleet said room comes back."""
        times = super().next_open(now, waiting)
        if waiting:
            if self.blocked_until > now:
                times.append(self.blocked_until)
            if self.hint is not None and self.hint_until > now:
                # The fleet's room as last heard may have held a batch back (kept for
                # capped jobs): look again once it is no longer believed.
                times.append(self.hint_until)
            if self.fleet.closed_for_redis():
                times.append(now + 0.5)
        return times


class SharedSlotGate(SlotGate):
    """The slot gate, with capped endpoints closed while the fleet's slots are full (until
    a release on that endpoint is published, or the first lease would expire)."""

    def __init__(self, max_in_flight: int, fleet: Fleet) -> None:
        super().__init__(max_in_flight)
        self.fleet = fleet
        self.blocked: dict[str, float] = {}
        # Uncapped endpoints closed until then: the fleet keeps the room left for capped
        # jobs (asking job after job meanwhile was one refused call per job).
        self.uncapped_until = 0.0
        self.share = 1

    def free(self, ep: Endpoint, now: float) -> int:
        """Local slots free, 0 while the fleet's are full; a share of the cap in fallback."""
        n = super().free(ep, now)
        if ep.cap is None and now < self.uncapped_until:
            return 0
        if ep.cap is None or n <= 0:
            return n
        if self.blocked.get(ep.key, 0.0) > now:
            return 0
        if self.share > 1:
            n = min(n, max(1, ep.cap // self.share) - len(self.in_flight[ep.key]))
        return n

    planned = False  # the key's window is the fleet's: this mirror cannot plan its end

    def cap_share(self, ep: Endpoint) -> int:
        """The fleet shares the cap: plan with this process's part of it."""
        return -(-(ep.cap or 0) // max(1, self.fleet.live))

    def next_open(self, now: float) -> list[float]:
        """Held endpoints, and those the fleet closed."""
        times = super().next_open(now) + [t for t in self.blocked.values() if t > now]
        if self.uncapped_until > now:
            times.append(self.uncapped_until)
        return times


def _clean_host(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:64] or "host"


class Fleet(Admission, Upkeep, FleetBalance):
    """This process in the fleet of one key: admission, release, heartbeat, registry, and
    the balance it shares."""

    def __init__(
        self, state: SharedState, settings: SharedSettings, *, role: str, echo: bool = False
    ) -> None:
        self.state = state
        self.settings = settings
        self.role = role
        self.echo = echo  # headless commands also print the fleet's alerts on stderr
        self.host = _clean_host(settings.host_id or socket.gethostname())
        self.pid = os.getpid()
        self.proc = f"{self.host}:{self.pid}"
        self._seq = itertools.count(1)
        # The ledger entries this process puts in the stream are numbered per run (a run:
        # this process's life, ``run`` telling apart two with the same host and pid): an
        # archive sees a missing or repeated entry of any process by its number.
        self.run = secrets.token_hex(4)
        self._ledger_n = itertools.count(1)
        self.leases: dict[str, tuple[str, float]] = {}  # lease -> (endpoint, monotonic asked)
        self.own_at: dict[str, float] = {}  # the engine's own requests: lease -> Redis ms
        self.job_lease: dict[str, str] = {}
        self.pending: list[Release] = []
        # Admissions to move to their writes (lease -> seconds after admission), not yet
        # sent; and every lease moved or to move (its release then moves it no more).
        self.moves: dict[str, float] = {}
        self.moved: set[str] = set()
        self._alerts: list[dict[str, Any]] = []
        self._flush = asyncio.Event()
        self.down: str | None = None  # why Redis is unreachable (None: it answers)
        self.live = 1
        self.epoch: str | None = None
        self.sched: Scheduler | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        # Admission cost, for the summary and the benchmark.
        self.admit_calls = 0
        self.admit_jobs = 0
        self.admit_seconds = 0.0

    # ================================================================== wiring ====

    def attach(self, sched: Scheduler) -> None:
        """Give ``sched`` the shared gates and this hook (before it starts)."""
        self.sched = sched
        old = sched.window
        w = FleetWindow(old.limit, old.window)
        w.full_limit = old.limit
        sched.window = w
        sched.window_gate = SharedWindowGate(w, self)
        slots = SharedSlotGate(sched.slots.max_in_flight, self)
        slots.latency = sched.slots.latency  # the ready queue reads the same dict
        sched.slots = slots
        sched.fleet = self

    @property
    def window_gate(self) -> SharedWindowGate:
        assert self.sched is not None
        gate = self.sched.window_gate
        assert isinstance(gate, SharedWindowGate)
        return gate

    @property
    def slot_gate(self) -> SharedSlotGate:
        assert self.sched is not None
        gate = self.sched.slots
        assert isinstance(gate, SharedSlotGate)
        return gate

    async def start(self) -> None:
        """Reach Redis (an alert at once if it cannot be), then run the heartbeat, the
        wake-up listener and the release flusher."""
        try:
            await self.state.ping()
        except SharedUnavailable as e:
            self._went_down(str(e))
        self._tasks = [
            asyncio.create_task(self._heartbeat_loop(), name="fleet-heartbeat"),
            asyncio.create_task(self._listen_loop(), name="fleet-listen"),
            asyncio.create_task(self._flush_loop(), name="fleet-flush"),
        ]

    async def close(self) -> None:
        """Release what is still held, leave the registry (and a claim to read the
        balance), close the connection."""
        self._closing = True
        tasks = list(self._tasks)  # done tasks remove themselves from the list
        for t in tasks:
            t.cancel()
        for t in tasks:  # bounded: a task stuck in a Redis client's clean-up must not hang us
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(t, 1.0)
        try:
            # The last releases carry the last ledger entries: a loaded Redis that misses
            # one short timeout would lose them from the fleet's stream (nothing after them
            # would show the gap). Releases are idempotent and entries numbered: retry.
            for delay in (0.2, 0.5, 0.0):
                try:
                    await self._send_pending()
                    break
                except SharedUnavailable:
                    if not delay:
                        raise
                    await asyncio.sleep(delay)
            if self.leases:
                await self.state.release(
                    [Release(lease) for lease in list(self.leases)],
                    window=self._window(),
                    margin=self.settings.margin,
                )
            await self.state.leave(self.proc)
        except SharedUnavailable:
            pass  # the leases expire; the registry entry too
        except Exception:  # never lose the run's summary over the goodbye
            log.exception("leaving the fleet")
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.state.close(), 1.0)

    def stats(self) -> dict[str, Any]:
        """Admission calls, jobs admitted through them, and the time they took."""
        per_job = self.admit_seconds / self.admit_jobs * 1000 if self.admit_jobs else 0.0
        return {
            "redis": st.safe_url(self.state.url),
            "process": self.proc,
            "admission_calls": self.admit_calls,
            "admitted": self.admit_jobs,
            "admission_ms_per_job": round(per_job, 3),
        }

    # ============================================================= Redis away ====

    def closed_for_redis(self) -> bool:
        """Redis is away and the fallback is to wait: nothing is admitted."""
        return self.down is not None and self.settings.fallback != "local"

    def _say(self, level: str, kind: str, message: str) -> None:
        if self.sched is not None:
            self.sched._alert(level, kind, message)
        if self.echo:
            print(f"mavera-tui: {message}", file=sys.stderr, flush=True)

    def _went_down(self, why: str) -> None:
        if self.down is not None or self._closing:
            return
        self.down = why
        where = st.safe_url(self.state.url)
        if self.settings.fallback == "local":
            share = max(1, self.live)
            self._set_share(share)
            self._say(
                "error",
                "shared_unreachable",
                f"shared state at {where} unreachable ({why}): running on local gates "
                f"with 1/{share} of the key's limit and caps until it is back",
            )
        else:
            self._say(
                "error",
                "shared_unreachable",
                f"shared state at {where} unreachable ({why}): sending nothing until it "
                "is back (fail closed; --shared-fallback local runs on a share instead)",
            )
        if self.sched is not None:
            self.sched._wake.set()

    def _came_back(self) -> None:
        if self.down is None:
            return
        self.down = None
        self._set_share(1)
        self._say("info", "shared_back", f"shared state at {st.safe_url(self.state.url)} is back")
        if self.sched is not None:
            self.sched._wake.set()

    def _set_share(self, share: int) -> None:
        if self.sched is None:
            return
        w = self.sched.window
        if isinstance(w, FleetWindow):
            w.set_share(share)
        self.slot_gate.share = share

    def _window(self) -> float:
        return self.sched.window.window if self.sched is not None else catalog.WINDOW_SECONDS
