"""Servers that read the rate-limit docs differently (issue 8, part 4).

The vendor docs (seeds/002) say X-RateLimit-Remaining is "requests remaining in current
window" and X-RateLimit-Reset the "Unix timestamp when the window resets", of a "sliding
60-second window". The simulator's ``Readings`` switch between the readings those words
allow. First, in-process on a VirtualTimeLoop (exact timings): each switch does what it
says. Then over loopback HTTP: this project's engine runs a batch against each server, and
the server's own records must show under 1% 429s and a makespan within 10% of the lower
bound that server allows.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from mavera_tui.clock import Clock, run_virtual
from mavera_tui.sim import Faults, Readings, SimConfig, Simulator, create_sim, sim_transport
from mavera_tui.sim import server as sim_server

ROOT = Path(__file__).resolve().parents[1]
WALL0 = 1_700_000_000.0  # 20 s past a minute boundary, and a multiple of 10


def make(readings: Readings | None = None, wall0: float = WALL0, **kw: Any) -> Simulator:
    kw.setdefault("time_scale", 0.0)
    return create_sim(SimConfig(readings=readings or Readings(), **kw), Clock(wall0=wall0))


@contextlib.asynccontextmanager
async def client(sim: Simulator, key: str = "key-1") -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=sim_transport(sim),
        base_url="http://sim/api/v1",
        headers={"Authorization": f"Bearer {key}"},
    ) as c:
        yield c


def remaining(r: httpx.Response) -> int:
    return int(r.headers["X-RateLimit-Remaining"])


def reset(r: httpx.Response) -> int:
    return int(r.headers["X-RateLimit-Reset"])


# --- the switches, in-process ---------------------------------------------------------------


@pytest.mark.parametrize(("counts", "expected"), [("after", [2, 1, 0]), ("before", [3, 2, 1])])
def test_remaining_counts_after_or_before_this_request(
    counts: str,
    expected: list[int],
) -> None:
    sim = make(Readings(remaining_counts=counts), limit=3)

    async def main() -> None:
        async with client(sim) as c:
            got = [remaining(await c.get("/personas")) for _ in range(3)]
            assert got == expected
            r = await c.get("/personas")
            # a window 429 is not counted: nothing is left before or after it
            assert (r.status_code, remaining(r)) == (429, 0)

    run_virtual(main())
    assert [r.remaining for r in sim.records] == [*expected, 0]
    assert [r.window_count for r in sim.records] == [1, 2, 3, 3]  # the server's own count


@pytest.mark.parametrize("at", ["arrival", "response"])
def test_remaining_at_response_counts_requests_admitted_while_the_work_ran(at: str) -> None:
    sim = make(Readings(remaining_at=at), limit=10, time_scale=1.0)

    async def main() -> None:
        async with client(sim) as c:
            slow = asyncio.create_task(c.post("/responses", json={"input": "x"}))  # >= 0.5 s
            await asyncio.sleep(0.01)
            quick = await asyncio.gather(*(c.get("/billing/credits") for _ in range(3)))
            first = await slow
            if at == "arrival":
                assert remaining(first) == 9
                assert sorted(remaining(r) for r in quick) == [6, 7, 8]
            else:
                # by the time the slow answer left, our three later requests were counted
                assert remaining(first) == 6
                assert [remaining(r) for r in quick] == [6, 6, 6]

    run_virtual(main())
    recs = list(sim.records)
    slow_done = recs[0].done
    assert recs[0].latency >= 0.5 and slow_done is not None
    assert all(r.done is not None and r.done < slow_done for r in recs[1:])
    # the records keep the server's count at arrival, whatever the headers said
    assert [r.window_count for r in recs] == [1, 2, 3, 4]
    assert recs[0].remaining == (9 if at == "arrival" else 6)


@pytest.mark.parametrize("at", ["arrival", "response"])
def test_remaining_at_response_no_longer_counts_requests_that_left_meanwhile(at: str) -> None:
    sim = make(Readings(remaining_at=at), limit=10, window_seconds=10, time_scale=1.0)

    async def main() -> None:
        async with client(sim) as c:
            assert remaining(await c.get("/personas")) == 9  # t0 (leaves at t0+10)
            await asyncio.sleep(9.9 - (asyncio.get_running_loop().time() - 1000.0))
            r = await c.post("/responses", json={"input": "x"})  # arrives t0+9.9, >= 0.5 s
            if at == "arrival":
                assert (remaining(r), reset(r)) == (8, math.ceil(WALL0 + 10))
            else:
                # t0's request left before the answer did: only this one is counted, and it
                # is now the oldest
                assert (remaining(r), reset(r)) == (9, math.ceil(WALL0 + 9.9 + 10))

    run_virtual(main())


@pytest.mark.parametrize("counts", ["after", "before"])
def test_at_response_a_request_that_outlasted_the_window_no_longer_counts_itself(
    counts: str,
) -> None:
    sim = make(
        Readings(remaining_counts=counts, remaining_at="response"),
        limit=5,
        window_seconds=0.25,
        time_scale=1.0,
    )

    async def main() -> None:
        async with client(sim) as c:
            r = await c.post("/responses", json={"input": "x"})  # latency >= 0.5 s > W
            assert remaining(r) == 5
            # the window is empty: Reset (oldest reading) is the moment of answering + W
            done = sim.records[0].done
            assert done is not None
            assert reset(r) == math.ceil(WALL0 + (done - 1000.0) + 0.25)

    run_virtual(main())
    assert sim.records[0].window_count == 1


RESETS = {  # wall0 = 1_700_000_004, W = 10: the next multiple of 10 is ...010
    "oldest": (1_700_000_014, 1_700_000_014, 1_700_000_014),
    "now": (1_700_000_014, 1_700_000_018, 1_700_000_018),  # ceil(...007.25 + 10)
    "minute": (1_700_000_010, 1_700_000_010, 1_700_000_010),
}


@pytest.mark.parametrize("meaning", list(RESETS))
def test_reset_means_oldest_plus_w_now_plus_w_or_the_next_boundary(meaning: str) -> None:
    sim = make(Readings(reset=meaning), wall0=WALL0 + 4, limit=3, window_seconds=10)

    async def main() -> None:
        async with client(sim) as c:
            first = await c.get("/personas")
            await asyncio.sleep(3.25)
            second = await c.get("/personas")
            assert (await c.get("/personas")).status_code == 200
            full = await c.get("/personas")
            assert full.status_code == 429
            # Retry-After stays the truth of a sliding window whatever Reset means
            assert full.headers["Retry-After"] == "7"  # ceil(10 - 3.25)
            assert (reset(first), reset(second), reset(full)) == RESETS[meaning]

    run_virtual(main())
    assert [r.reset for r in sim.records] == [RESETS[meaning][0], *[RESETS[meaning][1]] * 3]


def test_reset_minute_is_the_next_minute_boundary_with_the_documented_window() -> None:
    sim = make(Readings(reset="minute"))  # W = 60 s; WALL0 is 20 s into a minute

    async def main() -> None:
        async with client(sim) as c:
            assert reset(await c.get("/personas")) == 1_700_000_040
            await asyncio.sleep(40)
            assert reset(await c.get("/personas")) == 1_700_000_100

    run_virtual(main())


def test_a_fixed_window_server_starts_from_zero_at_each_boundary() -> None:
    # W = 10, wall0 = ...004: the first calendar window ends 6 s after the first request
    sim = make(
        Readings(window_kind="fixed", reset="minute"), wall0=WALL0 + 4, limit=3, window_seconds=10
    )

    async def main() -> None:
        async with client(sim) as c:
            got = [await c.get("/personas") for _ in range(3)]
            assert [remaining(r) for r in got] == [2, 1, 0]
            assert {reset(r) for r in got} == {1_700_000_010}
            r = await c.get("/personas")
            assert (r.status_code, r.headers["Retry-After"], reset(r)) == (
                429,
                "6",
                1_700_000_010,
            )  # the time to the next boundary
            await asyncio.sleep(5.5)
            r = await c.get("/personas")
            assert (r.status_code, r.headers["Retry-After"]) == (429, "1")  # ceil(0.5)
            await asyncio.sleep(0.5)  # the boundary
            got = [await c.get("/personas") for _ in range(3)]
            assert [(g.status_code, remaining(g), reset(g)) for g in got] == [
                (200, 2, 1_700_000_020),
                (200, 1, 1_700_000_020),
                (200, 0, 1_700_000_020),
            ]
            r = await c.get("/personas")
            assert (r.status_code, r.headers["Retry-After"]) == (429, "10")

    run_virtual(main())
    recs = sim.records
    # six admitted within 6 s, a window of 10 s: allowed by calendar windows, and the
    # records count per calendar window
    assert recs.count(status=200) == 6
    assert [r.window_count for r in recs] == [1, 2, 3, 3, 3, 1, 2, 3, 3]
    assert recs.max_window_count() == 3
    assert recs.max_arrivals_in_window() == 5  # 3 + 2 refused in the first


def test_the_same_traffic_on_a_sliding_server_is_refused_after_the_boundary() -> None:
    sim = make(wall0=WALL0 + 4, limit=3, window_seconds=10)

    async def main() -> None:
        async with client(sim) as c:
            assert [(await c.get("/personas")).status_code for _ in range(3)] == [200] * 3
            await asyncio.sleep(6)
            r = await c.get("/personas")
            assert (r.status_code, r.headers["Retry-After"]) == (429, "4")

    run_virtual(main())
    assert sim.records.max_arrivals_in_window() == 4


def test_a_fixed_window_keeps_oldest_reset_literal_and_admits_foreign_traffic_per_bucket() -> None:
    # one foreign request a second; the bucket starts with the first request (WALL0 % 10 = 0)
    sim = make(
        Readings(window_kind="fixed"), limit=5, window_seconds=10, faults=Faults(foreign_rpm=60)
    )

    async def main() -> None:
        async with client(sim) as c:
            r = await c.get("/personas")  # a phantom at t0 too, counted first
            assert (remaining(r), reset(r)) == (3, math.ceil(WALL0 + 10))
            await asyncio.sleep(9.5)
            assert sim.window_count("key-1") == 5  # phantoms filled the calendar window
            r = await c.get("/personas")
            assert (r.status_code, r.headers["Retry-After"]) == (429, "1")
            await asyncio.sleep(0.75)  # t0 + 10.25: a new window, one phantom
            assert sim.window_count("key-1") == 1
            r = await c.get("/personas")
            assert (r.status_code, remaining(r)) == (200, 3)

    run_virtual(main())


def test_the_defaults_are_the_original_readings_and_bad_readings_are_refused() -> None:
    assert SimConfig().readings == Readings("after", "arrival", "oldest", "sliding")
    assert Readings().describe() == ""
    for name in ("remaining_counts", "remaining_at", "reset", "window_kind"):
        with pytest.raises(ValueError, match=name):
            Readings(**{name: "sometimes"})


def test_the_server_flags_choose_the_readings_and_the_banner_names_them() -> None:
    parser = argparse.ArgumentParser()
    sim_server.add_arguments(parser)
    args = parser.parse_args(
        [
            "--port",
            "0",
            "--remaining-counts",
            "before",
            "--remaining-at",
            "response",
            "--reset",
            "minute",
            "--window-kind",
            "fixed",
            "--window-seconds",
            "6",
        ]
    )
    cfg = sim_server.config_from_args(args)
    assert cfg.readings == Readings("before", "response", "minute", "fixed")
    assert sim_server.describe(create_sim(cfg), "127.0.0.1", 1).endswith(
        "window 6 s; readings: remaining_counts=before remaining_at=response reset=minute "
        "window_kind=fixed)"
    )
    default = sim_server.config_from_args(parser.parse_args(["--port", "0"]))
    assert default.readings == Readings()
    with pytest.raises(SystemExit):
        parser.parse_args(["--port", "0", "--reset", "tomorrow"])


# --- the engine against each reading, over loopback HTTP -------------------------------------

# 3 s: the window's least margin (0.1 s) is then 3% of it, so a loaded machine's jitter
# does not decide a 10% target (at 2 s, runs measured 1.07-1.11).
W = 3.0
LIMIT = 50
JOBS = 120  # with the engine's balance read: 121 requests, 2 windows and a bit
TIME_SCALE = 0.03  # /responses latencies 0.015-0.09 s


class TargetMissed(AssertionError):
    """The run finished, but with 1% 429s or more, or beyond 10% of the bound."""


# Before the window mirror was rewritten (stamps at write, delay measured, readings told
# apart) the client missed these targets on every server here, the original readings
# included: 1.09-1.91 of the bound, up to 2.4% 429s (3 runs each, W = 2 s, loaded box).
# On the fixed-window server a sliding mirror was safe (0 429s) but used none of the room
# each calendar boundary gives: 1.29-1.31 of that server's bound, until one probe of an
# early X-RateLimit-Reset (mavera_tui/fixed_window.py) told the two kinds apart: 1.01.


@dataclass
class Outcome:
    requests: int
    n429: int
    makespan: float
    bound: float
    phase: float  # how far into a calendar window the first request arrived (share of W)

    @property
    def share_429(self) -> float:
        return self.n429 / max(1, self.requests)

    @property
    def ratio(self) -> float:
        return self.makespan / self.bound

    def __str__(self) -> str:
        return (
            f"429s {self.n429}/{self.requests} ({self.share_429:.1%}), makespan "
            f"{self.makespan:.3f} s / bound {self.bound:.3f} s = {self.ratio:.3f} "
            f"(first arrival {self.phase:.2f} W into a calendar window)"
        )


def lower_bound(sim: Simulator, end: float) -> tuple[float, float]:
    """(first arrival, makespan lower bound) from the server's records.

    N counted requests (the engine's own balance reads included: they take window room),
    limit L, latencies as the server ran them, sorted ascending. At most j*L of them can
    start before the j-th window opens, so the rest, N - j*L, include one at least as slow
    as the (N - j*L)-th smallest latency: the bound is the max over j of (the j-th window's
    opening + that latency). A sliding window opens j*W after the first arrival; a fixed
    one at the j-th calendar boundary after it.
    """
    recs = [r for r in sim.records if r.status != 401 and r.t <= end]
    counted = [r for r in recs if r.counted]
    first = min(recs, key=lambda r: r.t)
    lat = sorted((r.done or r.t) - r.t for r in counted)
    n, lim, w = len(lat), sim.limit, sim.window_seconds
    fixed = sim.config.readings.window_kind == "fixed"
    best = 0.0
    for j in range(math.ceil(n / lim)):
        if j == 0:
            opens = 0.0
        elif fixed:
            opens = (math.floor(first.wall / w) + j) * w - first.wall
        else:
            opens = j * w
        best = max(best, opens + lat[n - j * lim - 1])
    return first.t, best


def run_engine_against(
    loopback_sim: Any,
    job_file: Any,
    readings: Readings,
    tmp_path: Path,
    start_phase: float | None = None,
) -> Outcome:
    """Serve a simulator with ``readings`` on 127.0.0.1, run JOBS /responses jobs through
    ``mavera-tui run`` in its own process (as a user would; sharing this process would
    also share its GIL with the server), and measure the run from the server's records."""
    srv = loopback_sim(
        limit=LIMIT,
        window_seconds=W,
        time_scale=TIME_SCALE,
        seed=8,
        plan="enterprise",
        allocation=10_000_000,
        readings=readings,
    )
    sim = srv.sim
    jobs = job_file(
        [
            {"id": f"j{i}", "method": "POST", "path": "/responses", "body": {"input": f"job {i}"}}
            for i in range(JOBS)
        ]
    )
    summary_path = tmp_path / "summary.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAVERA_")}
    env["MAVERA_API_KEY"] = "mvra_test_readings"
    try:
        if start_phase is not None:
            # Start (after about 0.6 s of interpreter start-up) this far into a calendar
            # window, so that a fixed window's early boundary is worth using: starting
            # right at a boundary would hide it.
            time.sleep(((start_phase - 0.3) * W - time.time() % W) % W)
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "mavera_tui",
                "run",
                str(jobs),
                "--base-url",
                srv.url,
                "--window-seconds",
                str(W),
                "--summary",
                str(summary_path),
                "--quiet",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        srv.stop()  # asserts that uvicorn stopped
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    summary = json.loads(summary_path.read_text())
    assert summary["succeeded"] == JOBS, summary
    fixed = readings.window_kind == "fixed"
    if start_phase is not None:  # the boundary was worth using: the mirror says so
        assert summary["window_kind"] == ("calendar" if fixed else "sliding"), summary
    recs = sim.records
    jobs_done = [r for r in recs if r.endpoint == "responses" and r.status == 200]
    assert len(jobs_done) == JOBS
    end = max(r.done for r in jobs_done if r.done is not None)
    first, bound = lower_bound(sim, end)
    assert recs.max_window_count() <= LIMIT
    phase = (min(r.wall for r in recs) % W) / W
    return Outcome(
        sum(1 for r in recs if r.status != 401), recs.count(status=429), end - first, bound, phase
    )


