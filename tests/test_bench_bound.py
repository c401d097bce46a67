"""The benchmark's makespan lower bound (bench/bound.py), on hand-computed cases."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "bench" / "bound.py"
_spec = importlib.util.spec_from_file_location("bench_bound", _PATH)
assert _spec is not None and _spec.loader is not None
bound = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bound)


def test_fewer_jobs_than_the_limit_is_the_slowest_latency() -> None:
    # j = 0 only: 3 jobs all fit in the first window; the slowest ends at 5.
    assert bound.window_bound([1.0, 5.0, 2.0], limit=10, window=60.0) == 5.0


def test_window_term_uses_the_right_order_statistic() -> None:
    # N=5, L=2, W=10, sorted latencies 1,2,3,4,50.
    # j=0: 0 + l(5) = 50; j=1: 10 + l(3) = 13; j=2: 20 + l(1) = 21. Max 50.
    assert bound.window_bound([4, 1, 50, 3, 2], limit=2, window=10.0) == 50.0
    # Same but the slow job is fast: 1,2,3,4,5 -> j=0: 5, j=1: 13, j=2: 21.
    assert bound.window_bound([5, 1, 4, 3, 2], limit=2, window=10.0) == 21.0


def test_exact_multiple_of_the_limit_stops_before_an_empty_window() -> None:
    # N=4, L=2, W=6: j=0: l(4)=0.4; j=1: 6 + l(2)=6.2; j=2 would leave 0 jobs: not counted.
    assert bound.window_bound([0.1, 0.2, 0.3, 0.4], limit=2, window=6.0) == pytest.approx(6.2)


def test_a_burst_of_five_windows() -> None:
    # 600 jobs of 0.1 s at 120 per 6 s: the last 120 cannot start before 4 windows: 24.1.
    assert bound.window_bound([0.1] * 600, limit=120, window=6.0) == pytest.approx(24.1)


def test_the_cap_term_wins_when_a_capped_endpoint_is_heavy() -> None:
    lat = [0.1] * 10 + [9.0, 9.0, 9.0, 9.0, 9.0, 9.0]
    # window: 16 jobs, L=100 -> j=0 only: 9.0. Cap 3 over six 9 s jobs: 54/3 = 18.
    assert bound.lower_bound(lat, 100, 6.0, [(3, [9.0] * 6)]) == pytest.approx(18.0)
    # and the window term wins when the cap is generous
    assert bound.lower_bound(lat, 100, 6.0, [(10, [9.0] * 6)]) == pytest.approx(9.0)


def test_no_jobs_and_bad_input() -> None:
    assert bound.lower_bound([], 10, 6.0) == 0.0
    with pytest.raises(ValueError):
        bound.window_bound([1.0], 0, 6.0)
    with pytest.raises(ValueError):
        bound.cap_bound([(0, [1.0])])
