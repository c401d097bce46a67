"""A server that counts calendar windows, found out by one request and then used.

The docs say the window slides ("measured in a sliding 60-second window"), but a server
may count fixed calendar minutes instead: the whole limit then comes back at each
boundary, up to a window earlier than a sliding mirror gives it back (measured: 1.29-1.31
of such a server's bound, sliding, against its 10% target).

The boundary shows in ``X-RateLimit-Reset`` ("Unix timestamp when the window resets"),
but a *sliding* server may report the next calendar boundary there as well (a reading the
docs allow), and on it the room does not come back at that time. So an early Reset is
believed only after one request proves it: when our mirror says the window is full and
Reset says it resets earlier, one request goes at that time (the probe). Its answer
tells the two apart:

- answered with a ``Remaining`` that counts only what we sent since the boundary: the
  server counts calendar windows; from then on the mirror counts them too;
- a 429, or a count that still holds the sends before the boundary: the window slides;
  we never probe again. That costs one 429 in a run, on that server only.

A window 429 later, while counting calendar windows, sends the mirror back to sliding for
good: a wrong belief costs one refusal, not one per window.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .api_types import RateHeaders

if TYPE_CHECKING:
    from .limiter import SlidingWindow


class CalendarSense:
    """Whether the key's server counts calendar windows, and their count if it does.
    Times are loop seconds; ``mirror`` is the :class:`SlidingWindow` this belongs to."""

    def __init__(self, mirror: SlidingWindow) -> None:
        self.m = mirror
        self.boundary: float | None = None  # a proven boundary: counting calendar windows
        self.candidate: float | None = None  # an early Reset not yet tried
        self.probe_sent: float | None = None  # the probe's stamp while it is out
        self.probe_reserved = False  # the probe is chosen, not yet written
        self._offered = False  # the last ``probe_room`` offered the probe
        self.refuted = False  # the server slides (or misled us once): never again
        self._judged: float | None = None  # the last probe's stamp, once answered
        self._foreign_k = -1  # calendar window of the foreign count below
        self._foreign_n = 0  # the most the server counted beyond ours in it

    @property
    def active(self) -> bool:
        """Counting calendar windows (a boundary was proven)."""
        return self.boundary is not None

    # --- calendar windows ----------------------------------------------------------------

    def _index(self, t: float) -> int:
        assert self.boundary is not None
        return math.floor((t - self.boundary) / self.m.window)

    def start(self, t: float) -> float:
        """Where the calendar window holding ``t`` began."""
        assert self.boundary is not None
        return self.boundary + self._index(t) * self.m.window

    def _own_counted(self, now: float) -> int:
        """Our sends the server may count in the calendar window holding ``now``: those
        written in it, and those written within the margin before it (a send written just
        before a boundary may be counted just after it)."""
        own = self.m._own
        return len(own) - own.bisect_right(self.start(now) - self.m.margin)

    def foreign(self, now: float) -> int:
        """Other clients' requests in the current calendar window (the most seen)."""
        return self._foreign_n if self._foreign_k == self._index(now) else 0

    def available(self, now: float) -> int:
        m = self.m
        f = self.foreign(now)
        return max(0, m.limit - self._own_counted(now) - m.pending - f - m._slack(f))

    def next_boundary(self, now: float) -> float:
        return self.start(now) + self.m.window

    def next_free(self, now: float) -> float:
        return now if self.available(now) > 0 else self.next_boundary(now)

    # --- the probe (while sliding) --------------------------------------------------------

    def probe_room(self, now: float, base: int) -> int:
        """With the sliding mirror's room ``base``: 1 more if the probe may go now."""
        self._offered = False
        if base > 0 or not self._probe_due(now):
            return base
        self._offered = True
        return 1

    def _probe_due(self, now: float) -> bool:
        at = self.probe_at(now)
        return at is not None and at <= now

    def probe_at(self, now: float) -> float | None:
        """When the probe may go (None: no probe pending)."""
        if self.refuted or self.candidate is None or self.probe_sent is not None:
            return None
        if self.probe_reserved or self.m.pending:
            # A write on its way (then its answer) wakes the dispatcher; with none pending
            # the next write is the probe's.
            return None
        return max(now, self.candidate + self.m.margin)

    def reserved(self) -> None:
        """A send was chosen: if the room was the probe's, it is the probe."""
        if self._offered:
            self._offered, self.probe_reserved = False, True

    def released(self) -> None:
        """A chosen send will not happen: a probe among them may be tried again."""
        self.probe_reserved = False

    def written(self, t: float) -> None:
        if self.probe_reserved:
            self.probe_reserved, self.probe_sent = False, t

    # --- answers --------------------------------------------------------------------------

    def observe(self, sent_at: float, now: float, headers: RateHeaders, wall_now: float) -> bool:
        """Learn from an answer; True if it was handled here (the sliding mirror's own
        reconciling does not apply to a calendar window)."""
        m = self.m
        if self.probe_sent is not None and abs(sent_at - self.probe_sent) < 1e-9:
            self._judge_probe(now, headers)
            return self.active
        if self.active:
            if headers.remaining is not None and now - sent_at <= m.window / 10:
                k = self._index(now)
                if k == self._index(sent_at):
                    own = self._own_counted(now)
                    f = max(0, m.limit - headers.remaining - own)
                    if k != self._foreign_k:
                        self._foreign_k, self._foreign_n = k, f
                    else:
                        self._foreign_n = max(self._foreign_n, f)
            return True
        if self.refuted or headers.reset_at is None or headers.remaining is None:
            return False
        if headers.remaining > 0 or self.probe_sent is not None or self.probe_reserved:
            return False
        # The server says the window is full: does it say it empties earlier than our
        # mirror lets it? (A sliding server's Reset is its oldest entry + W or later.)
        # Compared with when our oldest send in the window leaves it, not with when the
        # mirror has room: sends spread over the window free room one by one, later.
        # Both as the server saw them when it counted this request (its arrival): a slow
        # answer's Reset may have passed by now.
        # A Reset already past when the answer came still counts: a burst sent just before
        # a boundary is answered after it (indie v-fixed-burst at phase 5.91 of 6 s: never
        # probed, a window lost); the probe then goes at once. One before our send is
        # nonsense (or another clock): ignored.
        reset = headers.reset_at - wall_now + now
        if now - sent_at > m.window / 10 or reset <= sent_at:
            return False
        oldest = m.oldest_expiry(sent_at)
        if oldest is not None and reset + m.margin < oldest - 0.02 * m.window:
            self.candidate = reset
        return False

    def _judge_probe(self, now: float, headers: RateHeaders) -> None:
        m = self.m
        assert self.probe_sent is not None and self.candidate is not None
        ok = False
        if headers.remaining is not None and headers.remaining > 0:
            counted = m.limit - headers.remaining
            since = m._own_between(self.candidate - m.margin, now)
            # "Remaining" may be read before or after counting the probe: one either way.
            ok = counted <= since + 1
        self._judged = self.probe_sent
        if ok:
            self.boundary = self.candidate
        else:
            self.refuted = True
        self.probe_sent = self.candidate = None

    def refused(self, sent_at: float) -> bool:
        """A window 429 for a send of ours; True if it was the probe (not a sign that the
        server counts late). A 429 while counting calendar windows ends that belief."""
        for probe in (self.probe_sent, self._judged):
            if probe is not None and abs(sent_at - probe) < 1e-9:
                self.refuted, self.probe_sent, self.candidate = True, None, None
                return True
        if self.active:
            self.boundary, self.refuted = None, True
        return False
