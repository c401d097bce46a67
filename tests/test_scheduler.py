"""The scheduler against the simulator in fast-forwarded time: caps, 429 holds, Retry-After in
both forms, retries, pre-flight refusals and reservations, 402 parking and resume, pause,
resume, cancel and the GET cache. The simulator's own records are the referee."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from mavera_tui import snapshot as S
from mavera_tui.clock import run_virtual
from mavera_tui.jobs import JobSpec
from mavera_tui.sim import Faults, Simulator


def virtual(fn: Callable[[], Awaitable[Any]]) -> Any:
    return run_virtual(fn())


def fg(i: int, sample: int = 50, questions: int = 5) -> JobSpec:
    return JobSpec(
        f"fg{i}",
        "POST",
        "/focus-groups",
        {"sample_size": sample, "questions": [f"q{k}" for k in range(questions)]},
    )


def responses(n: int, prefix: str = "r") -> list[JobSpec]:
    return [
        JobSpec(f"{prefix}{i}", "POST", "/responses", {"input": f"{prefix}{i}"}) for i in range(n)
    ]


def arrivals(sim: Simulator, path: str | None = None) -> list[Any]:
    return [r for r in sim.records if path is None or r.path == path]


# --- concurrency caps -------------------------------------------------------------------------


def test_concurrency_caps_are_never_exceeded_and_are_used(make_rig) -> None:
    async def main() -> None:
        rig = await make_rig({"tier": "enterprise"})
        specs = (
            [
                JobSpec(f"m{i}", "POST", "/mave/chat", {"message": "x", "complexity": "simple"})
                for i in range(30)
            ]
            + [fg(i, sample=10, questions=1) for i in range(15)]
            + [JobSpec(f"v{i}", "POST", "/video-analyses", {"video_seconds": 20}) for i in range(9)]
            + responses(40)
        )
        await rig.sched.submit_many(specs)
        await rig.sched.wait_idle()
        await rig.close()
        recs = rig.sim.records
        assert rig.sched.summary()["succeeded"] == len(specs)
        assert recs.count(status=429) == 0
        for ep, cap in (("mave", 10), ("focus_groups", 5), ("video_analyses", 3)):
            assert recs.max_in_flight(ep) == cap, ep  # never above, and fully used
            assert rig.sched.summary()["max_in_flight"][ep] <= cap

    virtual(main)


# --- window 429s and Retry-After ---------------------------------------------------------------


def _storm_run(make_rig: Callable[..., Any], mode: str) -> tuple[Simulator, Any, float]:
    """A steady trickle of jobs (one every 2 s) runs into a 30 s 429 storm."""
    storm_start, storm_len = 20.0, 30.0

    async def main() -> tuple[Simulator, Any, float]:
        rig = await make_rig(
            {
                "limit": 60,
                "faults": Faults(
                    storm_start=storm_start, storm_seconds=storm_len, retry_after_mode=mode
                ),
            }
        )
        t0 = rig.sim.records[0].t
        for spec in responses(40):
            await rig.sched.submit(spec)
            await asyncio.sleep(2.0)
        await rig.sched.wait_idle()
        await rig.close()
        return rig.sim, rig, t0 + storm_start + storm_len

    return virtual(main)


def _check_storm(sim: Simulator, rig: Any, storm_end: float) -> None:
    recs = list(sim.records)
    first = next(r for r in recs if r.status == 429)
    # Nothing is sent between the first 429 and the moment its Retry-After expires.
    during = [r for r in recs if first.t < r.t < storm_end - 1e-6]
    assert during == [], [(r.t - first.t, r.status) for r in during]
    assert sim.records.count(status=429) <= 2
    s = rig.sched.summary()
    assert s["succeeded"] == 40 and s["failed"] == 0
    assert s["responses_429"] == sim.records.count(status=429)


def test_a_window_429_holds_the_whole_key_until_retry_after(make_rig) -> None:
    sim, rig, storm_end = _storm_run(make_rig, "seconds")
    _check_storm(sim, rig, storm_end)


def test_retry_after_as_an_http_date_is_honoured(make_rig) -> None:
    sim, rig, storm_end = _storm_run(make_rig, "http-date")
    _check_storm(sim, rig, storm_end)


def test_a_retry_after_over_the_maximum_fails_the_job_naming_it_without_waiting(make_rig) -> None:
    async def main() -> None:
        # The storm starts just after the balance read, so only the job meets it.
        rig = await make_rig(
            {"faults": Faults(storm_start=1.0, storm_seconds=3600.0)}, max_retry_after=120.0
        )
        await asyncio.sleep(2.0)
        t0 = rig.now()
        await rig.sched.submit(JobSpec("j1", "POST", "/responses", {}))
        await rig.sched.wait_idle()
        assert rig.now() - t0 < 120.0  # not waited out
        job = rig.sched.jobs["j1"]
        assert job.state == S.FAILED
        assert "120" in job.reason and "max" in job.reason and "retry" in job.reason.lower()
        alerts = [a for a in rig.sched.snapshot().alerts if a.kind == "retry_after_too_long"]
        assert alerts
        await rig.close()

    virtual(main)


def test_a_huge_retry_after_is_reported_not_waited_out(make_rig) -> None:
    async def main() -> None:
        rig = await make_rig(
            {"faults": Faults(storm_start=1.0, storm_seconds=30.0, retry_after_mode="huge")}
        )
        await asyncio.sleep(2.0)
        t0 = rig.now()
        await rig.sched.submit(JobSpec("j1", "POST", "/responses", {}))
        await rig.sched.wait_idle()
        assert rig.now() - t0 < 60.0
        assert rig.sched.jobs["j1"].state == S.FAILED
        assert "max-retry-after" in rig.sched.jobs["j1"].reason
        await rig.close()

    virtual(main)


# --- retries -----------------------------------------------------------------------------------


def test_5xx_are_retried_with_growing_backoff_then_fail_with_the_reason(make_rig) -> None:
    async def main() -> None:
        rig = await make_rig(max_attempts=4, backoff_base=1.0)
        await rig.sched.submit(JobSpec("j1", "POST", "/responses", {}))
        rig.sim.config.faults.error_5xx_rate = 1.0
        await rig.sched.wait_idle()
        await rig.close()
        sent = arrivals(rig.sim, "/responses")
        assert len(sent) == 4
        # From each answer (a 500 comes after the work ran, a 503 at once) to the retry.
        gaps = [b.t - a.done for a, b in zip(sent, sent[1:], strict=False)]
        # Equal jitter: attempt k waits in [base*2^(k-1)/2, base*2^(k-1)].
        for k, gap in enumerate(gaps, start=1):
            assert 0.5 * 2 ** (k - 1) - 0.01 <= gap <= 2 ** (k - 1) + 0.5, gaps
        job = rig.sched.jobs["j1"]
        assert job.state == S.FAILED
        assert "gave up after 4 failed attempts" in job.reason
        assert "HTTP 50" in job.reason
        assert rig.sched.summary()["retries"] == 3

    virtual(main)


def test_dropped_connections_are_retried_then_fail_naming_the_connection(make_rig) -> None:
    async def main() -> None:
        rig = await make_rig(max_attempts=3)
        rig.sim.config.faults.drop_rate = 1.0
        await rig.sched.submit(JobSpec("j1", "POST", "/responses", {}))
        await rig.sched.wait_idle()
        await rig.close()
        assert len(arrivals(rig.sim, "/responses")) == 3
        job = rig.sched.jobs["j1"]
        assert job.state == S.FAILED and "connection" in job.reason

    virtual(main)


def test_occasional_5xx_and_drops_are_retried_until_every_job_succeeds(make_rig) -> None:
    async def main() -> None:
        rig = await make_rig(
            {"limit": 600, "faults": Faults(error_5xx_rate=0.15, drop_rate=0.1)}, max_attempts=8
        )
        await rig.sched.submit_many(responses(100))
        await rig.sched.wait_idle()
        await rig.close()
        s = rig.sched.summary()
        assert s["succeeded"] == 100 and s["retries"] > 0

    virtual(main)


# --- pre-flight and reservations -----------------------------------------------------------------


def test_a_job_preflight_refuses_is_never_sent_and_says_what_to_reduce(make_rig) -> None:
    async def main() -> None:
        # Starter plan, 400 of 500 used: 100 remain; a 135-credit focus group needs 162.
        rig = await make_rig({"plan": "starter", "allocation": None, "period_used": 400})
        await rig.sched.submit_many([fg(1), JobSpec("cheap", "POST", "/responses", {})])
        await rig.sched.wait_idle()
        await rig.close()
        job = rig.sched.jobs["fg1"]
        assert job.state == S.BLOCKED
        assert "135" in job.reason and "100 remaining" in job.reason
        assert "sample_size" in job.reason and "questions" in job.reason
        assert arrivals(rig.sim, "/focus-groups") == []
        assert rig.sched.jobs["cheap"].state == S.SUCCEEDED
        assert rig.sched.summary()["blocked_preflight"] == 1

    virtual(main)


def test_concurrent_focus_groups_cannot_jointly_overdraw_the_balance(make_rig) -> None:
    async def main() -> None:
        # 600 credits; five 135-credit focus groups (675 together, 162 each with buffer).
        rig = await make_rig({"plan": "starter", "allocation": None, "purchased": 100})
        peak = 0

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, rig.sched.reserved)
                assert (
                    rig.sched.budget.total is None or rig.sched.reserved <= rig.sched.budget.total
                )
                await asyncio.sleep(0.5)

        w = asyncio.create_task(watch())
        await rig.sched.submit_many([fg(i) for i in range(5)])
        await rig.sched.wait_idle()
        w.cancel()
        await rig.close()
        recs = rig.sim.records
        assert recs.max_in_flight("focus_groups") < 5  # not all admitted at once
        assert peak <= 600
        assert recs.count(status=402) == 0
        assert recs.total_charged() <= 600
        states = {j.state for j in rig.sched.jobs.values()}
        assert states <= {S.SUCCEEDED, S.BLOCKED}

    virtual(main)


# --- 402: park, poll, resume ---------------------------------------------------------------------


def test_a_402_parks_jobs_as_waiting_for_credits_and_they_resume_when_credits_arrive(
    make_rig,
) -> None:
    async def main() -> None:
        rig = await make_rig({"limit": 600}, credit_poll=5.0)
        sim = rig.sim
        # Someone else on the account spends it down: only 20 more credits can be charged.
        sim.config.faults.balance_runs_out_after = sim.state.net_charged + 20
        await rig.sched.submit_many(responses(30))
        for _ in range(200):
            await asyncio.sleep(1.0)
            if rig.sched.summary()["waiting_for_credits"] > 0 and not any(
                rig.sched._in_flight.values()
            ):
                break
        s = rig.sched.summary()
        assert s["waiting_for_credits"] > 0 and s["count_402"] >= 1
        parked = [j for j in rig.sched.jobs.values() if j.state == S.WAITING_CREDITS]
        assert any("credits_exhausted" in j.reason for j in parked)
        # While parked, only balance polls go out; no job is sent blindly.
        n_jobs_sent = len(arrivals(sim, "/responses"))
        await asyncio.sleep(60.0)
        assert len(arrivals(sim, "/responses")) == n_jobs_sent
        assert len(arrivals(sim, "/billing/credits")) >= 5
        # Credits arrive (a pack is bought): the next poll resumes the parked jobs.
        sim.config.faults.balance_runs_out_after = None
        sim.state.purchase(1000, "pack bought in the dashboard", rig.clock.wall())
        t_add = rig.now()
        await rig.sched.wait_idle()
        await rig.close()
        s = rig.sched.summary()
        assert s["succeeded"] == 30 and s["waiting_for_credits"] == 0
        resumed = [r for r in arrivals(sim, "/responses") if r.t > t_add]
        assert resumed and resumed[0].t - t_add <= 5.0 + 1.0
        assert s["credits_used"] == sim.records.total_charged()

    virtual(main)


# --- pause, resume, cancel -------------------------------------------------------------------


def test_pause_stops_dispatch_and_resume_restarts_it(make_rig) -> None:
    async def main() -> None:
        rig = await make_rig({"limit": 600})
        rig.sched.pause()
        assert rig.sched.paused
        await rig.sched.submit_many(responses(10))
        await asyncio.sleep(120.0)
        assert arrivals(rig.sim, "/responses") == []
        assert rig.sched.snapshot().queue[S.PAUSED] == 10
        rig.sched.resume()
        await rig.sched.wait_idle()
        await rig.close()
        assert rig.sched.summary()["succeeded"] == 10

    virtual(main)


def test_a_queued_job_can_be_cancelled_and_is_never_sent(make_rig) -> None:
    async def main() -> None:
        rig = await make_rig({"limit": 600})
        rig.sched.pause()
        await rig.sched.submit_many(responses(3) + [JobSpec("g", "POST", "/generations", {})])
        assert rig.sched.cancel("g") is True
        assert rig.sched.cancel("g") is False  # already final
        assert rig.sched.cancel("nope") is False
        rig.sched.resume()
        await rig.sched.wait_idle()
        await rig.close()
        assert rig.sched.jobs["g"].state == S.CANCELLED
        assert arrivals(rig.sim, "/generations") == []
        s = rig.sched.summary()
        assert (s["succeeded"], s["cancelled"]) == (3, 1)

    virtual(main)


# --- the GET cache -----------------------------------------------------------------------------


def test_identical_gets_inside_the_ttl_send_one_request(make_rig) -> None:
    async def main() -> None:
        rig = await make_rig({"limit": 600}, cache_ttl=30.0)
        await rig.sched.submit(JobSpec("p1", "GET", "/personas", {}))
        await rig.sched.wait_idle()
        await asyncio.sleep(5.0)
        await rig.sched.submit(JobSpec("p2", "GET", "/personas", {}))
        await rig.sched.wait_idle()
        assert len(arrivals(rig.sim, "/personas")) == 1
        assert rig.sched.jobs["p2"].state == S.SUCCEEDED
        assert "cache" in rig.sched.jobs["p2"].reason
        # After the TTL the request goes out again.
        await asyncio.sleep(40.0)
        await rig.sched.submit(JobSpec("p3", "GET", "/personas", {}))
        await rig.sched.wait_idle()
        await rig.close()
        assert len(arrivals(rig.sim, "/personas")) == 2

    virtual(main)


def test_submit_many_says_which_jobs_were_duplicates_and_which_invalid(make_rig) -> None:
    async def main() -> None:
        rig = await make_rig()
        first = await rig.sched.submit_many([JobSpec("a", "POST", "/responses", {})])
        again = await rig.sched.submit_many(
            [
                JobSpec("a", "POST", "/responses", {}),
                JobSpec("b", "POST", "/focus-groups", {"sample_size": -1}),
                JobSpec("c", "POST", "/responses", {}),
            ]
        )
        await rig.sched.wait_idle()
        await rig.close()
        assert first.accepted == ["a"] and not first.duplicates and not first.invalid
        assert again.accepted == ["c"]
        assert again.duplicates == ["a"]
        assert [i for i, _ in again.invalid] == ["b"]
        assert again.messages(duplicates=False) == [f"job 'b': {again.invalid[0][1]}"]

    virtual(main)


def test_a_persona_is_retrieved_free_through_the_scheduler(make_rig) -> None:
    async def main() -> None:
        rig = await make_rig({"tier": "basic"})
        await rig.sched.submit_many([JobSpec("get-p24", "GET", "/personas/p24", {})])
        await rig.sched.wait_idle()
        await rig.close()
        s = rig.sched.summary()
        assert s["succeeded"] == 1 and s["credits_used"] == 0
        assert [r.status for r in rig.sim.records if r.endpoint == "personas_get"] == [200]

    virtual(main)
