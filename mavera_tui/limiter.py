"""The sliding window: a client-side mirror of the server's per-key window, kept honest by headers.

The server admits a request if fewer than ``limit`` requests arrived in the last ``window``
seconds. We record every send, so alone on a key the mirror is exact and we can use the
whole limit without a single 429. Other clients on the same key are invisible except
through ``X-RateLimit-Remaining``: each response says how many requests the server counted
when ours arrived; whatever exceeds our own sends in that window is foreign traffic, which
we hold as a count (the most seen over the last window) plus a few slots of slack, because
another client keeps arriving as its old requests leave.

This is deliberately not the docs' token bucket: a bucket whose capacity is a full minute
lets two minutes of requests into one sliding window.
"""

from __future__ import annotations

import bisect
import math
from collections import deque

from .client import RateHeaders


class SlidingWindow:
    """Our view of the key's window. Times are loop seconds (``Clock.now()``)."""

    def __init__(self, limit: int, window: float = 60.0, margin: float | None = None):
        if limit <= 0 or window <= 0:
            raise ValueError("limit and window must be positive")
        self.limit = limit
        self.window = float(window)
        # A send is counted by the server at arrival, a hair after we record it; hold each
        # entry a little longer than the window so jitter in that delay cannot bite. Over
        # loopback one request can arrive more than 50 ms later than the next (a new
        # connection, a busy loop): with a 50 ms floor, 1 run in 4 of a 2 s window saw 11
        # arrivals for a limit of 10; with 100 ms, none in 8. (0.12 s at W = 60 s.)
        self.margin = margin if margin is not None else max(0.1, 0.002 * window)
        self.limit_learned = False
        self._own: deque[float] = deque()      # our send times, kept 2 windows for reconciling
        # Foreign traffic is a rate, not a set of requests we could watch expire: another
        # client keeps arriving as its old requests leave, and takes any room we leave. So
        # we hold the largest foreign count observed over the last window, plus some slack
        # for its arrivals between two of our observations (measured in bench/: slack 1
        # gave 2.6% 429s at 30% foreign load, slack 3 gave 0.7%).
        self._foreign_obs: deque[tuple[float, int]] = deque()
        self._hold_until = 0.0                 # server said "full until" (Reset / Retry-After)
        # Sends chosen but not yet on the wire. Each is stamped by its own task just before
        # its request is written: stamping a burst at once would put the last of hundreds
        # of requests (written one after another, ~1.4 ms of CPU each) far ahead of its
        # arrival, and the server's entry would outlive ours (seen over loopback: 429s).
        self.pending = 0
        self.last_remaining: int | None = None

    # --- bookkeeping -------------------------------------------------------------------

    def _expiry(self) -> float:
        return self.window + self.margin

    def _prune(self, now: float) -> None:
        keep_own = now - 2 * self._expiry()
        while self._own and self._own[0] <= keep_own:
            self._own.popleft()
        keep_obs = now - self.window
        while self._foreign_obs and self._foreign_obs[0][0] <= keep_obs:
            self._foreign_obs.popleft()

    def _own_in_window(self, now: float) -> int:
        cut = now - self._expiry()
        # _own is sorted (sends are recorded in time order): count entries > cut.
        return len(self._own) - bisect.bisect_right(self._own, cut)

    def _own_between(self, lo: float, hi: float) -> int:
        """Our sends in (lo, hi]."""
        return (bisect.bisect_right(self._own, hi + 1e-9)
                - bisect.bisect_right(self._own, lo))

    def foreign(self, now: float) -> int:
        """Requests of other clients we believe the server counts now."""
        self._prune(now)
        return max((f for _, f in self._foreign_obs), default=0)

    def _slack(self, foreign: int) -> int:
        return max(3, math.ceil(0.05 * foreign)) if foreign > 0 else 0

    def used(self, now: float) -> int:
        """Requests we believe the server counts right now (ours + foreign)."""
        return self._own_in_window(now) + self.pending + self.foreign(now)

    def available(self, now: float) -> int:
        """How many requests may be sent now without a 429."""
        if now < self._hold_until:
            return 0
        f = self.foreign(now)
        return max(0, self.limit - self._own_in_window(now) - self.pending - f
                   - self._slack(f))

    def next_free(self, now: float) -> float:
        """The earliest time at which ``available`` becomes positive (as far as we know)."""
        if self.available(now) > 0:
            return now
        t = max(now, self._hold_until)
        if self.available(t) > 0:
            return t
        f = self.foreign(t)
        allowed_own = self.limit - f - self._slack(f) - self.pending
        cut = t - self._expiry()
        first = bisect.bisect_right(self._own, cut)
        own_n = len(self._own) - first
        # Room appears when our (own_n - allowed_own + 1)-th oldest send leaves the window.
        idx = first + max(0, own_n - max(allowed_own, 0))
        if idx >= len(self._own):
            # Sends about to be stamped, or foreign traffic, fill the window by themselves.
            return t + self._expiry()
        return max(t, self._own[idx] + self._expiry())

    def oldest_expiry(self, now: float) -> float | None:
        """When our oldest send in the window leaves it (None if we have none in it)."""
        self._prune(now)
        i = bisect.bisect_right(self._own, now - self._expiry())
        return self._own[i] + self._expiry() if i < len(self._own) else None

    def hold_remaining(self, now: float) -> float:
        return max(0.0, self._hold_until - now)

    # --- events --------------------------------------------------------------------------

    def reserve(self) -> None:
        """Count a send that has been chosen but not yet written (see ``pending``)."""
        self.pending += 1

    def release(self) -> None:
        """A reserved send will not happen after all."""
        self.pending = max(0, self.pending - 1)

    def record_send(self, now: float, *, reserved: bool = False) -> None:
        """Count one of our requests, written at ``now`` (``reserved``: it was reserved)."""
        if reserved:
            self.release()
        self._own.append(now)

    def hold(self, until: float) -> None:
        """The server told us the key is full until ``until`` (loop time)."""
        self._hold_until = max(self._hold_until, until)

    def observe(self, sent_at: float, now: float, headers: RateHeaders,
                wall_now: float | None = None) -> None:
        """Reconcile with a response to a request we sent at ``sent_at``."""
        if headers.limit is not None:
            self.limit = headers.limit
            self.limit_learned = True
        if headers.remaining is None:
            return
        self.last_remaining = headers.remaining
        self._prune(now)
        server_count = self.limit - headers.remaining
        if now - sent_at <= self.window / 10:
            # Only a fresh answer says something about the window as it is. The server
            # counts at arrival (a limiter in front of the handler); a server that counts
            # when answering shows more than that, which we over-read as foreign: safe.
            own_then = self._own_between(sent_at - self.window, sent_at)
            foreign_then = max(0, server_count - own_then)
            if foreign_then or self._foreign_obs:
                self._foreign_obs.append((now, foreign_then))
        # X-RateLimit-Reset is deliberately not used. The docs' "when the window resets" has
        # several readings in a sliding window (oldest entry + W, newest + W, a fixed
        # minute); holding the key on the wrong one would idle for up to a whole window.
        # The mirror is exact for our own traffic, and after a 429 Retry-After is explicit.
