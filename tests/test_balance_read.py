"""When a batch's first balance read goes (balance_read): with "auto" (the default) before
the first job unless the batch fills its windows exactly, where one more request would cost
it a whole window; with "start" always before it."""

from __future__ import annotations

from typing import Any

import pytest

from mavera_tui.clock import run_virtual
from mavera_tui.jobs import JobSpec

W = 60.0


def cheap(n: int) -> list[JobSpec]:
    return [JobSpec(f"r{i}", "POST", "/responses", {"input": f"q{i}"}) for i in range(n)]


def run(make_rig: Any, n: int, sim_limit: int, **config: Any) -> tuple[Any, dict[str, Any]]:
    config.setdefault("balance_read", "auto")

    async def main() -> tuple[Any, dict[str, Any]]:
        rig = await make_rig(
            {"limit": sim_limit, "window_seconds": W}, window_seconds=W, start=False, **config
        )
        await rig.sched.start(batch=n)
        await rig.sched.submit_many(cheap(n))
        await rig.sched.wait_idle()
        await rig.sched.reconcile_credits()  # as `run` does before its summary
        await rig.close()
        return rig.sim, rig.sched.summary()

    return run_virtual(main())


def learned_after(sim: Any) -> float:
    """How long the first job took to be answered (the limit is learned from it)."""
    first = min(jobs(sim), key=lambda r: r.t)
    return first.done - first.t


def billing(sim: Any) -> list[Any]:
    return [r for r in sim.records if "billing" in r.path]


def jobs(sim: Any) -> list[Any]:
    return [r for r in sim.records if r.path.endswith("/responses")]


@pytest.mark.parametrize(("limit", "tier_limit"), [(60, 60), (120, None)])
def test_a_batch_filling_its_windows_exactly_is_not_held_back_by_a_balance_read(
    make_rig: Any, limit: int, tier_limit: int | None
) -> None:
    # 3 windows exactly: a read first would make 3L + 1 requests, a fourth window. With the
    # tier unknown the lowest tier's limit (60) divides every tier's.
    n = 3 * limit
    sim, summary = run(make_rig, n, limit, limit=tier_limit)
    assert summary["succeeded"] == n and summary["balance_read"] == "none"
    assert sim.records.count(status=429) == 0
    sent = jobs(sim)
    t0 = min(r.t for r in sent)
    # The last job went in the third window, not a fourth; the window had no room for a
    # read before the batch ended, and the batch did not wait for one. (With the tier
    # unknown, one job went first, alone, to learn the limit: the rest follow its answer.)
    assert max(r.t for r in sent) < t0 + 2 * W + learned_after(sim) + 1.0
    if tier_limit is None:
        assert sum(1 for r in sent if r.t < t0 + learned_after(sim)) == 1
    assert billing(sim) == []
    assert summary["makespan_s"] < 2 * W + 10.0


def test_a_batch_read_after_its_last_send_when_the_window_has_room(make_rig: Any) -> None:
    # A short window (2 s) and jobs of 0.5-3 s: the window has room again (at 4 s) before
    # the last job (sent at 2 s) ends.
    async def main() -> tuple[Any, dict[str, Any]]:
        rig = await make_rig(
            {"limit": 60, "window_seconds": 2.0},
            window_seconds=2.0,
            start=False,
            limit=60,
            balance_read="auto",
        )
        await rig.sched.start(batch=120)
        await rig.sched.submit_many(cheap(120))
        await rig.sched.wait_idle()
        await rig.sched.reconcile_credits()  # as `run` does before its summary
        await rig.close()
        return rig.sim, rig.sched.summary()

    sim, summary = run_virtual(main())
    assert summary["succeeded"] == 120 and summary["balance_read"] == "end"
    reads, sent = billing(sim), jobs(sim)
    assert reads[0].t >= max(r.t for r in sent)
    # That read went while jobs ran (a server charging at arrival had already taken theirs,
    # and we took them again as they were answered): once nothing runs, with the window's
    # room, the balance is read once more, and the batch ends on the API's number.
    assert any(r.done is not None and r.done > reads[0].t for r in sent)
    assert len(reads) == 2 and reads[1].t >= max(r.done for r in sent)
    assert summary["balance_end"] == sim.state.balance


