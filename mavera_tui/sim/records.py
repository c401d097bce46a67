"""The API side's own records: one row per request, to compare the client's view against.

Keys are never stored, only a fingerprint (first 8 hex digits of their SHA-256).
"""

from __future__ import annotations

import hashlib
import math
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import overload

from .. import catalog


def fingerprint(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:8]


@dataclass(slots=True)
class RequestRecord:
    """What the server saw and did for one request.

    ``window_count``: requests counted in the key's window (including foreign phantoms)
    right after this arrival was, or was not, counted: the last W seconds for a sliding
    window, the current calendar bucket for a fixed one. It is the server's count at
    arrival, whatever the rate-limit headers were told to say (see ``Readings``).
    ``in_flight``: requests of this key holding the endpoint's concurrency slot right after
    this arrival (or the number that refused it). ``credits``: net credits charged (0 if
    refunded). ``status`` 0 with code ``dropped`` means the connection was dropped; ``done``
    is the loop time of completion (None while running). ``client_gone``: the client
    cancelled while the work ran. ``remaining`` / ``reset``: the X-RateLimit-Remaining and
    -Reset computed for this request's answer under the server's readings (None for a 401;
    a header fault may still have mangled or dropped them on the wire).
    """

    index: int
    t: float
    wall: float
    key: str
    method: str
    path: str
    endpoint: str | None = None
    status: int | None = None
    code: str | None = None
    credits: int = 0
    refunded: int = 0
    window_count: int = 0
    counted: bool = False
    in_flight: int = 0
    latency: float = 0.0
    fault: str | None = None
    response_id: str | None = None
    done: float | None = None
    client_gone: bool = False
    remaining: int | None = None
    reset: int | None = None


class Records:
    """Every request the simulator saw, in arrival order (iterable, indexable), with helpers.

    ``window_kind`` is the server's (``sliding`` or ``fixed``): it decides what "one window"
    means for :meth:`max_arrivals_in_window`.
    """

    def __init__(
        self, window_seconds: float = catalog.WINDOW_SECONDS, window_kind: str = "sliding"
    ):
        self._rows: list[RequestRecord] = []
        self.window_seconds = window_seconds
        self.window_kind = window_kind
        self.append = self._rows.append

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[RequestRecord]:
        return iter(self._rows)

    @overload
    def __getitem__(self, i: int) -> RequestRecord: ...
    @overload
    def __getitem__(self, i: slice) -> list[RequestRecord]: ...
    def __getitem__(self, i: int | slice) -> RequestRecord | list[RequestRecord]:
        return self._rows[i]

    def __repr__(self) -> str:
        return f"Records({self._rows!r})"

    def _select(
        self,
        endpoint: str | None = None,
        key: str | None = None,
    ) -> Iterable[RequestRecord]:
        for r in self:
            if endpoint is not None and not _matches(r, endpoint):
                continue
            if key is not None and r.key != key:
                continue
            yield r

    def count(
        self,
        status: int | None = None,
        code: str | None = None,
        endpoint: str | None = None,
        key: str | None = None,
    ) -> int:
        """Requests with this status / error code / endpoint (key or path) / key fingerprint."""
        return sum(
            1
            for r in self._select(endpoint, key)
            if (status is None or r.status == status) and (code is None or r.code == code)
        )

    def max_window_count(self, key: str | None = None) -> int:
        """Most requests ever counted in one key's window (never above the limit)."""
        return max((r.window_count for r in self._select(key=key)), default=0)

    def max_arrivals_in_window(self, key: str | None = None, window: float | None = None) -> int:
        """Most arrivals (any outcome, 401s excluded) from one key within any window.

        This is the client's offered load: above the limit means it sent more than the
        window admits (and got 429s for the excess). For a fixed-window server a window is
        a calendar bucket (``floor(wall / W)``): up to twice the limit may arrive within W
        seconds across a boundary, and that is allowed.
        """
        w = self.window_seconds if window is None else window
        best = 0
        if self.window_kind == "fixed":
            buckets: dict[tuple[str, int], int] = {}
            for r in self._select(key=key):
                if r.status == 401:
                    continue
                b = (r.key, math.floor(r.wall / w))
                buckets[b] = buckets.get(b, 0) + 1
            return max(buckets.values(), default=0)
        by_key: dict[str, deque[float]] = {}
        for r in self._select(key=key):
            if r.status == 401:
                continue
            d = by_key.setdefault(r.key, deque())
            d.append(r.t)
            while d[0] <= r.t - w:
                d.popleft()
            best = max(best, len(d))
        return best

    def max_in_flight(self, endpoint: str, key: str | None = None) -> int:
        """Most concurrent requests of one key on ``endpoint`` (catalog key or slot path)."""
        return max((r.in_flight for r in self._select(endpoint, key)), default=0)

    def total_charged(self) -> int:
        """Net credits charged over all requests (refunds already subtracted)."""
        return sum(r.credits for r in self)

    def charged_by_endpoint(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self:
            if r.credits and r.endpoint:
                out[r.endpoint] = out.get(r.endpoint, 0) + r.credits
        return out


def _matches(r: RequestRecord, endpoint: str) -> bool:
    if r.endpoint is None:
        return False
    if r.endpoint == endpoint:
        return True
    ep = catalog.ENDPOINTS.get(r.endpoint)
    return ep is not None and ep.slot_key == endpoint
