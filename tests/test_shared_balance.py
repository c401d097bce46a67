"""One balance read per fleet (``--shared``), against a real redis-server: a read published
to the fleet is adopted by the others (kept current by the fleet's settlements) until it is
too old, the fleet went idle, or a 402 contradicted it; one process at a time claims the
read; the 402 park lasts while a parked process polls; a free read takes only room that no
queued send of the fleet needs."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from test_shared_state import admit

from mavera_tui.shared import SharedState, key_prefix
from mavera_tui.shared import state as st
from mavera_tui.shared.balance import adopted
from mavera_tui.shared.state import AdmitRequest, Release

API_KEY = "mvra_balance_test_key"


def run(coro_fn: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(coro_fn())


@pytest.fixture
def prefix() -> str:
    return key_prefix(API_KEY)


def paid(lease: str, cost: int = 10) -> AdmitRequest:
    return AdmitRequest(lease, "responses", 0, 0, cost * 2, cost)


async def beat(s: SharedState, proc: str, *, ttl: float = 30.0, parked: bool = False) -> None:
    await s.heartbeat(
        proc,
        host="h",
        pid=1,
        role="run",
        in_flight=0,
        queued=0,
        best=None,
        ttl=ttl,
        leases=[],
        parked=parked,
    )


def test_a_published_read_is_adopted_less_what_the_fleet_was_charged(
    redis_server: Any, prefix: str
) -> None:
    async def main() -> None:
        s = SharedState(redis_server.url, prefix, socket_timeout=5)
        assert await s.take_balance("b", claim_ttl=2, claim=False) == "none"
        fields = {"plan_remaining": 800, "purchased": 200, "allocation": 1000, "period_used": 200}
        assert await s.set_balance(1000, proc="a", fields=fields)
        r = await admit(s, "a", [paid("a#1")])
        assert r.codes == [st.ADMITTED]
        await s.release([Release("a#1", credits=7)], window=3)
        got = await s.take_balance("b", claim_ttl=2)
        assert not isinstance(got, str)
        assert (got.credits, got.read, got.by) == (993, 1000, "a") and 0 <= got.age < 2
        bal = adopted(got)
        # Charged from the plan first, as the API takes it.
        assert (bal.total, bal.plan_remaining, bal.purchased, bal.period_used) == (
            993,
            793,
            200,
            207,
        )
        await s.close()

    run(main)


def test_one_process_claims_the_read_the_others_wait_then_adopt(
    redis_server: Any, prefix: str
) -> None:
    async def main() -> None:
        s = SharedState(redis_server.url, prefix, socket_timeout=5)
        got = await asyncio.gather(*(s.take_balance(p, claim_ttl=2) for p in ("a", "b", "c")))
        assert sorted(got) == ["claimed", "wait", "wait"]  # type: ignore[type-var]
        reader = "abc"[got.index("claimed")]
        assert await s.take_balance(reader, claim_ttl=2) == "claimed"  # renewed, still its
        await s.set_balance(500, proc=reader)  # published: the claim ends
        for p in "abc":
            fresh = await s.take_balance(p, claim_ttl=2)
            assert not isinstance(fresh, str) and fresh.credits == 500
        assert await s.r.get(prefix + "balclaim") is None
        await s.close()

    run(main)


def test_a_claimer_that_dies_or_gives_up_lets_another_claim(redis_server: Any, prefix: str) -> None:
    async def main() -> None:
        s = SharedState(redis_server.url, prefix, socket_timeout=5)
        assert await s.take_balance("dead", claim_ttl=0.2) == "claimed"
        assert await s.take_balance("b", claim_ttl=0.2) == "wait"
        await asyncio.sleep(0.3)  # not renewed: it expired
        assert await s.take_balance("b", claim_ttl=0.2) == "claimed"
        await s.drop_claim("c")  # not c's: nothing happens
        assert await s.take_balance("c", claim_ttl=0.2) == "wait"
        await s.drop_claim("b")  # b's read failed: c may read at once
        assert await s.take_balance("c", claim_ttl=0.2) == "claimed"
        await s.close()

    run(main)


def test_a_402_contradicts_the_balance_and_reads_admitted_before_it(
    redis_server: Any, prefix: str
) -> None:
    async def main() -> None:
        s = SharedState(redis_server.url, prefix, socket_timeout=5)
        await s.set_balance(1000, proc="a")
        before = await admit(s, "a", [AdmitRequest("a#read", "billing_credits", 0, 0, 0, 0)])
        await admit(s, "a", [paid("a#1")])
        await s.release([Release("a#1", park_ms=5000)], window=3)  # a 402
        assert await s.take_balance("b", claim_ttl=2, claim=False) == "none"  # not adopted
        # A read admitted before the 402 reached the fleet may predate it: it ends nothing.
        assert not await s.set_balance(40, proc="a", read_at_ms=before.now_ms)
        assert await s.r.exists(prefix + "park") == 1
        assert await s.take_balance("b", claim_ttl=2, claim=False) == "none"
        # A read admitted after it: the fleet's balance, and a positive one ends the park.
        after = await admit(s, "a", [AdmitRequest("a#read2", "billing_credits", 0, 0, 0, 0)])
        assert await s.set_balance(40, proc="a", read_at_ms=after.now_ms)
        assert await s.r.exists(prefix + "park") == 0
        fresh = await s.take_balance("b", claim_ttl=2, claim=False)
        assert not isinstance(fresh, str) and fresh.credits == 40
        await s.close()

    run(main)


def test_a_balance_too_old_or_of_an_idle_fleet_is_not_adopted(
    redis_server: Any, prefix: str
) -> None:
    async def main() -> None:
        s = SharedState(redis_server.url, prefix, socket_timeout=5)
        await s.set_balance(100, proc="a", fresh=0.25, idle=30)
        assert not isinstance(await s.take_balance("b", claim_ttl=2, claim=False), str)
        await asyncio.sleep(0.35)
        assert await s.take_balance("b", claim_ttl=2, claim=False) == "none"  # too old
        # Idle: kept while the fleet calls (heartbeats renew it), gone once nobody did
        # for a lease time. It goes for admission's credit check too.
        await s.set_balance(100, proc="a", fresh=60, idle=0.3)
        for _ in range(4):
            await asyncio.sleep(0.15)
            await beat(s, "a", ttl=0.3)
        assert not isinstance(await s.take_balance("b", claim_ttl=2, claim=False), str)
        await asyncio.sleep(0.45)
        assert await s.take_balance("b", claim_ttl=2, claim=False) == "none"
        assert await s.r.exists(prefix + "balance") == 0
        await s.close()

    run(main)


def test_the_park_lasts_while_a_parked_process_beats(redis_server: Any, prefix: str) -> None:
    """A 402's park does not run out while a process polls for credits (its poll may wait a
    whole window for room): its heartbeat renews it; once nobody renews, it ends."""

    async def main() -> None:
        s = SharedState(redis_server.url, prefix, socket_timeout=5)
        await s.set_balance(1000, proc="a")
        await admit(s, "a", [paid("a#1")])
        await s.release([Release("a#1", park_ms=300)], window=3)
        for _ in range(5):  # 0.75 s, more than twice the park
            await asyncio.sleep(0.15)
            await beat(s, "a", ttl=0.3, parked=True)
        r = await admit(s, "b", [paid("b#1")])
        assert r.codes == [st.REFUSED_PARK]
        await beat(s, "b", ttl=0.3, parked=False)  # b is not parked itself: no renewal
        await asyncio.sleep(0.4)
        r = await admit(s, "b", [paid("b#2")])
        assert r.codes == [st.ADMITTED]
        await s.close()

    run(main)


def test_a_parked_job_stays_parked_when_the_window_is_full(redis_server: Any, prefix: str) -> None:
    """Refused for the park before the window: it keeps waiting for credits rather than
    looking queued whenever the window is full (a run's end counts those apart)."""

    async def main() -> None:
        s = SharedState(redis_server.url, prefix, socket_timeout=5)
        await admit(s, "a", [paid("a#1")], limit=2)
        await s.release([Release("a#1", park_ms=5000)], window=3)
        await admit(s, "a", [AdmitRequest("a#2", "responses", 0, 0, 0, 0)], limit=2)  # free
        r = await admit(
            s, "b", [paid("b#1"), AdmitRequest("b#2", "responses", 0, 0, 0, 0)], limit=2
        )
        assert r.codes == [st.REFUSED_PARK, st.REFUSED_WINDOW]
        await s.close()

    run(main)


def free_read(lease: str) -> AdmitRequest:
    return AdmitRequest(lease, "billing_credits", 0, st.FREE_PRIORITY, 0, 0)


def test_a_free_read_takes_only_room_no_queued_send_needs(redis_server: Any, prefix: str) -> None:
    """Limit 10, 7 just sent (room 3). While the fleet's queued jobs (each process's count
    as of its last call) could use that room, a free read is refused; once they fit in it
    with one to spare, or nothing is queued, it is admitted."""

    async def main() -> None:
        s = SharedState(redis_server.url, prefix, socket_timeout=5)
        await admit(s, "a", [paid(f"a#{i}", 0) for i in range(5)], limit=10, queued=2)
        await admit(s, "b", [paid(f"b#{i}", 0) for i in range(2)], limit=10, queued=1)
        r = await admit(s, "c", [free_read("c#r1")], limit=10, queued=0)
        assert r.codes == [st.YIELDED] and r.room == 3  # 3 queued, 3 room: all needed
        await admit(s, "b", [], limit=10, queued=0)  # one fewer queued: one to spare
        r = await admit(s, "c", [free_read("c#r2")], limit=10, queued=0)
        assert r.codes == [st.ADMITTED]
        # The reader's own queue counts too.
        r = await admit(s, "c", [free_read("c#r3")], limit=10, queued=1)
        assert r.codes == [st.YIELDED]
        await admit(s, "a", [], limit=10, queued=0)
        r = await admit(s, "c", [free_read("c#r4")], limit=10, queued=0)
        assert r.codes == [st.ADMITTED]
        await s.close()

    run(main)


def test_jobs_refused_for_the_window_count_as_queued(redis_server: Any, prefix: str) -> None:
    """A process that asked for 8 and got 4 (limit 4) still has 4 waiting, although it
    said it had none besides those 8: once the window turns, a free read does not take the
    room they need."""

    async def main() -> None:
        s = SharedState(redis_server.url, prefix, socket_timeout=5)
        r = await admit(s, "b", [paid(f"b#{i}", 0) for i in range(8)], limit=4, queued=0)
        assert r.codes.count(st.ADMITTED) == 4
        await asyncio.sleep(0.45)  # window 0.3 s + margin 0.1: the 4 left it
        r = await admit(s, "c", [free_read("c#r")], limit=4, window=0.3, queued=0)
        assert r.codes == [st.YIELDED] and r.room == 4
        await s.close()

    run(main)
