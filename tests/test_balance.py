"""Reading the balance: the documented fallback path and the shapes a server may answer with."""

import json

import httpx

from mavera_tui.client import parse_balance
from mavera_tui.clock import Clock, run_virtual
from mavera_tui.sim import create_sim, sim_transport


def test_the_balance_is_found_at_the_documented_api_billing_credits_when_v1_has_none(make_rig):
    async def go():
        clock = Clock()
        sim = create_sim(None, clock)
        inner = sim_transport(sim)
        asked: list[str] = []

        class OnlyTheDocumentedPath(httpx.AsyncBaseTransport):
            async def handle_async_request(self, req):
                asked.append(req.url.path)
                if req.url.path == "/api/v1/billing/credits":
                    return httpx.Response(404, json={"error": {"code": "not_found"}})
                return await inner.handle_async_request(req)

        rig = await make_rig(sim, key="k", transport=OnlyTheDocumentedPath(), start=False)
        sched = rig.sched
        assert await sched.refresh_balance()
        first = list(asked)
        assert await sched.refresh_balance()
        await rig.client.aclose()
        return sched.budget.total, first, asked[len(first) :]

    total, first, second = run_virtual(go())
    assert total == 2000  # the simulator's default plan (basic)
    assert first == ["/api/v1/billing/credits", "/api/billing/credits"]
    assert second == ["/api/billing/credits"]  # remembered: no second 404


def test_parse_balance_reads_flat_nested_and_wrapped_shapes():
    assert (
        parse_balance(
            {"balance": 120, "plan_credits_remaining": 20, "purchased_credits": 100}
        ).total
        == 120
    )
    assert parse_balance({"balance": {"total": 75, "purchased": 5}}).total == 75
    assert parse_balance({"data": {"credits_remaining": 9}}).total == 9
    assert parse_balance({"plan_remaining": 30, "purchased": 4}).total == 34
    assert parse_balance({"message": "no numbers here"}) is None
    assert parse_balance(json.loads('"just a string"')) is None


def test_a_purchase_since_the_last_read_is_seen_before_a_job_is_refused(make_rig):
    """Credits bought on the dashboard show only in GET /billing/credits: a job the tracked
    balance cannot cover is refused only on a fresh read (independent-server QA: jobs were
    refused on a 7 s old balance while the account held 30,000 more)."""
    from mavera_tui.jobs import JobSpec

    async def go():
        rig = await make_rig({"allocation": 40, "plan": "basic", "time_scale": 0.01})
        clock = rig.clock
        await clock.sleep(1.0)
        rig.sim.state.purchase(5000, "dashboard", clock.wall())
        await clock.sleep(4.0)  # older than balance_max_age, younger than the old 10 s
        specs = [JobSpec(f"bv{i}", "POST", "/brand-voices", {"name": "b"}) for i in range(5)]
        await rig.sched.submit_many(specs)
        await rig.sched.wait_idle()
        await rig.close()
        return rig.sched.summary()

    s = run_virtual(go())
    assert s["succeeded"] == 5 and s["blocked_preflight"] == 0, s


def test_the_fallback_balance_read_is_a_path_in_the_ledger(make_rig, tmp_path):
    """The ledger keeps paths: the documented /api/billing/credits read (an absolute URL on
    the API's host when sent) is stored as its path, like every other row."""
    import sqlite3

    async def go():
        clock = Clock()
        sim = create_sim(None, clock)
        inner = sim_transport(sim)

        class OnlyTheDocumentedPath(httpx.AsyncBaseTransport):
            async def handle_async_request(self, req):
                if req.url.path == "/api/v1/billing/credits":
                    return httpx.Response(404, json={"error": {"code": "not_found"}})
                return await inner.handle_async_request(req)

        rig = await make_rig(sim, transport=OnlyTheDocumentedPath(), db=tmp_path / "r.db")
        await rig.close()

    run_virtual(go())
    con = sqlite3.connect(tmp_path / "r.db")
    paths = [r[0] for r in con.execute("SELECT path FROM ledger ORDER BY rowid")]
    con.close()
    assert paths == ["/billing/credits", "/api/billing/credits"], paths
