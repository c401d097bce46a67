"""The simulator behaves like the documented Mavera API, and its faults do what they say.

Everything in-process runs on a VirtualTimeLoop (``run_virtual``), so minutes of API time
pass in milliseconds and the timings below are exact.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import threading
import time
from collections.abc import AsyncIterator
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mavera_tui import catalog
from mavera_tui.clock import Clock, run_virtual
from mavera_tui.estimate import estimate
from mavera_tui.sim import (
    HOSTILE_TEXT,
    AutoRecharge,
    Faults,
    SimConfig,
    Simulator,
    charge_for,
    create_sim,
    sim_transport,
)
from mavera_tui.sim import server as sim_server

WALL0 = 1_700_000_000.0
T0 = 1_000.0  # run_virtual's loop starts here
RATE_BODY = {
    "error": {
        "message": "Rate limit exceeded. Please retry after {n} seconds.",
        "type": "rate_limit_error",
        "code": "rate_limit_exceeded",
        "param": None,
    }
}
CREDITS_BODY = {
    "error": {
        "message": "Insufficient credits. Please upgrade your subscription or wait for your next "
        "billing cycle.",
        "type": "insufficient_credits",
        "code": "credits_exhausted",
        "param": None,
    }
}


def make(faults: Faults | None = None, **kw: Any) -> Simulator:
    kw.setdefault("time_scale", 0.0)
    return create_sim(SimConfig(faults=faults or Faults(), **kw), Clock(wall0=WALL0))


@contextlib.asynccontextmanager
async def client(
    sim: Simulator, key: str | None = "key-1", base: str = "http://sim/api/v1"
) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient(transport=sim_transport(sim), base_url=base, headers=headers) as c:
        yield c


def rate(r: httpx.Response) -> tuple[int, int, int]:
    return (
        int(r.headers["X-RateLimit-Limit"]),
        int(r.headers["X-RateLimit-Remaining"]),
        int(r.headers["X-RateLimit-Reset"]),
    )


def now() -> float:
    return asyncio.get_running_loop().time()


# --- the sliding window ---------------------------------------------------------------------


def test_a_request_over_the_window_gets_429_with_retry_after() -> None:
    sim = make()  # starter: 60 per 60 s

    async def main() -> None:
        async with client(sim) as c:
            remaining = []
            for _ in range(60):
                r = await c.get("/personas")
                assert r.status_code == 200
                remaining.append(rate(r)[1])
            assert remaining == list(range(59, -1, -1))
            r = await c.get("/personas")
            assert r.status_code == 429
            assert r.json() == json.loads(json.dumps(RATE_BODY).replace("{n}", "60"))
            assert r.headers["Retry-After"] == "60"
            assert rate(r) == (60, 0, math.ceil(WALL0 + 60))

    run_virtual(main())
    assert sim.records.count(status=200) == 60
    assert sim.records.count(status=429, code="rate_limit_exceeded") == 1
    assert sim.records.max_window_count() == 60
    assert sim.records.max_arrivals_in_window() == 61


def test_remaining_and_reset_follow_the_oldest_counted_request() -> None:
    sim = make()

    async def main() -> None:
        async with client(sim) as c:
            assert rate(await c.get("/personas")) == (60, 59, math.ceil(WALL0 + 60))
            await asyncio.sleep(10.5)
            # the oldest arrival (t0) still decides when Remaining next grows
            assert rate(await c.get("/personas")) == (60, 58, math.ceil(WALL0 + 60))
            await asyncio.sleep(200)
            # the window emptied: this request is the oldest, Reset = now + W (rounded up)
            assert rate(await c.get("/personas")) == (60, 59, math.ceil(WALL0 + 270.5))

    run_virtual(main())


def test_the_window_slides_and_admits_a_request_exactly_when_the_oldest_leaves() -> None:
    sim = make(limit=3, window_seconds=10)

    async def main() -> None:
        async with client(sim) as c:
            for _ in range(3):
                assert (await c.get("/personas")).status_code == 200
                await asyncio.sleep(2)
            # arrivals at t0, t0+2, t0+4; now t0+6
            await asyncio.sleep(3.5)
            r = await c.get("/personas")  # t0+9.5: t0 leaves at t0+10
            assert (r.status_code, r.headers["Retry-After"]) == (429, "1")
            await asyncio.sleep(0.5)
            assert (await c.get("/personas")).status_code == 200  # exactly t0+10
            r = await c.get("/personas")
            assert (r.status_code, r.headers["Retry-After"]) == (429, "2")
            assert rate(r) == (3, 0, math.ceil(WALL0 + 12))

    run_virtual(main())
    assert sim.records.max_window_count() == 3


def test_a_window_429_does_not_count_toward_the_window() -> None:
    sim = make(limit=2, window_seconds=10)

    async def main() -> None:
        async with client(sim) as c:
            assert [(await c.get("/personas")).status_code for _ in range(2)] == [200, 200]
            await asyncio.sleep(5)
            assert [(await c.get("/personas")).status_code for _ in range(5)] == [429] * 5
            await asyncio.sleep(5)
            # had the 429s at t0+5 counted, the window would still be full
            assert [(await c.get("/personas")).status_code for _ in range(3)] == [200, 200, 429]

    run_virtual(main())
    assert [r.counted for r in sim.records if r.status == 429] == [False] * 6


def test_each_api_key_has_its_own_window() -> None:
    sim = make(limit=1)

    async def main() -> None:
        async with client(sim, "a") as a, client(sim, "b") as b:
            assert (await a.get("/personas")).status_code == 200
            assert (await a.get("/personas")).status_code == 429
            assert (await b.get("/personas")).status_code == 200

    run_virtual(main())
    assert len({r.key for r in sim.records}) == 2
    assert all(r.key not in ("a", "b") for r in sim.records)  # fingerprints, never the key


# --- concurrency caps -----------------------------------------------------------------------


def test_a_request_over_the_concurrency_cap_gets_429_with_the_concurrency_code() -> None:
    sim = make(time_scale=1.0)
    video = catalog.ENDPOINTS["video_analyses"]
    assert video.cap is not None

    async def main() -> None:
        async with client(sim) as c, client(sim, "other") as other:
            body = {"video_seconds": 20}
            running = [
                asyncio.create_task(c.post("/video-analyses", json=body)) for _ in range(video.cap)
            ]
            await asyncio.sleep(0)  # let them arrive
            assert sim.in_flight("video_analyses") == video.cap
            r = await c.post("/video-analyses", json=body)
            assert r.status_code == 429
            err = r.json()["error"]
            assert (err["type"], err["code"]) == ("rate_limit_error", "concurrency_limit_exceeded")
            assert r.headers["Retry-After"] == "1"
            # counted in the window: it arrived and was processed up to the cap check
            assert rate(r)[1] == 60 - (video.cap + 1)
            # another key has its own slots
            assert (await other.post("/video-analyses", json=body)).status_code == 200
            assert [t.status_code for t in await asyncio.gather(*running)] == [200] * video.cap
            assert (await c.post("/video-analyses", json=body)).status_code == 200

    run_virtual(main())
    assert sim.records.max_in_flight("video_analyses") == video.cap
    assert sim.records.max_in_flight("/video-analyses") == video.cap
    rejected = [r for r in sim.records if r.code == "concurrency_limit_exceeded"]
    assert len(rejected) == 1 and rejected[0].counted and rejected[0].credits == 0


# --- billing --------------------------------------------------------------------------------


def test_charges_use_the_plan_allocation_first_then_purchased_credits() -> None:
    sim = make(plan="starter", period_used=450, purchased=1000)  # 50 of the plan left

    async def main() -> dict[str, Any]:
        async with client(sim) as c:
            r = await c.post("/personas", json={"name": "Ana"})
            assert r.status_code == 200
            assert r.json()["usage"]["credits_used"] == 300
            return (await c.get("/billing/credits")).json()

    bal = run_virtual(main())
    assert (sim.state.plan_remaining, sim.state.purchased, sim.state.balance) == (0, 750, 750)
    assert (bal["plan_credits_remaining"], bal["purchased_credits"], bal["balance"]) == (
        0,
        750,
        750,
    )
    assert bal["period_used"] == 500
    [txn] = bal["transactions"]
    assert (txn["type"], txn["amount"]) == ("deduction", 300)


def test_a_request_the_balance_cannot_cover_gets_402_and_nothing_is_charged() -> None:
    sim = make(plan="starter", period_used=500, purchased=100)

    async def main() -> None:
        async with client(sim) as c:
            r = await c.post("/personas", json={})
            assert r.status_code == 402
            assert r.json() == CREDITS_BODY
            assert "X-RateLimit-Remaining" in r.headers
            # a cheaper job still fits
            assert (await c.post("/brand-voices", json={})).status_code == 200

    run_virtual(main())
    assert sim.state.balance == 50
    assert [t.type for t in sim.state.transactions] == ["deduction"]
    assert sim.records.count(status=402, code="credits_exhausted") == 1
    assert sim.records.total_charged() == 50


def test_a_request_over_the_workspace_budget_gets_402_budget_exceeded() -> None:
    sim = make(budget_cap=120)

    async def main() -> None:
        async with client(sim) as c:
            assert (await c.post("/brand-voices", json={})).status_code == 200
            assert (await c.post("/brand-voices", json={})).status_code == 200
            r = await c.post("/brand-voices", json={})
            assert r.status_code == 402
            err = r.json()["error"]
            assert (err["type"], err["code"], err["param"]) == (
                "insufficient_credits",
                "budget_exceeded",
                None,
            )
            assert "workspace budget is exhausted" in err["message"]

    run_virtual(main())
    assert sim.state.period_spent == 100
    assert sim.state.balance == 2000 - 100
    assert len(sim.state.transactions) == 2


def test_a_charge_the_balance_can_no_longer_cover_at_completion_gets_402() -> None:
    # Two personas pass the arrival check together; only one can be paid when both finish.
    sim = make(plan="starter", period_used=200, time_scale=1.0)

    async def main() -> list[int]:
        async with client(sim) as c:
            rs = await asyncio.gather(c.post("/personas", json={}), c.post("/personas", json={}))
            return sorted(r.status_code for r in rs)

    assert run_virtual(main()) == [200, 402]
    assert sim.state.balance == 0
    assert sim.records.total_charged() == 300


def test_a_500_after_the_work_started_refunds_the_deduction() -> None:
    sim = make(faults=Faults(error_5xx_rate=1.0), seed=3)

    async def main() -> list[int]:
        async with client(sim) as c:
            return [(await c.post("/brand-voices", json={})).status_code for _ in range(12)]

    statuses = run_virtual(main())
    assert set(statuses) == {500, 503}
    assert sim.state.balance == 2000
    txns = sim.state.transactions
    deductions = [t for t in txns if t.type == "deduction"]
    refunds = [t for t in txns if t.type == "refund"]
    assert len(deductions) == len(refunds) == statuses.count(500)
    assert [t.amount for t in refunds] == [t.amount for t in deductions] == [50] * len(refunds)
    assert [t.resource for t in refunds] == [t.resource for t in deductions]
    assert sim.records.total_charged() == 0
    assert all(r.refunded == 50 for r in sim.records if r.status == 500)


def test_auto_recharge_buys_credits_below_the_threshold_within_the_monthly_limit() -> None:
    pack = catalog.CREDIT_PACKS["standard"]
    auto = AutoRecharge(
        enabled=True, threshold=300, credits=500, pack="standard", monthly_limit_eur=pack.price_eur
    )  # room for exactly one recharge
    sim = make(plan="starter", period_used=500, purchased=350, auto_recharge=auto)

    async def main() -> dict[str, Any]:
        async with client(sim) as c:
            assert (await c.post("/personas", json={})).status_code == 200  # 50 -> +500
            assert (await c.post("/personas", json={})).status_code == 200  # 250: limit hit
            return (await c.get("/billing/credits")).json()

    bal = run_virtual(main())
    assert [(t["type"], t["amount"]) for t in reversed(bal["transactions"])] == [
        ("deduction", 300),
        ("purchase", 500),
        ("deduction", 300),
    ]
    assert bal["balance"] == 250
    assert bal["auto_recharge"]["spent_this_month_eur"] == pack.price_eur
    assert bal["auto_recharge"]["pack_price_eur"] == pack.price_eur


def test_budget_alerts_fire_once_at_each_allocation_share() -> None:
    sim = make(plan="starter", budget_alert=100)

    async def main() -> None:
        async with client(sim) as c:
            for _ in range(10):
                await c.post("/brand-voices", json={})

    run_virtual(main())
    kinds = [(a["kind"], a["threshold"]) for a in sim.state.alerts]
    assert kinds == [("budget", 100.0)] + [("allocation", t) for t in catalog.ALERT_THRESHOLDS]


def _bodies() -> list[tuple[str, str, dict[str, Any]]]:
    return [
        ("POST", "/responses", {"input": "hi"}),
        ("POST", "/mave/chat", {"message": "x"}),
        ("POST", "/mave/chat", {"message": "x", "complexity": "simple"}),
        ("POST", "/mave/chat", {"message": "x", "complexity": "moderate"}),
        ("POST", "/focus-groups", {"sample_size": 10, "questions": ["a"]}),
        ("POST", "/focus-groups", {"sample_size": 50, "questions": ["a"] * 5}),
        ("POST", "/focus-groups", {"sample_size": 500, "questions": 40}),
        ("POST", "/video-analyses", {"video_seconds": 20}),
        ("POST", "/video-analyses", {"video_seconds": 120}),
        ("POST", "/video-analyses", {}),
        ("POST", "/generations", {"template": "t"}),
        ("POST", "/personas", {"name": "n"}),
        ("POST", "/brand-voices", {}),
        ("POST", "/news/stories/abc/analyze", {}),
        ("GET", "/personas", {}),
        ("GET", "/billing/credits", {}),
    ]


def test_charges_are_deterministic_for_a_seed_and_inside_the_documented_bounds() -> None:
    def run_once(seed: int) -> list[int]:
        sim = make(seed=seed, purchased=100_000)

        async def main() -> list[int]:
            async with client(sim) as c:
                out = []
                for method, path, body in _bodies():
                    r = await c.request(method, path, json=body if method == "POST" else None)
                    assert r.status_code == 200, r.text
                    out.append(r.json()["usage"]["credits_used"])
                return out

        return run_virtual(main())

    first = run_once(7)
    assert first == run_once(7)
    for (method, path, body), charged in zip(_bodies(), first, strict=True):
        ep = catalog.find_endpoint(method, path)
        assert ep is not None
        assert ep.low <= charged <= ep.high
        assert charged <= estimate(method, path, body).high
    # the seed matters somewhere
    assert any(run_once(s) != first for s in (1, 2, 3))


@settings(max_examples=200, deadline=None)
@given(sample=st.integers(1, 1000), questions=st.integers(0, 100), seed=st.integers(0, 10**6))
def test_a_focus_group_charge_never_exceeds_the_formula_or_200(
    sample: int, questions: int, seed: int
) -> None:
    body = {"sample_size": sample, "questions": questions}
    ep = catalog.ENDPOINTS["focus_groups"]
    charged = charge_for(ep, body, seed)
    high = estimate("POST", "/focus-groups", body).high
    assert catalog.FOCUS_GROUP_LOW <= charged <= min(ep.high, high)


def test_the_billing_endpoint_has_the_documented_shape_and_counts_in_the_window() -> None:
    sim = make(purchased=40)

    async def run() -> None:
        async with client(sim) as c:
            for i in range(105):
                # one a second keeps the 105 requests inside the 60-per-60 s window
                assert (await c.post("/responses", json={"input": str(i)})).status_code == 200
                await asyncio.sleep(1)
            await asyncio.sleep(60)
            r = await c.get("/billing/credits")
            assert rate(r)[1] == 59  # it counted itself
            r2 = await c.get("/billing/credits")
            assert rate(r2)[1] == 58
            body = r.json()
            assert set(body) == {
                "object",
                "balance",
                "plan_credits_remaining",
                "purchased_credits",
                "plan",
                "monthly_allocation",
                "period_used",
                "auto_recharge",
                "transactions",
                "usage",
            }
            assert body["object"] == "credit_balance"
            assert body["usage"]["credits_used"] == 0
            assert (body["plan"], body["monthly_allocation"]) == ("basic", 2000)
            assert body["balance"] == body["plan_credits_remaining"] + body["purchased_credits"]
            assert body["purchased_credits"] == 40
            assert set(body["auto_recharge"]) >= {
                "enabled",
                "threshold",
                "credits",
                "monthly_limit_eur",
            }
            txns = body["transactions"]
            assert len(txns) == 100
            assert set(txns[0]) == {"id", "type", "amount", "timestamp", "resource"}
            assert txns[0]["id"] == sim.state.transactions[-1].id  # newest first
            assert txns[0]["timestamp"].endswith("Z")
            assert txns[0]["resource"].startswith("/responses resp_")
            assert all(t["type"] == "deduction" and isinstance(t["amount"], int) for t in txns)

    run_virtual(run())


# --- auth and routing -----------------------------------------------------------------------


def test_a_request_without_a_valid_key_gets_401_without_rate_headers() -> None:
    sim = make(rejected_keys=frozenset({"revoked"}))

    async def main() -> None:
        for key in (None, "revoked"):
            async with client(sim, key) as c:
                r = await c.get("/personas")
                assert r.status_code == 401
                err = r.json()["error"]
                assert (err["type"], err["code"]) == ("authentication_error", "invalid_api_key")
                assert "X-RateLimit-Limit" not in r.headers
        async with client(sim, None) as c:
            r = await c.get("/personas", headers={"Authorization": "Basic abc"})
            assert r.status_code == 401

    run_virtual(main())
    assert sim.records.count(status=401) == 3
    assert sim.records.max_window_count() == 0


def test_routes_are_served_under_api_v1_and_at_the_root_and_unknown_routes_get_404() -> None:
    sim = make()

    async def main() -> None:
        async with client(sim, base="http://sim") as root, client(sim) as v1:
            assert (await root.get("/personas")).status_code == 200
            assert (await v1.get("/personas")).status_code == 200
            assert (await root.get("/api/billing/credits")).status_code == 200
            r = await v1.post("/news/stories/s-42/analyze", json={})
            assert r.status_code == 200 and r.json()["story_id"] == "s-42"
            r = await v1.get("/nowhere")
            assert r.status_code == 404
            assert r.json()["error"]["type"] == "invalid_request_error"
            assert "X-RateLimit-Remaining" in r.headers
            assert (await v1.delete("/personas")).status_code == 404

    run_virtual(main())


def test_a_post_with_a_non_json_body_gets_400_and_a_bad_field_names_it() -> None:
    sim = make()

    async def main() -> None:
        async with client(sim) as c:
            r = await c.post("/responses", content=b"{not json")
            assert r.status_code == 400
            assert r.json()["error"]["type"] == "invalid_request_error"
            assert (await c.post("/responses", content=b"[1, 2]")).status_code == 400
            assert (await c.post("/responses")).status_code == 200  # empty body reads as {}
            r = await c.post("/focus-groups", json={"sample_size": "lots"})
            assert r.status_code == 400 and r.json()["error"]["param"] == "sample_size"

    run_virtual(main())
    assert sim.state.transactions[0].type == "deduction" and len(sim.state.transactions) == 1


def test_a_success_carries_an_id_object_and_usage() -> None:
    sim = make()

    async def main() -> dict[str, Any]:
        async with client(sim) as c:
            return (await c.post("/responses", json={"input": "hello"})).json()

    body = run_virtual(main())
    assert body["id"].startswith("resp_") and body["object"] == "response"
    usage = body["usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert 1 <= usage["credits_used"] <= 5


def test_latencies_come_from_the_catalog_scaled_and_deterministic() -> None:
    def latencies(scale: float) -> list[float]:
        sim = make(time_scale=scale, seed=5)

        async def main() -> None:
            async with client(sim) as c:
                for _ in range(5):
                    t = now()
                    await c.post("/generations", json={})
                    assert now() - t == pytest.approx(sim.records[-1].latency)

        run_virtual(main())
        return [r.latency for r in sim.records]

    lo, hi = catalog.ENDPOINTS["generations"].latency
    one = latencies(1.0)
    assert all(lo <= x <= hi for x in one)
    assert latencies(1.0) == one
    assert latencies(0.5) == pytest.approx([x / 2 for x in one])
    assert latencies(0.0) == [0.0] * 5


# --- faults ---------------------------------------------------------------------------------


def test_dropped_connections_reach_the_client_as_transport_errors_some_charged() -> None:
    sim = make(faults=Faults(drop_rate=1.0), seed=1)

    async def main() -> None:
        async with client(sim) as c:
            for _ in range(10):
                with pytest.raises(httpx.TransportError):
                    await c.post("/brand-voices", json={})

    run_virtual(main())
    assert sim.records.count(status=0, code="dropped") == 10
    kinds = {r.fault for r in sim.records}
    assert kinds == {"drop-before", "drop-after"}
    charged = sum(50 for r in sim.records if r.fault == "drop-after")
    assert sim.records.total_charged() == charged == 2000 - sim.state.balance


def test_a_slow_response_outlasts_the_client_timeout_and_is_still_charged() -> None:
    sim = make(faults=Faults(slow_rate=1.0, slow_seconds=100))

    async def main() -> None:
        async with client(sim) as c:
            t = now()
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(c.post("/focus-groups", json={}), timeout=30)
            assert now() - t == pytest.approx(30)
            assert sim.in_flight("focus_groups") == 1  # the slot is still held
            await sim.drain()
            assert now() - t == pytest.approx(100)
            assert sim.in_flight("focus_groups") == 0

    run_virtual(main())
    [rec] = sim.records
    assert (rec.status, rec.fault, rec.client_gone) == (200, "slow", True)
    assert rec.credits > 0 and sim.state.transactions[0].amount == rec.credits


def test_bad_headers_are_missing_malformed_or_negative() -> None:
    sim = make(faults=Faults(bad_headers=1.0), limit=600)
    names = (catalog.HEADER_LIMIT, catalog.HEADER_REMAINING, catalog.HEADER_RESET)

    async def main() -> set[str]:
        seen = set()
        async with client(sim) as c:
            for _ in range(60):
                r = await c.get("/personas")
                values = [r.headers.get(n) for n in names]
                if None in values:
                    seen.add("missing")
                for v in values:
                    if v is None:
                        continue
                    try:
                        seen.add("negative" if int(v) < 0 else "ok")
                    except ValueError:
                        seen.add("malformed")
        return seen

    assert run_virtual(main()) >= {"missing", "malformed", "negative"}


@pytest.mark.parametrize("mode", ["seconds", "http-date", "negative", "huge", "absent"])
def test_retry_after_is_sent_in_the_configured_mode(mode: str) -> None:
    sim = make(faults=Faults(retry_after_mode=mode), limit=1, window_seconds=30)

    async def main() -> httpx.Response:
        async with client(sim) as c:
            await c.get("/personas")
            return await c.get("/personas")

    r = run_virtual(main())
    assert r.status_code == 429
    assert "retry after 30 seconds" in r.json()["error"]["message"]
    value = r.headers.get("Retry-After")
    if mode == "seconds":
        assert value == "30"
    elif mode == "http-date":
        assert value is not None
        assert parsedate_to_datetime(value).timestamp() == math.ceil(WALL0 + 30)
    elif mode == "negative":
        assert value == "-30"
    elif mode == "huge":
        assert value is not None and int(value) >= 10**9
    else:
        assert value is None


def test_a_429_storm_refuses_everything_for_its_duration() -> None:
    sim = make(faults=Faults(storm_start=10, storm_seconds=30))

    async def main() -> None:
        async with client(sim) as c:
            assert (await c.get("/personas")).status_code == 200
            await asyncio.sleep(10)
            r = await c.get("/personas")
            assert (r.status_code, r.headers["Retry-After"]) == (429, "30")
            assert rate(r)[1:] == (0, math.ceil(WALL0 + 40))
            await asyncio.sleep(29)
            assert (await c.get("/personas")).headers["Retry-After"] == "1"
            await asyncio.sleep(1)
            assert (await c.get("/personas")).status_code == 200

    run_virtual(main())
    assert sim.records.count(status=429) == 2
    # the storm's 429s did not count: the last request sees only the first and itself
    assert [r.window_count for r in sim.records] == [1, 1, 1, 2]


def test_foreign_traffic_on_the_same_key_eats_part_of_the_window() -> None:
    sim = make(faults=Faults(foreign_rpm=30))  # one phantom every 2 s, from the first request

    async def main() -> int:
        async with client(sim) as c:
            r = await c.get("/personas")
            assert rate(r)[1] == 60 - 2  # a phantom at t0, then ours
            await asyncio.sleep(59)
            admitted = 0
            while (await c.get("/personas")).status_code == 200:
                admitted += 1
            return admitted

    # at t0+59: 30 phantoms (t0..t0+58) and our first request hold 31 of 60
    assert run_virtual(main()) == 29
    assert sim.records.max_window_count() == 60


def test_the_balance_runs_out_after_the_configured_credits() -> None:
    sim = make(faults=Faults(balance_runs_out_after=100), purchased=5000)

    async def main() -> dict[str, Any]:
        async with client(sim) as c:
            assert (await c.post("/brand-voices", json={})).status_code == 200
            assert (await c.post("/brand-voices", json={})).status_code == 200
            r = await c.post("/brand-voices", json={})
            assert (r.status_code, r.json()) == (402, CREDITS_BODY)
            return (await c.get("/billing/credits")).json()

    assert run_virtual(main())["balance"] == 0
    assert sim.records.total_charged() == 100


def test_the_budget_cap_fault_blocks_spending_beyond_it() -> None:
    sim = make(faults=Faults(budget_cap=50))

    async def main() -> list[int]:
        async with client(sim) as c:
            return [(await c.post("/brand-voices", json={})).status_code for _ in range(2)]

    assert run_virtual(main()) == [200, 402]
    assert sim.records.count(code="budget_exceeded") == 1


def test_hostile_text_carries_escapes_and_markup_but_keeps_codes() -> None:
    sim = make(faults=Faults(hostile_text=True))

    async def main() -> tuple[httpx.Response, httpx.Response]:
        async with client(sim) as c:
            return await c.get("/nowhere"), await c.get("/personas")

    err, ok = run_virtual(main())
    e = err.json()["error"]
    assert "\x1b[2J" in e["message"] and "\x1b]0;pwned\x07" in e["message"]
    assert "[@click=app.quit]" in e["message"] and "[bold red]" in e["message"]
    assert e["code"] == "not_found" and e["param"] == HOSTILE_TEXT
    assert HOSTILE_TEXT in ok.json()["data"][0]["name"]


def test_bad_bodies_on_200s_are_not_json_and_the_work_is_charged() -> None:
    sim = make(faults=Faults(bad_body_rate=1.0), seed=2)

    async def main() -> list[httpx.Response]:
        async with client(sim) as c:
            return [await c.post("/brand-voices", json={}) for _ in range(8)]

    responses = run_virtual(main())
    for r in responses:
        assert r.status_code == 200
        with pytest.raises(ValueError):
            r.json()
    assert any(r.content.startswith(b"{") for r in responses)  # truncated JSON
    assert any(not r.content.startswith(b"{") for r in responses)  # not JSON at all
    assert sim.records.total_charged() == 8 * 50


def test_injected_503s_are_immediate_and_free() -> None:
    sim = make(faults=Faults(error_5xx_rate=1.0), time_scale=1.0, seed=3)

    async def main() -> None:
        async with client(sim) as c:
            for _ in range(10):
                t = now()
                r = await c.post("/brand-voices", json={})
                if r.status_code == 503:
                    assert now() == t
                    assert r.json()["error"]["code"] == "service_unavailable"
                else:
                    assert r.status_code == 500 and now() > t

    run_virtual(main())
    assert sim.records.count(status=503) > 0
    assert all(r.credits == r.refunded == 0 for r in sim.records if r.status == 503)


def test_faults_are_deterministic_for_a_seed() -> None:
    def outcome(seed: int) -> list[tuple[int | None, str | None]]:
        sim = make(faults=Faults(error_5xx_rate=0.3, drop_rate=0.3, bad_body_rate=0.3), seed=seed)

        async def main() -> None:
            async with client(sim) as c:
                for _ in range(30):
                    with contextlib.suppress(httpx.TransportError):
                        await c.post("/responses", json={})

        run_virtual(main())
        return [(r.status, r.fault) for r in sim.records]

    assert outcome(11) == outcome(11)
    assert outcome(11) != outcome(12)


# --- serving on a real port -----------------------------------------------------------------


def test_the_simulator_serves_real_http_with_uvicorn_and_stops() -> None:
    sim = create_sim(SimConfig(time_scale=0.0, limit=3))
    server = sim_server.build_server(sim, "127.0.0.1", 0)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        port = sim_server.bound_port(server)
        for base in (f"http://127.0.0.1:{port}/api/v1", f"http://127.0.0.1:{port}"):
            with httpx.Client(base_url=base, headers={"Authorization": "Bearer k"}, timeout=5) as c:
                r = c.post("/responses", json={"input": "hi"})
                assert r.status_code == 200 and r.json()["usage"]["credits_used"] >= 1
                assert r.headers["X-RateLimit-Limit"] == "3"
        with httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1", timeout=5) as c:
            assert c.get("/personas").status_code == 401
            c.headers["Authorization"] = "Bearer k"
            assert c.get("/billing/credits").status_code == 200
            r = c.get("/personas")
            assert r.status_code == 429 and r.headers["Retry-After"] == "60"
            sim.config.faults.drop_rate = 1.0
            with pytest.raises(httpx.TransportError):
                c.post("/responses", json={}, headers={"Authorization": "Bearer other"})
    finally:
        server.should_exit = True
        thread.join(timeout=5)
    assert not thread.is_alive()
    assert sim.records.count(status=200) == 3


def test_the_server_arguments_build_the_config_and_the_banner() -> None:
    parser = argparse.ArgumentParser()
    sim_server.add_arguments(parser)
    args = parser.parse_args(
        [
            "--port",
            "8123",
            "--tier",
            "basic",
            "--plan",
            "professional",
            "--window-seconds",
            "30",
            "--seed",
            "4",
            "--time-scale",
            "0.1",
            "--purchased",
            "70",
            "--drop-rate",
            "0.2",
            "--retry-after",
            "http-date",
            "--hostile-text",
        ]
    )
    cfg = sim_server.config_from_args(args)
    assert (cfg.effective_limit, cfg.monthly_allocation, cfg.window_seconds) == (
        catalog.TIERS["basic"],
        catalog.PLANS["professional"],
        30,
    )
    assert (cfg.seed, cfg.time_scale, cfg.purchased) == (4, 0.1, 70)
    assert (cfg.faults.drop_rate, cfg.faults.retry_after_mode, cfg.faults.hostile_text) == (
        0.2,
        "http-date",
        True,
    )
    assert sim_server.describe(create_sim(cfg), "127.0.0.1", 8123) == (
        "simulator listening on http://127.0.0.1:8123/api/v1 "
        "(tier basic 120/min, plan professional 5000 credits, window 30 s)"
    )
    with pytest.raises(SystemExit):
        parser.parse_args([])  # --port is required


def test_a_config_that_cannot_exist_is_refused() -> None:
    with pytest.raises(ValueError, match="custom allocation"):
        SimConfig(plan="enterprise")
    assert SimConfig(plan="enterprise", allocation=50_000).monthly_allocation == 50_000
    with pytest.raises(ValueError):
        SimConfig(tier="platinum")
    with pytest.raises(ValueError):
        Faults(retry_after_mode="tomorrow")
    with pytest.raises(ValueError):
        Faults(drop_rate=1.5)