def check(out: Outcome) -> None:
    print(out)  # shown with -s: the numbers behind a miss
    if not (out.share_429 < 0.01 and out.ratio <= 1.10):
        raise TargetMissed(str(out))


@pytest.fixture
def loopback_run(tmp_path: Path, loopback_sim: Any, job_file: Any) -> Any:
    """``loopback_run(readings, start_phase=None)``: ``run_engine_against`` in this test."""

    def run(readings: Readings, start_phase: float | None = None) -> Outcome:
        return run_engine_against(loopback_sim, job_file, readings, tmp_path, start_phase)

    return run


def test_loopback_the_original_readings(loopback_run: Any) -> None:
    check(loopback_run(Readings()))


def test_loopback_remaining_counted_before_this_request(loopback_run: Any) -> None:
    check(loopback_run(Readings(remaining_counts="before")))


def test_loopback_remaining_computed_when_the_answer_leaves(loopback_run: Any) -> None:
    check(loopback_run(Readings(remaining_at="response")))


def test_loopback_reset_is_now_plus_w(loopback_run: Any) -> None:
    check(loopback_run(Readings(reset="now")))


def test_loopback_reset_is_the_next_boundary(loopback_run: Any) -> None:
    check(loopback_run(Readings(reset="minute")))


def test_loopback_a_fixed_window_server(loopback_run: Any) -> None:
    check(loopback_run(Readings(window_kind="fixed", reset="minute"), start_phase=0.5))
