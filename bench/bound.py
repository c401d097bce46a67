"""The makespan lower bound of issue 8, as a pure function (unit-tested in tests/).

With ``N`` jobs, ``limit`` requests per sliding window of ``window`` seconds and the jobs'
latencies sorted ascending ``l(1) <= ... <= l(N)``: whatever the order, at most ``j*limit``
jobs can have been sent before ``j*window``, so at least ``N - j*limit`` jobs are sent at or
after ``j*window`` and the slowest of them ends no earlier than ``j*window + l(N - j*limit)``.
That gives ``max over j of (j*window + l(N - j*limit))`` for every ``j`` with
``N - j*limit >= 1``. Each endpoint with a concurrency cap ``c`` needs at least
``sum(its latencies) / c``. The bound is the larger of the two.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def window_bound(latencies: Sequence[float], limit: int, window: float) -> float:
    """``max over j of (j*window + the (N - j*limit)-th smallest latency)`` (0 if no jobs)."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    lat = sorted(latencies)
    n = len(lat)
    best = 0.0
    j = 0
    while n - j * limit >= 1:
        best = max(best, j * window + lat[n - j * limit - 1])
        j += 1
    return best


def cap_bound(capped: Iterable[tuple[int, Sequence[float]]]) -> float:
    """The largest ``sum(latencies) / cap`` over ``(cap, latencies)`` pairs (0 if none)."""
    best = 0.0
    for cap, lats in capped:
        if cap < 1:
            raise ValueError("a concurrency cap must be at least 1")
        best = max(best, sum(lats) / cap)
    return best


def lower_bound(
    latencies: Sequence[float],
    limit: int,
    window: float,
    capped: Iterable[tuple[int, Sequence[float]]] = (),
) -> float:
    """The makespan lower bound: the larger of :func:`window_bound` and :func:`cap_bound`.

    ``latencies`` are all N jobs' latencies (each job once, its successful attempt);
    ``capped`` gives, for each endpoint with a concurrency cap, ``(cap, its jobs' latencies)``.
    """
    return max(window_bound(latencies, limit, window), cap_bound(capped))
