"""The limiter: alone on a key the scheduler fills the sliding window exactly and never over it;
with someone else on the key it reads them from the headers and stays (almost) 429-free.

Everything runs in fast-forwarded loop time (run_virtual): an hour of traffic in milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest

from mavera_tui.client import RateHeaders
from mavera_tui.clock import run_virtual
from mavera_tui.jobs import JobSpec
from mavera_tui.limiter import SlidingWindow
from mavera_tui.sim import Faults

KEY = "mvra_test_limiter"


def cheap(n: int, prefix: str = "r") -> list[JobSpec]:
    return [JobSpec(f"{prefix}{i}", "POST", "/responses", {"input": f"q{i}"}) for i in range(n)]


def run_batch(
    make_rig: Callable[..., Any],
    specs: list[JobSpec],
    *,
    limit: int,
    window: float = 60.0,
    faults: Faults | None = None,
    seed: int = 1,
) -> tuple[Any, dict[str, Any]]:
    async def main() -> tuple[Any, dict[str, Any]]:
        rig = await make_rig(
            {"limit": limit, "window_seconds": window, "seed": seed, "faults": faults or Faults()},
            key=KEY,
            window_seconds=window,
            seed=seed,
        )
        await rig.sched.submit_many(specs)
        await rig.sched.wait_idle()
        await rig.close()
        return rig.sim, rig.sched.summary()

    return run_virtual(main())


def ours(sim: Any) -> list[Any]:
    return [r for r in sim.records if r.key != "foreign"]


@pytest.mark.parametrize(("limit", "n"), [(10, 95), (60, 400)])
def test_alone_on_the_key_the_window_is_never_exceeded_and_fully_used(
    make_rig, limit: int, n: int
) -> None:
    sim, summary = run_batch(make_rig, cheap(n), limit=limit)
    assert summary["succeeded"] == n
    recs = ours(sim)
    assert sim.records.count(status=429) == 0
    assert sim.records.max_arrivals_in_window() <= limit
    assert sim.records.max_window_count() <= limit
    # The first window admits exactly `limit` sends (the balance read is one of them).
    t0 = recs[0].t
    assert sum(1 for r in recs if r.t < t0 + 60.0) == limit
    # And every later window is full too: the number of windows the batch spans is the
    # fewest the limit allows (requests = jobs + the balance read).
    windows_used = len({math.floor((r.t - t0) / 60.0) for r in recs})
    assert abs(windows_used - math.ceil(len(recs) / limit)) <= 1
    # Makespan close to the window bound: floor((N-1)/L) windows plus the last latency.
    bound = ((len(recs) - 1) // limit) * 60.0
    assert summary["makespan_s"] <= bound + 60.0 * 0.03 + 5.0


def test_a_short_window_is_honoured_the_same_way(make_rig) -> None:
    sim, summary = run_batch(make_rig, cheap(50), limit=10, window=2.0)
    assert summary["succeeded"] == 50
    assert sim.records.count(status=429) == 0
    assert sim.records.max_arrivals_in_window(window=2.0) <= 10


def test_under_30_percent_foreign_traffic_429s_stay_under_1_percent_and_all_jobs_succeed(
    make_rig,
) -> None:
    limit = 60
    sim, summary = run_batch(
        make_rig, cheap(600), limit=limit, faults=Faults(foreign_rpm=int(limit * 0.3)), seed=7
    )
    assert summary["succeeded"] == 600 and summary["failed"] == 0
    recs = ours(sim)
    n429 = sum(1 for r in recs if r.status == 429)
    assert n429 < 0.01 * len(recs), (n429, len(recs))
    # The API side never counted more than the limit (ours + theirs).
    assert sim.records.max_window_count() <= limit


# --- SlidingWindow unit behaviour ------------------------------------------------------------


def test_observe_reads_foreign_requests_from_remaining_and_available_shrinks() -> None:
    w = SlidingWindow(10, 60.0)
    w.record_send(100.0)
    w.record_send(100.5)
    assert w.foreign(101.0) == 0
    assert w.available(101.0) == 8
    # The server counted 5 (Remaining 5 of 10) when our second arrived: 3 are not ours.
    w.observe(100.5, 101.0, RateHeaders(10, 5, None, None))
    assert w.foreign(101.0) == 3
    assert w.used(101.0) == 5
    assert w.available(101.0) < 8 - 3 + 1  # 3 foreign and some slack held back
    assert w.available(101.0) >= 0
    # A later answer matching our own count does not forget them at once ...
    w.record_send(102.0)
    w.observe(102.0, 102.2, RateHeaders(10, 4, None, None))
    assert w.foreign(102.2) >= 3
    # ... but they age out after a window without more evidence.
    assert w.foreign(102.2 + 61.0) == 0


def test_a_remaining_that_matches_our_own_sends_means_no_foreign_traffic() -> None:
    w = SlidingWindow(10, 60.0)
    for t in (10.0, 10.1, 10.2):
        w.record_send(t)
    w.observe(10.2, 10.3, RateHeaders(10, 7, None, None))
    assert w.foreign(10.3) == 0
    assert w.available(10.3) == 7


def test_a_stale_answer_says_nothing_about_the_window_now() -> None:
    w = SlidingWindow(10, 60.0)
    w.record_send(0.0)
    # Answered 30 s after sending (window/10 = 6 s): not used to infer foreign traffic.
    w.observe(0.0, 30.0, RateHeaders(10, 2, None, None))
    assert w.foreign(30.0) == 0


def _growing_foreign(w: SlidingWindow, counts: list[tuple[float, int]]) -> None:
    """One send of ours at each ``t``, answered 50 ms later with the server counting our
    sends so far plus ``foreign`` of another client's."""
    for n, (t, foreign) in enumerate(counts, start=1):
        w.record_send(t)
        w.observe(t, t + 0.05, RateHeaders(w.limit, w.limit - n - foreign, None, None))