def test_a_read_with_nothing_in_flight_is_not_made_again(make_rig: Any) -> None:
    sim, summary = run(make_rig, 2 * 60 + 7, 60, limit=60)
    assert summary["balance_read"] == "start"
    assert len(billing(sim)) == 1
    assert summary["balance_end"] == sim.state.balance


def test_a_batch_with_room_to_spare_reads_first(make_rig: Any) -> None:
    sim, summary = run(make_rig, 2 * 60 + 7, 60, limit=60)
    assert summary["balance_read"] == "start"
    reads, sent = billing(sim), jobs(sim)
    assert reads[0].t <= min(r.t for r in sent)


def test_with_the_tier_unknown_the_read_goes_once_the_limit_leaves_room(make_rig: Any) -> None:
    # 360 is a multiple of the basic tier's 120 but not of this key's 240: once the first
    # answers say 240, the read fits in the last window's spare room.
    sim, summary = run(make_rig, 360, 240)
    assert summary["balance_read"] == "during"
    reads, sent = billing(sim), jobs(sim)
    # Read while jobs ran, so read once more once none does (see the test above).
    assert len(reads) == 2 and reads[1].t >= max(r.done for r in sent)
    assert summary["balance_end"] == sim.state.balance
    t0 = min(r.t for r in sent)
    # two windows, as 180 jobs need (after the first job's answer taught the limit)
    assert max(r.t for r in sent) < t0 + W + learned_after(sim) + 1.0


def test_with_the_tier_unknown_a_multiple_of_the_starter_tier_alone_is_read_first(
    make_rig: Any,
) -> None:
    # 180 fills starter windows (60) exactly but no other tier's: taken as not a starter
    # key, the read goes first (no job alone to learn the limit), and on this basic key
    # it costs nothing: two windows.
    sim, summary = run(make_rig, 180, 120)
    assert summary["balance_read"] == "start"
    reads, sent = billing(sim), jobs(sim)
    assert reads[0].t <= min(r.t for r in sent)
    assert max(r.t for r in sent) < min(r.t for r in sent) + W + 1.0


def test_start_always_reads_first_even_when_it_costs_a_window(make_rig: Any) -> None:
    sim, summary = run(make_rig, 120, 60, limit=60, balance_read="start")
    assert summary["balance_read"] == "start"
    reads, sent = billing(sim), jobs(sim)
    assert reads[0].t <= min(r.t for r in sent)
    assert max(r.t for r in sent) >= min(r.t for r in sent) + 2 * W - 1.0  # the third window


def test_with_no_read_first_the_first_burst_waits_for_the_limit_a_first_answer_gives(
    make_rig: Any,
) -> None:
    # A key with 50 a window (below every tier: a guess from the tiers would burst 60):
    # 120 jobs, a multiple of the lowest tier, go without a read first; one job goes alone
    # and its X-RateLimit-Limit sizes the burst.
    sim, summary = run(make_rig, 120, 50)
    assert summary["succeeded"] == 120 and summary["limit"] == 50
    assert sim.records.count(status=429) == 0
    assert sim.records.max_window_count() <= 50


def test_the_default_does_not_spend_a_window_on_the_read_before_a_batch_filling_its_windows(
    make_rig: Any,
) -> None:
    # The default is auto: 120 jobs at 60 a window would need a third window for a read
    # first (see test_start_always_reads_first_even_when_it_costs_a_window).
    async def main() -> dict[str, Any]:
        rig = await make_rig({"limit": 60, "window_seconds": W}, window_seconds=W, start=False)
        await rig.sched.start(batch=120)
        await rig.sched.submit_many(cheap(120))
        await rig.sched.wait_idle()
        await rig.close()
        return rig.sched.summary()

    summary = run_virtual(main())
    assert summary["succeeded"] == 120 and summary["balance_read"] in ("none", "end")
