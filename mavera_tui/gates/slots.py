"""The slot gate: requests in flight per endpoint, concurrency-429 holds, and latency.

Capped endpoints (the catalog's documented concurrency) take at most their cap at once;
the uncapped ones share ``max_in_flight``. A concurrency 429 holds only its endpoint. The
gate also keeps each endpoint's measured latency, which tells when busy slots will free
and so how many window admissions to keep for capped jobs (``reserve_for_capped``).
"""

from __future__ import annotations

import math

from .. import catalog
from .. import snapshot as S
from ..catalog import Endpoint
from ..limiter import SlidingWindow, room_times
from .model import Job
from .plan import EndPlan
from .ready import ReadyQueue

_OPEN = frozenset(k for k, e in catalog.ENDPOINTS.items() if e.cap is None)


#: A median ratio of measured to typical latency below this says the server is faster
#: than the catalog (the least one draw can give is 0.29 of typical, for responses).
_FASTER = 0.25


def _typical(key: str) -> float:
    """The catalog's typical latency of ``key`` (the middle of its range)."""
    lo, hi = catalog.ENDPOINTS[key].latency
    return (lo + hi) / 2


class SlotGate:
    """May a job go now on its endpoint's slots, and when might a held endpoint open?"""

    def __init__(self, max_in_flight: int) -> None:
        keys = catalog.ENDPOINTS
        self.max_in_flight = max_in_flight
        self.in_flight: dict[str, set[Job]] = {k: set() for k in keys}
        self.uncapped_in_flight = 0
        self.hold: dict[str, float] = dict.fromkeys(keys, 0.0)
        self.busy: dict[str, int] = dict.fromkeys(keys, 0)  # concurrency 429s in a row
        self.max_seen: dict[str, int] = dict.fromkeys(keys, 0)
        self.latency: dict[str, float] = {k: _typical(k) for k in keys}
        self.latency_seen: dict[str, bool] = dict.fromkeys(keys, False)
        self._scale: float | None = 1.0  # the server's speed against the catalog's (None:
        # to be worked out again from the answers, by ``expected_latency``)
        self.plan = EndPlan()

    #: Whether holds for capped jobs are weighed against the batch's end (:mod:`.plan`);
    #: a fleet's window is the key's, not this mirror's, so it keeps every hold.
    planned = True

    def free(self, ep: Endpoint, now: float) -> int:
        """Slots free on ``ep`` now (0 while a concurrency 429 holds it)."""
        if self.hold[ep.key] > now:
            return 0
        if ep.cap is None:
            return self.max_in_flight - self.uncapped_in_flight
        return ep.cap - len(self.in_flight[ep.key])

    def take(self, job: Job) -> None:
        """A job goes: it holds a slot until ``release``."""
        self.in_flight[job.ep.key].add(job)
        if job.ep.cap is None:
            self.uncapped_in_flight += 1

    def release(self, job: Job) -> None:
        """A job's answer came (or it was not sent): free its slot (idempotent)."""
        slots = self.in_flight[job.ep.key]
        if job in slots:
            slots.discard(job)
            if job.ep.cap is None:
                self.uncapped_in_flight -= 1

    def note_sent(self, job: Job) -> None:
        """Record the most in flight seen on the job's endpoint."""
        n = len(self.in_flight[job.ep.key])
        if n > self.max_seen[job.ep.key]:
            self.max_seen[job.ep.key] = n

    def refused(self, key: str) -> int:
        """A concurrency 429 on ``key``: returns the refusals in a row, this one included."""
        self.busy[key] += 1
        return self.busy[key]

    def hold_until(self, key: str, until: float) -> float:
        """Hold ``key`` until at least ``until``; returns when the hold ends."""
        self.hold[key] = max(self.hold[key], until)
        return self.hold[key]

    def answered(self, key: str, lat: float) -> None:
        """A success on ``key``: the refusal streak ends; the latency is measured."""
        self.busy[key] = 0
        self.note_latency(key, lat)

    def next_open(self, now: float) -> list[float]:
        """When held endpoints open."""
        return [h for h in self.hold.values() if h > now]

    def in_flight_total(self) -> int:
        """Requests in flight on all endpoints."""
        return sum(len(s) for s in self.in_flight.values())

    def note_latency(self, key: str, lat: float) -> None:
        """An answer's latency (the catalog's typical one is only a prior: the first
        answer replaces it, later ones move it)."""
        self.latency[key] = (
            lat if not self.latency_seen[key] else (0.8 * self.latency[key] + 0.2 * lat)
        )
        self.latency_seen[key] = True
        self._scale = None  # only an endpoint not yet answered needs it: not every answer

    def expected_latency(self, key: str) -> float:
        """The endpoint's measured latency, or before any answer the catalog's typical one
        scaled by how the endpoints answered so far compared with theirs (the median
        ratio, if clearly below one draw's spread): a server that answers ten times faster
        than the catalog's guess answers everything so (the simulator's time scale). The
        first answer may be the balance read or, with the limit unknown, the job sent alone
        to learn it: with only the read counted, a batch that starts with that job planned
        its first window at the catalog's latencies, 10x too long in compressed time."""
        if self.latency_seen[key]:
            return self.latency[key]
        if self._scale is None:
            ratios = sorted(
                self.latency[k] / _typical(k) for k, seen in self.latency_seen.items() if seen
            )
            # One answer's latency is a draw from its endpoint's range: alone it says no
            # more than "about the catalog's" (0.29-1.7 of the typical one) unless it is
            # well below any such draw, as on a server 10x faster (compressed time).
            median = ratios[len(ratios) // 2]
            self._scale = max(median, 0.01) if median < _FASTER else 1.0
        return _typical(key) * self._scale

    def cap_share(self, ep: Endpoint) -> int:
        """The slots of a capped endpoint this process plans with (all of them, alone)."""
        return ep.cap or 0

    def reserve_for_capped(
        self, now: float, priority: int, window: SlidingWindow, ready: ReadyQueue
    ) -> int:
        """Window admissions to keep for capped jobs that can start before the window gives
        one back: each slot frees when its job ends and can then run one job after another
        (at the endpoint's measured latency) until then. A batch ends no earlier than its
        capped work allows, so those slots must not idle for want of an admission while
        short uncapped jobs, which fit in any window, take them all. But each admission
        kept moves a chain of the window's sends later (:mod:`.plan`): only as many are
        kept as the batch's planned end allows."""
        room_at: float | None = None  # found once, and only if a capped job is waiting:
        # it walks our sends in the window (17,000 of them in a flood)
        need = 0
        starts: list[float] = []
        work: list[tuple[list[float], int, float]] = []
        for key, jobs in self.in_flight.items():
            ep = catalog.ENDPOINTS[key]
            if ep.cap is None or not jobs or ready.count[key] <= 0:
                continue  # no slot will free: free ones are filled first, in select
            head = ready.head(key)
            if head is None or head.spec.priority < priority:
                continue
            if room_at is None:
                room_at = window.room_after_burst(now, window.window / 60)
                if room_at is None:  # none of ours in the window: room comes back as
                    room_at = now + window.window  # others' sends leave it
            lat = max(self.expected_latency(key), 1e-3)
            # A job taken in this selection is not sent yet: its sent_at is an old one.
            frees = [
                max(now, j.sent_at + lat) if j.state == S.IN_FLIGHT else now + lat for j in jobs
            ]
            frees += [now] * max(0, self.cap_share(ep) - len(jobs))
            n = sum(math.ceil((room_at - f) / lat) for f in frees if f < room_at)
            need += min(n, ready.count[key])
            if self.planned:
                work.append((frees, ready.count[key], lat))
                mine = [f + i * lat for f in frees for i in range(n) if f + i * lat < room_at]
                starts += sorted(mine)[: ready.count[key]]
        if not self.planned or not need or window.calendar.active:
            return need  # (a calendar window gives its room back all at once: no chains)
        return min(need, self._planned_holds(now, window, ready, sorted(starts), work))

    def _planned_holds(
        self,
        now: float,
        window: SlidingWindow,
        ready: ReadyQueue,
        starts: list[float],
        work: list[tuple[list[float], int, float]],
    ) -> int:
        """Of the capped ``starts``, how many may hold an admission without ending the
        batch later than planned (:class:`.plan.EndPlan`)."""
        chains = window.chains(now)
        if chains <= 0:
            return len(starts)
        period = window.window + window.margin
        phases = room_times(window, now, chains)
        sends = sum(ready.count.values()) + len(ready.delayed)
        tail = min(
            (self.expected_latency(k) for k, n in ready.count.items() if n > 0 and k in _OPEN),
            default=0.0,
        )
        base = next((p for p in phases if p > now), now)  # (sorted: the first stamped)
        key = (
            tuple(n for _, n, _ in work),
            tuple(len(lanes) for lanes, _, _ in work),
            chains,
            int(now / (period / 32)),
        )
        target = self.plan.plan(
            key, phases=phases, sends=sends, period=period, tail=tail, capped=work, base=base
        )
        return EndPlan.holds_within(phases, starts, sends, period, target - tail)
