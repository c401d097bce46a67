"""Charges we could not read (the answer was lost) are reconciled from the balance."""

from mavera_tui.client import ApiClient
from mavera_tui.clock import Clock, run_virtual
from mavera_tui.jobs import JobSpec
from mavera_tui.sim import sim_transport
from mavera_tui.sim.config import Faults, SimConfig


def _run(make_rig, faults: Faults, foreign_spend: int = 0):
    async def go():
        rig = await make_rig(
            SimConfig(
                tier="enterprise", plan="professional", seed=5, time_scale=0.01, faults=faults
            ),
            clock=Clock(),
            key="k",
            seed=5,
            max_attempts=2,
        )
        sched, sim, clock = rig.sched, rig.sim, rig.clock
        await sched.submit_many(
            [JobSpec(f"j{i}", "POST", "/generations", {"prompt": str(i)}) for i in range(60)]
        )
        await sched.wait_idle()
        if foreign_spend:  # someone else spends on the same account meanwhile
            other = ApiClient(
                "http://sim/api/v1", "other", clock=clock, transport=sim_transport(sim)
            )
            for _ in range(foreign_spend):
                await other.request("POST", "/generations", {"prompt": "x"})
            await other.aclose()
        known = sched.credits_used_total
        await sched.reconcile_credits()
        await rig.close()
        await sim.drain()
        return (
            sched,
            known,
            sim.records.total_charged()
            - (
                foreign_spend and sum(r.credits for r in sim.records if r.key != sim.records[0].key)
            ),
        )

    return run_virtual(go())


def test_lost_answers_are_reconciled_to_exactly_what_the_api_charged(make_rig):
    sched, known, charged = _run(make_rig, Faults(drop_rate=0.3))
    assert sched.credits_unknown_attempts > 0
    assert known < charged  # some charges were lost with their answers...
    assert sched.credits_reconciled == charged - known  # ...and found in the balance
    assert sched.credits_used_total == charged
    assert sched.summary()["credits_used"] == charged


def test_no_reconciliation_when_every_charge_was_read(make_rig):
    sched, known, charged = _run(make_rig, Faults())
    assert sched.credits_unknown_attempts == 0
    assert sched.credits_reconciled is None
    assert known == charged == sched.credits_used_total


def test_other_spending_on_the_account_is_not_taken_for_ours(make_rig):
    sched, known, _ = _run(make_rig, Faults(drop_rate=0.3), foreign_spend=40)
    assert sched.credits_reconciled is None
    assert sched.credits_used_total == known
    assert "other spending" in sched.reconcile_note
