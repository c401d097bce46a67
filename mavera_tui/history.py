"""Chart history: bounded, bucketed series derived from successive Snapshots.

Headless (never imports textual) so that the live monitor, the replay and the reports share
it. Rates come from the deltas of the snapshots' cumulative counters, so a recording of
snapshots alone is enough to rebuild every chart. Each chart has a version number that
changes only when the data that chart shows changed, so a pane can skip redrawing.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from .snapshot import (
    BACKOFF,
    IN_FLIGHT,
    QUEUED,
    WAITING_CREDITS,
    WAITING_SLOT,
    WAITING_WINDOW,
    Snapshot,
)

#: The states the queue chart splits by, in stacking order.
QUEUE_STATES: tuple[str, ...] = (QUEUED, WAITING_WINDOW, WAITING_SLOT, BACKOFF, WAITING_CREDITS)
#: Chart names, each with its own version: requests, credits, errors (429s and retries), queue.
CHARTS: tuple[str, ...] = ("requests", "credits", "errors", "queue")


@dataclass
class _Bucket:
    start: float
    requests: int = 0
    credits: int = 0
    r429: int = 0
    retries: int = 0
    queue: dict[str, int] = field(default_factory=dict)
    in_flight: int = 0


class History:
    """Ring buffers of ``bucket_s``-second buckets covering the last ``span_s`` seconds.

    Feed it with ``add(snapshot)`` in time order. Snapshots whose counters go backwards (an
    engine restart) restart the deltas instead of producing negative rates.
    """

    def __init__(self, bucket_s: float = 10.0, span_s: float = 900.0):
        if bucket_s <= 0 or span_s < bucket_s:
            raise ValueError("need bucket_s > 0 and span_s >= bucket_s")
        self.bucket_s = float(bucket_s)
        self.span_s = float(span_s)
        self.size = int(round(span_s / bucket_s))
        self._buckets: deque[_Bucket] = deque(maxlen=self.size)
        self._prev: Snapshot | None = None
        self._minute: deque[tuple[float, int, int]] = deque()  # (t, requests, credits) deltas
        self.now: float = 0.0
        self.limit: int = 0
        #: Per-chart version; ``version`` is their sum (changes when any chart changed).
        self.versions: dict[str, int] = dict.fromkeys(CHARTS, 0)
        self._last_series: dict[str, tuple] = {}
        self._cache: dict[str, tuple] = {}

    @property
    def version(self) -> int:
        return sum(self.versions.values())

    def __len__(self) -> int:
        return len(self._buckets)

    # --- feeding -----------------------------------------------------------------------

    def add(self, snap: Snapshot) -> None:
        """Account one snapshot: counter deltas into the current bucket, gauges replaced."""
        prev = self._prev
        if prev is not None and snap.t < prev.t:
            return  # out of order: ignore rather than corrupt the buckets
        self.now = snap.t
        self.limit = snap.limit
        bucket = self._bucket_for(snap.t)
        if prev is not None:
            d_req = _delta(snap.requests_total, prev.requests_total)
            d_cred = _delta(snap.credits_used_total, prev.credits_used_total)
            bucket.requests += d_req
            bucket.credits += d_cred
            self._minute.append((snap.t, d_req, d_cred))
        while self._minute and self._minute[0][0] <= snap.t - 60.0:
            self._minute.popleft()
        if prev is not None:
            bucket.r429 += _delta(snap.responses_429_total, prev.responses_429_total)
            bucket.retries += _delta(snap.retries_total, prev.retries_total)
        bucket.queue = {s: int(snap.queue.get(s, 0)) for s in QUEUE_STATES}
        bucket.in_flight = int(snap.queue.get(IN_FLIGHT, 0))
        self._prev = snap
        self._cache.clear()
        self._bump_versions()

    def _bucket_for(self, t: float) -> _Bucket:
        start = (t // self.bucket_s) * self.bucket_s
        if self._buckets and self._buckets[-1].start == start:
            return self._buckets[-1]
        if self._buckets:
            last = self._buckets[-1]
            # Fill the gap with empty buckets (gauges carried forward), at most one span.
            gap = int(round((start - last.start) / self.bucket_s)) - 1
            first = max(0, gap - self.size)
            for i in range(first, gap):
                self._buckets.append(
                    _Bucket(
                        last.start + (i + 1) * self.bucket_s,
                        queue=dict(last.queue),
                        in_flight=last.in_flight,
                    )
                )
        b = _Bucket(start)
        if self._buckets:
            b.queue = dict(self._buckets[-1].queue)
            b.in_flight = self._buckets[-1].in_flight
        self._buckets.append(b)
        return b

    def _bump_versions(self) -> None:
        current = {
            "requests": (tuple(self.requests_per_minute()), self.limit),
            "credits": tuple(self.credits_per_minute()),
            "errors": (tuple(self.per_bucket("r429")), tuple(self.per_bucket("retries"))),
            "queue": tuple(tuple(v) for v in self.queue_depth().values()),
        }
        for name, data in current.items():
            if self._last_series.get(name) != data:
                self._last_series[name] = data
                self.versions[name] += 1

    # --- series ------------------------------------------------------------------------

    def ages(self) -> list[float]:
        """X values: seconds before now of each bucket's end (negative; newest last)."""
        n = len(self._buckets)
        return [-(n - 1 - i) * self.bucket_s for i in range(n)]

    def per_bucket(self, counter: str) -> list[int]:
        """Raw per-bucket deltas of ``requests``, ``credits``, ``r429`` or ``retries``."""
        return [getattr(b, counter) for b in self._buckets]

    def _rolling_minute(self, counter: str) -> list[float]:
        key = "roll:" + counter
        if key not in self._cache:
            per = self.per_bucket(counter)
            k = max(1, int(round(60.0 / self.bucket_s)))
            out, run = [], 0
            for i, v in enumerate(per):
                run += v
                if i >= k:
                    run -= per[i - k]
                out.append(float(run))
            if out and counter in ("requests", "credits"):
                # Buckets are aligned to the clock, so the newest point would cover 50 to
                # 60 s; the last minute of snapshot deltas gives the exact 60 s ending now,
                # which is what the server's window and the gauge count.
                idx = 0 if counter == "requests" else 1
                out[-1] = float(sum(d[idx + 1] for d in self._minute))
            self._cache[key] = tuple(out)
        return list(self._cache[key])

    def requests_per_minute(self) -> list[float]:
        """Requests in the 60 s ending at each bucket (what the server's window counts)."""
        return self._rolling_minute("requests")

    def credits_per_minute(self) -> list[float]:
        """Credits charged in the 60 s ending at each bucket."""
        return self._rolling_minute("credits")

    def queue_depth(self) -> dict[str, list[int]]:
        """Jobs per waiting state at the end of each bucket."""
        return {s: [b.queue.get(s, 0) for b in self._buckets] for s in QUEUE_STATES}

    def in_flight(self) -> list[int]:
        return [b.in_flight for b in self._buckets]

    def recent(self, counter: str, seconds: float = 60.0) -> int:
        """Sum of ``counter`` over the buckets that end within the last ``seconds``."""
        k = max(1, int(round(seconds / self.bucket_s)))
        return sum(self.per_bucket(counter)[-k:])


def _delta(now: int, before: int) -> int:
    return now - before if now >= before else 0
