"""The key's window as the simulator counts it: sliding (arrivals in the last W seconds,
foreign phantom arrivals included) or fixed (calendar buckets of W), and a key's state."""

from __future__ import annotations

import math
from collections import deque


class _Window:
    """One key's sliding window: our counted arrivals and foreign phantom arrivals."""

    __slots__ = ("limit", "w", "real", "phantom", "rpm", "next_phantom")

    def __init__(self, limit: int, w: float):
        self.limit = limit
        self.w = w
        self.real: deque[float] = deque()
        self.phantom: deque[float] = deque()
        self.rpm = 0.0
        self.next_phantom = 0.0

    def _evict(self, t: float) -> None:
        cutoff = t - self.w
        real, phantom = self.real, self.phantom
        while real and real[0] <= cutoff:
            real.popleft()
        while phantom and phantom[0] <= cutoff:
            phantom.popleft()

    def settle(self, now: float, wall: float, foreign_rpm: float) -> None:
        """Bring the window to ``now``: add due phantom arrivals, drop what left the window."""
        if foreign_rpm != self.rpm:
            self.rpm = foreign_rpm
            self.next_phantom = now
        if foreign_rpm > 0:
            interval = 60.0 / foreign_rpm  # per minute
            cutoff = now - self.w
            if self.next_phantom <= cutoff:  # long idle: skip arrivals that already left
                skip = math.floor((cutoff - self.next_phantom) / interval) + 1
                self.next_phantom += skip * interval
            while self.next_phantom <= now:
                tp = self.next_phantom
                self._evict(tp)
                if len(self.real) + len(self.phantom) < self.limit:
                    self.phantom.append(tp)
                self.next_phantom = tp + interval
        self._evict(now)

    @property
    def count(self) -> int:
        return len(self.real) + len(self.phantom)

    def oldest(self) -> float | None:
        if self.real and self.phantom:
            return min(self.real[0], self.phantom[0])
        if self.real:
            return self.real[0]
        if self.phantom:
            return self.phantom[0]
        return None

    def admit_wait(self, now: float, wall: float) -> float:
        """Seconds until a full window admits a request: its oldest entry leaves."""
        oldest = self.oldest()
        assert oldest is not None
        return oldest + self.w - now

    def holds(self, t: float, wall_at: float, now: float) -> bool:
        """Whether an arrival counted at loop time ``t`` (Unix ``wall_at``) is still in."""
        return t > now - self.w


class _FixedWindow(_Window):
    """One key's calendar window: buckets of W aligned to multiples of W in Unix time.

    Entries are loop times, as in the sliding window, but they all belong to the current
    bucket: at each boundary the count starts from zero.
    """

    __slots__ = ("bucket",)

    def __init__(self, limit: int, w: float):
        super().__init__(limit, w)
        self.bucket: int | None = None

    def settle(self, now: float, wall: float, foreign_rpm: float) -> None:
        w = self.w
        bucket = math.floor(wall / w)
        start = now - (wall - bucket * w)  # the bucket's start in loop time
        if bucket != self.bucket:
            self.bucket = bucket
            self.real.clear()
            self.phantom.clear()
        if foreign_rpm != self.rpm:
            self.rpm = foreign_rpm
            self.next_phantom = now
        if foreign_rpm > 0:
            interval = 60.0 / foreign_rpm
            if self.next_phantom < start:  # arrivals in earlier buckets no longer count
                self.next_phantom += math.ceil((start - self.next_phantom) / interval) * interval
            while self.next_phantom <= now:
                if len(self.real) + len(self.phantom) < self.limit:
                    self.phantom.append(self.next_phantom)
                self.next_phantom += interval

    def admit_wait(self, now: float, wall: float) -> float:
        """Seconds until the next boundary, when the count starts from zero."""
        return (math.floor(wall / self.w) + 1) * self.w - wall

    def holds(self, t: float, wall_at: float, now: float) -> bool:
        return math.floor(wall_at / self.w) == self.bucket


class _KeyState:
    __slots__ = ("fp", "window", "inflight")

    def __init__(self, fp: str, limit: int, w: float, kind: str = "sliding"):
        self.fp = fp
        self.window = (_FixedWindow if kind == "fixed" else _Window)(limit, w)
        self.inflight: dict[str, int] = {}