def test_another_client_growing_steadily_is_left_its_rate_over_a_window() -> None:
    # 30 arrivals a second of another client, seen only 3 s into a 6 s window (90 of it):
    # by the window's end it takes 180, and room we hold for later is taken before then.
    w = SlidingWindow(600, 6.0)
    _growing_foreign(w, [(1.0 + 0.5 * i, 30 + 15 * i) for i in range(5)])
    assert w.foreign_max_seen == 90
    assert 170 <= w.foreign(3.1) <= 190
    assert w.available(3.1) <= 600 - 170 - 5
    # Kept while it is seen; once no longer seen for a window, none is claimed.
    assert w.foreign(3.1 + 6.5) == 0


def test_a_burst_of_another_client_is_not_read_as_a_rate() -> None:
    # 100 at once, then nothing more: the most seen, not a rate times a window.
    w = SlidingWindow(600, 6.0)
    _growing_foreign(w, [(1.0, 0), (1.5, 100), (2.0, 100), (2.5, 100), (3.0, 100)])
    assert w.foreign(3.1) == 100
    # Nor is growth measured only once: a rate needs two measures in a row.
    w2 = SlidingWindow(600, 6.0)
    _growing_foreign(w2, [(1.0, 0), (1.5, 20), (2.0, 20), (2.5, 20)])
    assert w2.foreign(2.6) == 20


def test_a_429_another_client_explains_leaves_it_twice_the_most_seen_for_a_window() -> None:
    # It took room the mirror had for us: it is held back, and shows its rate only in room
    # we leave it. Never more than half the key on that guess.
    w = SlidingWindow(100, 6.0)
    _growing_foreign(w, [(1.0, 20)])
    assert w.foreign(1.1) == 20
    w.unexpected_429(1.2)
    assert w.foreign(1.3) == 40
    assert w.foreign(1.3 + 4.0) == 40
    w.record_send(7.0)  # seen again after the doubling has lapsed: as seen
    w.observe(7.0, 7.05, RateHeaders(100, 100 - 2 - 20, None, None))  # (ours at 1.0: margin)
    assert w.foreign(7.3) == 20
    big = SlidingWindow(100, 6.0)
    _growing_foreign(big, [(1.0, 40)])
    big.unexpected_429(1.2)
    assert big.foreign(1.3) == 50


def test_the_limit_is_learned_from_the_headers() -> None:
    w = SlidingWindow(60, 60.0)
    w.record_send(1.0)
    w.observe(1.0, 1.1, RateHeaders(120, 119, None, None))
    assert w.limit == 120 and w.limit_learned
    assert w.available(1.1) == 119


def test_our_own_sends_leave_the_window_after_it_and_next_free_says_when() -> None:
    w = SlidingWindow(3, 10.0)
    for t in (0.0, 1.0, 2.0):
        w.record_send(t)
    assert w.available(5.0) == 0
    nf = w.next_free(5.0)
    assert 10.0 < nf <= 10.0 + w.margin + 1e-9
    assert w.available(nf + 1e-6) == 1


def test_a_hold_from_the_server_blocks_until_it_ends() -> None:
    w = SlidingWindow(10, 60.0)
    w.hold(50.0)
    assert w.available(49.9) == 0
    assert w.next_free(10.0) == 50.0
    assert w.available(50.0) == 10
    with pytest.raises(ValueError):
        SlidingWindow(0, 60.0)
