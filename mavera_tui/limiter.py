"""The sliding window: a client-side mirror of the server's per-key window, kept honest by headers.

The server admits a request if fewer than ``limit`` requests arrived in the last ``window``
seconds. We record every send as its bytes are written (the transport says when), so alone
on a key the mirror is exact up to the delay between our write and the server's count,
and we can use the whole limit without a single 429.

That delay is not a constant: a server busy with a burst counts the last of it tens or
hundreds of milliseconds after it was written, and then holds it that much longer than we
would. The mirror measures it from ``X-RateLimit-Remaining``: when the server still counts
sends of ours that left the window by our stamps, how far past the window they were is the
delay, and the mirror keeps at least 1.5 times the largest delay seen past the window
(``margin``), never less than a small floor. A window 429 we did not expect widens it too.

Other clients on the same key are seen only through ``Remaining``: whatever the server
counts beyond what our own sends could explain (with the margin, at arrival, or when the
answer left for a server shown to count then) is foreign traffic. The estimate is the most
seen over the last window (see ``foreign``), with a few slots of slack while there is any,
because another client keeps arriving between two of our observations; or, for a client
our bursts hold back, its arrival rate over a window (``_Others.claim``).

This is deliberately not the docs' token bucket: a bucket whose capacity is a full minute
lets two minutes of requests into one sliding window.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import deque
from collections.abc import Iterator

from .api_types import RateHeaders
from .fixed_window import CalendarSense


class _Sends:
    """Our send times, ascending: a list whose head moves forward as old sends are dropped.

    A deque is what this was, but ``bisect`` on a deque walks its blocks on every probe:
    with 10,000 sends in a window that was 4% of a flood's CPU. Dropped entries are cut
    off the list in one slice once they are most of it.
    """

    __slots__ = ("_a", "_lo")

    def __init__(self) -> None:
        self._a: list[float] = []
        self._lo = 0  # index of the oldest entry kept

    def __len__(self) -> int:
        return len(self._a) - self._lo

    def __getitem__(self, i: int) -> float:
        """The ``i``-th oldest kept send (``i >= 0``)."""
        if i < 0:
            raise IndexError("_Sends takes indices from the oldest (0) only")
        return self._a[self._lo + i]

    def last(self) -> float | None:
        return self._a[-1] if len(self._a) > self._lo else None

    def bisect_right(self, t: float) -> int:
        """How many kept sends are at or before ``t``."""
        return bisect.bisect_right(self._a, t, self._lo) - self._lo

    def since(self, i: int) -> Iterator[float]:
        """The kept sends from the ``i``-th oldest on."""
        return itertools.islice(self._a, self._lo + i, None)

    def add(self, t: float) -> None:
        """Record a send at ``t`` (in order, even if a clock read a hair earlier)."""
        a = self._a
        if len(a) > self._lo and t < a[-1]:
            bisect.insort(a, t, self._lo)
        else:
            a.append(t)

    def drop_through(self, t: float) -> None:
        """Forget the sends at or before ``t``."""
        lo = bisect.bisect_right(self._a, t, self._lo)
        if lo > 1024 and 2 * lo > len(self._a):
            del self._a[:lo]
            lo = 0
        self._lo = lo


class _Others:
    """Other clients on the key, as the server's count shows them beyond our own sends: the
    most seen over the last window, or for one our bursts hold back, its rate over a window.
    Times are loop seconds; ``window`` is the key's."""

    def __init__(self, window: float) -> None:
        self.window = window
        # (time observed, foreign requests the server counted then) over the last window,
        # kept as a monotonic queue (each entry larger than every later one), so the most
        # seen is the first: with every answer observed, a scan was O(window) per question.
        self._obs: deque[tuple[float, int]] = deque()
        # Its arrival rate (see ``claim``): the start of the current run of growth, the last
        # rate measured, and the rates sustained over two measures in a row, as a monotonic
        # queue over two windows.
        self._grow_ref: tuple[float, int] | None = None
        self._grow_last: float | None = None
        self._rates: deque[tuple[float, float]] = deque()
        self._pressed_at = -math.inf  # when it last took room we had (a 429)

    def seen(self, now: float) -> int:
        """The most seen over the last window."""
        obs = self._obs
        while obs and obs[0][0] <= now - self.window:
            obs.popleft()
        return obs[0][1] if obs else 0

    def estimate(self, now: float, limit: int) -> int:
        """What we leave them: the most seen, or what they would take (``claim``); none
        once none is seen for a window."""
        seen = self.seen(now)
        return max(seen, self.claim(now, limit, seen)) if seen else 0

    def claim(self, now: float, limit: int, seen: int) -> int:
        """What another client would take of the window if we left it room: its arrival
        rate over a window, measured from how fast the most of it seen grows.

        A client that sends steadily and is refused while the window is full (a refusal is
        not counted) takes only the room a greedy burst of ours leaves it, so the most of it
        seen in a window is far below its rate. Room held for a capped job mid-window is
        then taken by its next arrivals within a second, and the capped job meets a 429 or
        waits a window: at enterprise tier with 30% foreign traffic, capped work got one
        start per slot a window and the batch ended at 1.10-1.12 of the bound for the
        capacity left. Leaving it its rate, that room stays ours.

        Its growth shows only in room we leave, and a burst of ours hides it (our own sends
        explain the count until the burst ends). So when it takes room the mirror had for
        us (a window 429 it explains), it is held back: for a window we leave it twice the
        most seen, and its rate shows in that room. No more than half the key is ever
        left to a rate or that doubling (what is seen is left whatever it is).

        A rate counts only when sustained over two measures in a row (a burst is not a
        rate); while the window is full the growth seen is less than the rate, never more.
        It is kept two windows: a client that keeps its rate has grown into the room by
        then and is seen whole; one that stopped is no longer seen, and then none is
        claimed (``foreign``)."""
        rates = self._rates
        while rates and rates[0][0] <= now - 2 * self.window:
            rates.popleft()
        claim = math.ceil(rates[0][1] * self.window) if rates else 0
        if now - self._pressed_at < self.window:
            claim = max(claim, 2 * seen)
        return min(limit // 2, claim)

    def pressed(self, t: float) -> None:
        """Another client took room the mirror had for us at ``t`` (a window 429)."""
        self._pressed_at = max(self._pressed_at, t)

    def observe(self, now: float, foreign_now: int) -> None:
        """A reading: ``foreign_now`` beyond what our own sends explain. The rate is
        measured from the growth of the most seen (at least 8 arrivals over a sixteenth of
        the window a measure)."""
        if foreign_now:
            obs = self._obs
            while obs and obs[-1][1] <= foreign_now:
                obs.pop()  # outlived by a larger reading: never the most seen again
            obs.append((now, foreign_now))
        seen = self.seen(now)
        ref = self._grow_ref
        if ref is None or seen < ref[1]:
            self._grow_ref, self._grow_last = (now, seen), None
            return
        dt, df = now - ref[0], seen - ref[1]
        if df < 8 or dt < self.window / 16:
            return
        rate = df / dt
        last = self._grow_last
        if last is not None:
            sustained = min(rate, last)
            rates = self._rates
            while rates and rates[-1][1] <= sustained:
                rates.pop()
            rates.append((now, sustained))
        self._grow_ref, self._grow_last = (now, seen), rate


class SlidingWindow:
    """Our view of the key's window. Times are loop seconds (``Clock.now()``)."""

    def __init__(self, limit: int, window: float = 60.0, margin: float | None = None):
        if limit <= 0 or window <= 0:
            raise ValueError("limit and window must be positive")
        self.limit = limit
        self.window = float(window)
        # The least we hold a send past the window: the scheduling jitter of a loaded
        # machine between a write and the server's parse (0.1 s; 0.12 s at W = 60 s).
        self.margin_floor = margin if margin is not None else max(0.1, 0.002 * window)
        # Never more than a tenth of the window: past that, a "delay" is foreign traffic.
        self.margin_cap = max(self.margin_floor, self.window / 10)
        self.margin = self.margin_floor
        self.delay_seen = 0.0  # largest write-to-count delay measured
        self.limit_learned = False
        self._own = _Sends()  # our send times, kept 2 windows for reconciling
        self._others = _Others(self.window)  # other clients on the key (see foreign)
        self.foreign_max_seen = 0  # for the run summary
        # Runs of sends written back to back (see observe): their starts and last writes.
        self._burst_starts: list[float] = []
        self._burst_ends: list[float] = []
        self._burst_gap = 0.01
        self.reads_at_answer = False  # the server counts when it answers
        self._contra_arrival = 0.0  # see observe()
        self._contra_answer = 0.0
        self._hold_until = 0.0  # server said "full until" (Retry-After)
        # Sends chosen but not yet on the wire: counted as in the window until stamped.
        self.pending = 0
        self.last_remaining: int | None = None
        # A server counting calendar windows, found out by one request (fixed_window.py).
        self.calendar = CalendarSense(self)

    # --- bookkeeping -------------------------------------------------------------------

    def _expiry(self) -> float:
        return self.window + self.margin

    def _prune(self, now: float) -> None:
        keep_own = now - 2 * (self.window + self.margin_cap)
        self._own.drop_through(keep_own)

    def _own_in_window(self, now: float) -> int:
        cut = now - self._expiry()
        # _own is sorted (sends are recorded in time order): count entries > cut.
        return len(self._own) - self._own.bisect_right(cut)

    def _own_between(self, lo: float, hi: float) -> int:
        """Our sends in (lo, hi]."""
        return self._own.bisect_right(hi + 1e-9) - self._own.bisect_right(lo)

    def _burst(self, t: float) -> tuple[float, float]:
        """The first and last writes of the burst (writes less than ``_burst_gap`` apart)
        holding t."""
        i = bisect.bisect_right(self._burst_starts, t) - 1
        return (self._burst_starts[i], self._burst_ends[i]) if i >= 0 else (t, t)

    def foreign(self, now: float) -> int:
        """Requests of other clients we believe the server counts now: the most observed
        over the last window.

        Held, not faded: another client keeps arriving in the room we leave, and while the
        window is full no answers come back to say so. Fading readings over the window
        (linearly, or after holding them for half or 0.8 of it) was measured: 4-5% of
        requests 429 at each window boundary with 30% foreign traffic (tests/
        test_window.py), against under 1% held. What made the estimate wrong
        before was our own sends read as foreign; ``observe`` no longer does that.
        """
        if self.calendar.active:
            return self.calendar.foreign(now)
        return self._others.estimate(now, self.limit)

    def _slack(self, foreign: int) -> int:
        return max(3, math.ceil(0.05 * foreign)) if foreign > 0 else 0

    def used(self, now: float) -> int:
        """Requests we believe the server counts right now (ours + foreign)."""
        if self.calendar.active:
            return self.limit - self.calendar.available(now)
        return self._own_in_window(now) + self.pending + self.foreign(now)

    def available(self, now: float) -> int:
        """How many requests may be sent now without a 429."""
        if now < self._hold_until:
            return 0
        if self.calendar.active:
            return self.calendar.available(now)
        return self.calendar.probe_room(now, self._sliding_available(now))

    def _sliding_available(self, now: float) -> int:
        return max(0, self.chains(now) - self._own_in_window(now) - self.pending)

    def next_free(self, now: float) -> float:
        """The earliest time at which ``available`` becomes positive (as far as we know)."""
        if self.available(now) > 0:
            return now
        t = max(now, self._hold_until)
        if self.calendar.active:
            return self.calendar.next_free(t)
        probe = self.calendar.probe_at(t)
        free = self.sliding_next_free(t)
        return free if probe is None else min(free, probe)

    def sliding_next_free(self, t: float) -> float:
        """When the sliding mirror gives room back (the hold and the probe aside)."""
        if self._sliding_available(t) > 0:
            return t
        f = self.foreign(t)
        allowed_own = self.limit - f - self._slack(f) - self.pending
        cut = t - self._expiry()
        first = self._own.bisect_right(cut)
        own_n = len(self._own) - first
        # Room appears when our (own_n - allowed_own + 1)-th oldest send leaves the window.
        idx = first + max(0, own_n - max(allowed_own, 0))
        if idx >= len(self._own):
            # Foreign traffic (fading) or sends about to be stamped fill the window: look
            # again soon rather than a whole window later.
            return t + (min(self._expiry(), self.window / 20) if f else self._expiry())
        return max(t, self._own[idx] + self._expiry())

    def oldest_expiry(self, now: float) -> float | None:
        """When our oldest send in the window leaves it (None if we have none in it)."""
        if self.calendar.active:
            return self.calendar.next_boundary(now)
        self._prune(now)
        i = self._own.bisect_right(now - self._expiry())
        return self._own[i] + self._expiry() if i < len(self._own) else None

    def room_after_burst(self, now: float, gap: float) -> float | None:
        """When the window gives an admission back after the run of our sends leaving it
        now: the expiry of the first of our sends in the window that follows a pause of
        more than ``gap`` (a burst leaves the window in a few milliseconds; planning to
        its end would see no room at all). None if we have no send in the window."""
        if self.calendar.active:
            return self.calendar.next_boundary(now)
        self._prune(now)
        own = self._own
        i = own.bisect_right(now - self._expiry())
        if i >= len(own):
            return None
        prev = own[i]
        for t in own.since(i + 1):
            if t - prev > gap:
                return t + self._expiry()
            prev = t
        return own[i] + self._expiry() if own[i] + self._expiry() > now + gap else now + self.window

    def chains(self, now: float) -> int:
        """How many of the window's admissions are ours to use (the rest are foreign)."""
        f = self.foreign(now)
        return self.limit - f - self._slack(f)

    def hold_remaining(self, now: float) -> float:
        return max(0.0, self._hold_until - now)

    # --- events --------------------------------------------------------------------------

    def reserve(self) -> None:
        """Count a send that has been chosen but not yet written (see ``pending``)."""
        self.pending += 1
        self.calendar.reserved()

    def release(self) -> None:
        """A reserved send will not happen after all."""
        self.pending = max(0, self.pending - 1)
        self.calendar.released()

    def record_send(self, now: float, *, reserved: bool = False) -> None:
        """Count one of our requests, written at ``now`` (``reserved``: it was reserved)."""
        if reserved:
            self.pending = max(0, self.pending - 1)
            self.calendar.written(now)
        self._own.add(now)
        starts, ends = self._burst_starts, self._burst_ends
        if ends and now - ends[-1] <= self._burst_gap:
            ends[-1] = max(ends[-1], now)
        else:
            starts.append(now)
            ends.append(now)
            if len(starts) > 4096:  # forget bursts long out of every window
                cut = bisect.bisect_left(starts, now - 3 * (self.window + self.margin_cap))
                del starts[:cut], ends[:cut]

    def hold(self, until: float) -> None:
        """The server told us the key is full until ``until`` (loop time)."""
        self._hold_until = max(self._hold_until, until)

    def unexpected_429(self, sent_at: float) -> None:
        """A window 429 for a send the mirror had room for: unless foreign traffic explains
        it, the server counts our sends later than we thought; widen the margin."""
        if self.foreign(sent_at) == 0:
            self._widen(max(self.margin * 1.5, self.margin + 0.05))
        else:  # another client took room we had: it is held back (see _Others.claim)
            self._others.pressed(sent_at)

    def _widen(self, margin: float) -> None:
        self.margin = min(self.margin_cap, max(self.margin, margin))

    def observe(
        self, sent_at: float, now: float, headers: RateHeaders, wall_now: float | None = None
    ) -> None:
        """Reconcile with the answer (at ``now``) to a request we wrote at ``sent_at``."""
        if headers.limit is not None:
            self.limit = headers.limit
            self.limit_learned = True
        if headers.remaining is None:
            return
        self.last_remaining = headers.remaining
        if wall_now is not None and self.calendar.observe(sent_at, now, headers, wall_now):
            return
        self._prune(now)
        if now - sent_at > self.window / 10:
            return  # only a fresh answer says something about the window as it is
        server_count = self.limit - headers.remaining
        w, m = self.window, self.margin
        # The most of the server's count our own sends could explain: counted at arrival
        # (just after sent_at) or when the answer left (just before now), with the margin.
        # In a burst the server parses our requests in its own order: the rest of the
        # burst this send was written in (up to the answer) may have been counted first.
        burst_start, burst_end = self._burst(sent_at)
        burst_end = min(now, burst_end)
        own_at_send = self._own_between(sent_at - w - m, burst_end)
        own_at_answer = self._own_between(now - w - m, now)
        # Which reading is this server's? Alone on a key, a count below what our own sends
        # make at an instant contradicts counting at that instant: keep a decaying tally of
        # contradictions of each and read foreign traffic by the one less contradicted
        # (counting at arrival unless the server has shown otherwise).
        # Sends written within the measured delay before an instant may not be counted
        # yet at it: a count short by those alone contradicts neither reading.
        # At arrival only earlier bursts are surely counted first: the server takes a
        # burst in its own order (else a burst reads as counting at the answer).
        d = self.delay_seen
        before = min(sent_at - d, burst_start - 1e-6)
        self._contra_arrival = 0.98 * self._contra_arrival + (
            server_count < self._own_between(sent_at - w, before) - 1
        )
        self._contra_answer = 0.98 * self._contra_answer + (
            server_count < self._own_between(now - w, now - d) - 1
        )
        at_answer = self._contra_arrival > self._contra_answer + 2.0
        self.reads_at_answer = at_answer
        own = own_at_answer if at_answer else own_at_send
        foreign_now = max(0, server_count - own)
        if foreign_now > self.foreign_max_seen:
            self.foreign_max_seen = foreign_now
        self._others.observe(now, foreign_now)
        if foreign_now == 0 and self.foreign(now) == 0:
            self._measure_delay(sent_at, server_count)
        if not at_answer:
            self._measure_backlog(sent_at, server_count)

    def _measure_backlog(self, sent_at: float, server_count: int) -> None:
        """A server busy with a burst counts our sends late. When this send was counted,
        the server had counted fewer of ours than we had written before it: the ones it had
        not (the newest before this one, as it takes them in order) were counted at least
        as late after their write as this one's write came after theirs. One short is
        tolerated (a server whose Remaining is read before counting this request).
        Kept for reading Remaining, not added to the margin: a burst counted late is counted
        late again a window later; ``_measure_delay`` sees what differs between the two."""
        w = self.window
        i = self._own.bisect_right(sent_at) - 1  # this send (or the newest before)
        behind = self._own_between(sent_at - w, sent_at) - server_count - 1
        if behind <= 0 or i - behind < 0:
            return
        delay = sent_at - self._own[i - behind]
        if delay > self.margin_cap:
            return  # that much behind is not a backlog of ours: other traffic, or a 429 run
        if delay > self.delay_seen:
            self.delay_seen = delay

    def _measure_delay(self, sent_at: float, server_count: int) -> None:
        """Alone on the key: sends the server still counts though they left the window by
        our stamps show how much later than our write it counts them."""
        w = self.window
        held = server_count - self._own_between(sent_at - w, sent_at)
        if held <= 0:
            return
        # Our sends just past the window (within the cap), newest first: the server holds
        # the newest ``held`` of them, so the held-th newest is at least that delay old.
        lo = self._own.bisect_right(sent_at - w - self.margin_cap)
        hi = self._own.bisect_right(sent_at - w)
        if hi - lo <= 0:
            return
        k = min(held, hi - lo)
        delay = (sent_at - w) - self._own[hi - k]
        if delay > self.delay_seen:
            self.delay_seen = delay
        self._widen(1.5 * delay + 0.01)


def room_times(window: SlidingWindow, now: float, chains: int) -> list[float]:
    """When each of our ``chains`` admissions of ``window`` next gives room back, sorted:
    our sends in the window at their time plus the window and margin, sends about to be
    written a whole window from now, the rest now (see :mod:`mavera_tui.gates.plan`)."""
    exp = window.window + window.margin
    own = window._own  # noqa: SLF001 - this module's own class
    busy = [t + exp for t in own.since(own.bisect_right(now - exp))]
    busy += [now + exp] * window.pending
    if len(busy) > chains:  # foreign traffic took some: the latest are ours to keep
        busy = busy[len(busy) - chains :]
    return [now] * (chains - len(busy)) + busy
