"""History: bucketed series from cumulative snapshot counters, with chart versions."""

import subprocess
import sys

from mavera_tui.history import History
from mavera_tui.snapshot import QUEUED, WAITING_SLOT, Snapshot

T0 = 1_700_000_000.0  # a multiple of 10: buckets line up with the test's times


def snap(t, requests=0, credits=0, r429=0, retries=0, queue=None, limit=60):
    return Snapshot(
        t=T0 + t,
        requests_total=requests,
        credits_used_total=credits,
        responses_429_total=r429,
        retries_total=retries,
        queue=queue or {},
        limit=limit,
    )


def test_requests_per_minute_comes_from_counter_deltas_over_the_last_60_s():
    h = History(bucket_s=10, span_s=900)
    h.add(snap(0, requests=100))
    for i in range(1, 10):  # 5 requests every 10 s
        h.add(snap(i * 10, requests=100 + 5 * i))
    rpm = h.requests_per_minute()
    assert rpm[-1] == 30  # 6 buckets x 5
    assert rpm[0] == 0  # the first snapshot only sets the baseline
    assert len(h.ages()) == len(rpm) == 10
    assert h.ages()[-1] == 0 and h.ages()[0] == -90


def test_credits_and_429s_are_counted_per_bucket_and_recently():
    h = History()
    h.add(snap(0))
    h.add(snap(5, credits=40, r429=1, retries=2))
    h.add(snap(12, credits=100, r429=3, retries=2))
    assert h.per_bucket("credits") == [40, 60]
    assert h.recent("r429", 60) == 3
    assert h.recent("retries", 60) == 2
    assert h.credits_per_minute()[-1] == 100


def test_a_counter_going_backwards_restarts_the_deltas_instead_of_going_negative():
    h = History()
    h.add(snap(0, requests=50))
    h.add(snap(10, requests=3))
    h.add(snap(20, requests=5))
    assert h.per_bucket("requests") == [0, 0, 2]


def test_gaps_are_filled_and_the_buffer_is_bounded():
    h = History(bucket_s=10, span_s=100)
    h.add(snap(0, queue={QUEUED: 4}))
    h.add(snap(35, queue={QUEUED: 1}))
    assert len(h) == 4
    assert h.queue_depth()[QUEUED] == [4, 4, 4, 1]  # the gauge is carried across the gap
    h.add(snap(10_000))
    assert len(h) == 10


def test_version_changes_only_when_a_charts_data_changes():
    h = History()
    h.add(snap(0, requests=0, queue={WAITING_SLOT: 2}))
    v = dict(h.versions)
    h.add(snap(1, requests=0, queue={WAITING_SLOT: 2}))  # same data: nothing to redraw
    assert h.versions == v
    h.add(snap(2, requests=3, queue={WAITING_SLOT: 2}))
    assert h.versions["requests"] == v["requests"] + 1
    assert h.versions["queue"] == v["queue"]
    assert h.versions["credits"] == v["credits"]
    h.add(snap(3, requests=3, queue={WAITING_SLOT: 5}))
    assert h.versions["queue"] == v["queue"] + 1


def test_an_idle_engine_does_not_bump_versions_when_full_buckets_roll_over():
    h = History(bucket_s=10, span_s=30)
    for t in range(0, 100, 10):
        h.add(snap(t))
    v = h.version
    h.add(snap(100))
    h.add(snap(110))
    assert h.version == v


def test_history_is_headless():
    code = (
        "import sys, mavera_tui.history; "
        "sys.exit(1 if any(m.startswith('textual') for m in sys.modules) else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
