"""The window gate: the key's sliding window, the key-wide 429 hold, and the probe.

It wraps :class:`mavera_tui.limiter.SlidingWindow` (which counts our sends and mirrors
the server's count) with what the dispatcher decides on top of it. After a 429 without a
usable Retry-After we cannot know when the key is free: when the hold ends, one job goes
alone (a probe) and the rest follow only when it is not answered 429 (or no 429 came
within ``probe_grace``), so a server that still refuses costs one 429 per hold, not one
per queued job.
"""

from __future__ import annotations

from collections import deque

from ..api_types import RateHeaders
from ..limiter import SlidingWindow
from .model import Job
from .retry import backoff


class WindowGate:
    """May a job go now on the key's window, and when might the window open?"""

    def __init__(self, window: SlidingWindow) -> None:
        self.window = window
        self.probe_needed = False
        self.probe_job: Job | None = None
        self.probe_at = 0.0
        self.probe_grace = min(2.0, window.window / 30)
        self.recent_429: deque[float] = deque()  # times of 429s in the last minute
        self._probe_refused = False  # the 429 being handled refused an early-Reset probe
        # The key's limit unknown and no balance read before the first job to learn it
        # from: one job goes first, alone, and its answer's X-RateLimit-Limit sizes the
        # first burst (a burst at a guessed limit can 429 on a smaller or busier key).
        self.learning = False
        self.learner: Job | None = None
        self.learner_at = 0.0

    def room(self, now: float) -> int:
        """How many jobs may be admitted now (0 while a probe is out, or the key is held
        or full). A probe that drew no 429 within the grace opens the key."""
        avail = self.window.available(now)
        if avail <= 0:
            return 0
        if self.learning:
            if self.window.limit_learned or (
                self.learner is not None and now > self.learner_at + self.window.window / 10
            ):
                self.learning, self.learner = False, None  # learned (or no answer soon)
            else:
                return 0 if self.learner is not None else 1
        if self.probe_job is not None:
            if now < self.probe_at + self.probe_grace:
                return 0
            self.probe_job, self.probe_needed = None, False  # no quick 429: key is open
        return avail

    def admit(self, job: Job, now: float) -> bool:
        """Take an admission for ``job``; True if it goes alone as the probe (admit no
        more now)."""
        self.window.reserve()  # stamped by the job's own task as it is written
        if self.learning and self.learner is None:
            self.learner, self.learner_at = job, now
            return True
        if self.probe_needed:
            self.probe_job, self.probe_at = job, now
            return True
        return False

    def answered(self, job: Job, rate_limited: bool) -> None:
        """A job's answer came: a probe not refused opens the key; the first job's (see
        ``learning``) ends the learning, whatever it said."""
        if job is self.learner:
            self.learning, self.learner = False, None
        if job is self.probe_job:
            self.probe_job = None
            if not rate_limited:
                self.probe_needed = False

    def next_open(self, now: float, waiting: bool) -> list[float]:
        """Times at which the window may let a job through (``waiting``: jobs are ready
        and not paused). Room that is held back for capped jobs is looked at again when
        the window slides."""
        times: list[float] = []
        if self.learner is not None:
            times.append(self.learner_at + self.window.window / 10)
        if self.probe_job is not None:
            times.append(self.probe_at + self.probe_grace)
        if waiting:
            if self.window.available(now) <= 0:
                times.append(self.window.next_free(now))
            else:
                oldest = self.window.oldest_expiry(now)
                if oldest is not None:
                    times.append(oldest)
        return times

    def note_429(self, now: float, sent_at: float, retry_after: float | None) -> bool:
        """Count a window 429; returns whether the key was already held (then it is the
        same event as the one that held it)."""
        r = self.recent_429
        r.append(now)
        while r and r[0] < now - 60:
            r.popleft()
        already_held = self.window.hold_remaining(now) > 0
        if self.window.calendar.refused(sent_at):
            # The probe of an early X-RateLimit-Reset (fixed_window.py): the server slides
            # after all. Not a sign that it counts our sends late.
            self._probe_refused = True
            return already_held
        if not already_held and (
            retry_after is None or retry_after <= max(1.0, self.window.window / 10)
        ):
            # We sent it because the mirror had room: a short refusal means the server
            # counts our sends later than we stamp them (a long one is something else).
            self.window.unexpected_429(sent_at)
        return already_held

    def hold_key(
        self,
        headers: RateHeaders,
        now: float,
        wall: float,
        *,
        base: float,
        cap: float,
        max_retry_after: float,
    ) -> float:
        """Hold the whole key after a 429; returns for how long."""
        ra = headers.retry_after
        room_at: float | None = None  # when the mirror has room, if it is trusted over ra
        if self._probe_refused and ra is not None and 0 < ra <= max_retry_after:
            # Refused the one probe of an early Reset: the window is as our mirror has it
            # (exact until then).
            self._probe_refused = False
            room_at = self.window.sliding_next_free(now)
        elif (
            ra is not None
            and 1 <= ra <= max_retry_after
            and ra == int(ra)
            and self.window.foreign(now) > 0
        ):
            # Another client took room the mirror had for us, and this answer's Remaining
            # has just said how much (observe). Holding the key Retry-After's full length
            # cost each turn of the window up to 1 s at 30% foreign traffic (basic tier,
            # W 6 s: the next turn went at 6.9 s, the batch ended at 1.11 of its bound).
            room_at = self.window.next_free(now)
        if room_at is not None and ra is not None:
            # Retry-After is whole seconds, so the key frees in (ra - 1, ra]: wait for the
            # mirror's room, no earlier than ra - 1.
            ra = min(ra, max(ra - 1.0, room_at - now))
        if ra is None or ra <= 0 or ra > max_retry_after:
            # No usable Retry-After (absent, garbage, zero/negative, or over the maximum,
            # which the caller reports): wait until our mirror and the 429's own Reset say
            # the window has room, and at least a growing back-off so a confused server is
            # not hammered, but never longer than the maximum (a bogus 10^9 s would hang us).
            streak = len(self.recent_429)
            ra = max(
                self.window.next_free(now) - now, backoff(streak + 1, base, cap, max_doublings=8)
            )
            if headers.reset_at is not None:  # whole seconds; clocks differ a little
                ra = max(ra, headers.reset_at - wall + self.window.margin)
            ra = min(ra, max_retry_after)
            self.probe_needed = True
        self.window.hold(now + ra)
        return ra
