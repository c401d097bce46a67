"""The shared state's scripts against a real redis-server: atomic admission under
concurrent callers, leases that expire and come back, idempotent release, Redis time, the
key-wide hold, the fleet-wide priority order, the foreign estimate, the ledger, and the
read-only fleet view."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from mavera_tui.catalog import ENDPOINTS
from mavera_tui.config import SharedSettings
from mavera_tui.estimate import Estimate
from mavera_tui.gates import Scheduler
from mavera_tui.gates.model import Job
from mavera_tui.jobs import JobSpec
from mavera_tui.limiter import SlidingWindow
from mavera_tui.shared import FleetView, SharedState, key_prefix
from mavera_tui.shared import state as st
from mavera_tui.shared.fleet import Fleet, SharedSlotGate, SharedWindowGate
from mavera_tui.shared.state import AdmitRequest, Release

API_KEY = "mvra_secret_key_never_stored"


def run(coro_fn: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(coro_fn())


def req(lease: str, ep: str = "responses", cap: int = 0, prio: int = 0, cost: int = 0) -> Any:
    return AdmitRequest(lease, ep, cap, prio, cost * 2 if cost else 0, cost)


async def admit(
    s: SharedState,
    proc: str,
    jobs: list[AdmitRequest],
    *,
    limit: int = 100,
    ttl: float = 30.0,
    best: int | None = None,
    window: float = 3.0,
    known_epoch: str | None = None,
    queued: int | None = None,
) -> st.AdmitResult:
    return await s.admit(
        proc,
        jobs,
        limit=limit,
        window=window,
        margin=0.1,
        ttl=ttl,
        best=best,
        known_epoch=known_epoch,
        queued=queued,
    )


@pytest.fixture
def prefix() -> str:
    return key_prefix(API_KEY)


def test_key_prefix_is_a_hash_with_one_tag() -> None:
    p = key_prefix(API_KEY)
    assert API_KEY not in p
    assert p.count("{") == 1 and p.count("}") == 1
    assert p == key_prefix(API_KEY) != key_prefix(API_KEY + "x")


def test_concurrent_admission_never_exceeds_the_limit(redis_server: Any, prefix: str) -> None:
    """Eight connections, 200 jobs in random batches at once, limit 37: exactly 37 admitted."""

    async def main() -> None:
        clients = [SharedState(redis_server.url, prefix, socket_timeout=5) for _ in range(8)]
        rng = random.Random(3)
        tasks = []
        n = 0
        for i in range(60):
            k = rng.randint(1, 6)
            jobs = [req(f"p{i % 8}#{n + j}") for j in range(k)]
            n += k
            tasks.append(admit(clients[i % 8], f"p{i % 8}", jobs, limit=37))
        results = await asyncio.gather(*tasks)
        admitted = sum(r.codes.count(st.ADMITTED) for r in results)
        assert admitted == 37
        assert await clients[0].r.zcard(prefix + "win") == 37
        refused = [r for r in results if st.REFUSED_WINDOW in r.codes]
        assert refused and all(r.retry_in() is not None for r in refused)
        for c in clients:
            await c.close()

    run(main)


def test_capped_slots_leases_expire_and_come_back(redis_server: Any, prefix: str) -> None:
    async def main() -> None:
        s = SharedState(redis_server.url, prefix, socket_timeout=5)
        r = await admit(s, "a", [req(f"a#{i}", "video_analyses", 3) for i in range(5)], ttl=0.4)
        assert r.codes == [1, 1, 1, 2, 2]
        assert r.retry_in() is not None and 0.2 < r.retry_in() <= 0.4  # the first expiry
        r = await admit(s, "b", [req("b#1", "video_analyses", 3)], ttl=0.4)
        assert r.codes == [st.REFUSED_SLOT]
        await asyncio.sleep(0.5)  # process a "died": its leases run out
        r = await admit(s, "b", [req(f"b#{i}", "video_analyses", 3) for i in range(2, 6)], ttl=5)
        assert r.codes == [1, 1, 1, 2]
        assert await s.r.zcard(prefix + "slots:video_analyses") == 3
        await s.close()

    run(main)


def test_release_is_idempotent_and_settles_credits(redis_server: Any, prefix: str) -> None:
    async def main() -> None:
        s = SharedState(redis_server.url, prefix, socket_timeout=5)
        await s.set_balance(100)
        r = await admit(s, "a", [req("a#1", "mave", 10, cost=10), req("a#2", "mave", 10, cost=20)])
        assert r.codes == [1, 1]
        assert await s.r.get(prefix + "resv") == "30"
        assert await s.release([Release("a#1", credits=7)], window=3) == 1
        assert await s.release([Release("a#1", credits=7)], window=3) == 0  # again: nothing
        assert await s.r.get(prefix + "resv") == "20"
        assert await s.r.get(prefix + "balance") == "93"  # charged once
        assert await s.r.zcard(prefix + "slots:mave") == 1
        # The fleet's balance less reservations refuses what does not fit (93 - 20 < 80).
        r = await admit(s, "b", [req("b#1", "mave", 10, cost=40)])
        assert r.codes == [st.REFUSED_CREDITS]
        await s.close()

    run(main)


def test_heartbeat_renews_leases(redis_server: Any, prefix: str) -> None:
    async def main() -> None:
        s = SharedState(redis_server.url, prefix, socket_timeout=5)
        await admit(s, "a", [req("a#1", "focus_groups", 5)], ttl=0.3)
        for _ in range(6):  # 0.6 s, twice the lease time, renewed every 0.1 s
            await asyncio.sleep(0.1)
            _, live = await s.heartbeat(
                "a",
                host="h",
                pid=1,
                role="run",
                in_flight=1,
                queued=0,
                best=None,
                ttl=0.3,
                leases=["a#1"],
            )
            assert live == 1
        assert await s.r.zcard(prefix + "slots:focus_groups") == 1
        await asyncio.sleep(0.4)  # no heartbeat: gone at the next admission
        await admit(s, "b", [])
        assert await s.r.zcard(prefix + "slots:focus_groups") == 0
        await s.close()

    run(main)


def test_times_are_redis_time(redis_server: Any, prefix: str) -> None:
    """Admission times are the Redis server's: the caller passes no time at all."""

    async def main() -> None:
        s = SharedState(redis_server.url, prefix, socket_timeout=5)
        sec, usec = await s.r.time()
        r = await admit(s, "a", [req("a#1")])
        score = await s.r.zscore(prefix + "win", "a#1")
        redis_ms = sec * 1000 + usec / 1000
        assert abs(score - redis_ms) < 200 and abs(r.now_ms - score) < 1
        await s.close()

    run(main)


def test_429_hold_and_a_lost_state_hold_everyone(redis_server: Any, prefix: str) -> None:
    async def main() -> None:
        s = SharedState(redis_server.url, prefix, socket_timeout=5)
        first = await admit(s, "a", [req("a#1")])
        await s.release([Release("a#1", hold_ms=400)], window=3)
        r = await admit(s, "b", [req("b#1")])
        assert r.codes == [st.REFUSED_HOLD] and 0.2 < (r.retry_in() or 0) <= 0.4
        await s.r.flushall()  # Redis lost everything (a restart without persistence)
        r = await admit(s, "a", [req("a#2")], window=1.0, known_epoch=first.epoch)
        assert r.epoch != first.epoch
        assert r.codes == [st.REFUSED_HOLD] and 0.9 < (r.retry_in() or 0) <= 1.2
        await s.close()

    run(main)


def test_lower_priority_leaves_the_last_room(redis_server: Any, prefix: str) -> None:
    async def main() -> None:
        s = SharedState(redis_server.url, prefix, socket_timeout=5)
        await admit(s, "hi", [], best=5)  # "hi" has priority-5 work waiting
        r = await admit(s, "lo", [req(f"lo#{i}") for i in range(5)], limit=4)
        assert r.codes == [1, 1, 1, st.YIELDED, st.YIELDED]
        r = await admit(s, "hi", [req("hi#1", prio=5)], limit=4)
        assert r.codes == [1]
        await s.close()

    run(main)


def test_foreign_traffic_estimate_narrows_the_window(redis_server: Any, prefix: str) -> None:
    async def main() -> None:
        s = SharedState(redis_server.url, prefix, socket_timeout=5)
        await admit(s, "a", [req("a#1")], limit=20)
        # The server counted 10 where the fleet had sent 1: 9 are someone else's.
        await s.release([Release("a#1", remaining=10, limit=20, fresh=True)], window=3)
        r = await admit(s, "a", [req(f"a#{i}") for i in range(2, 20)], limit=20)
        assert r.foreign == 9
        # 20 - 1 sent - 9 foreign - 3 slack = 7 more
        assert r.codes.count(st.ADMITTED) == 7
        await s.close()

    run(main)


def test_ledger_stream_and_no_key_anywhere(redis_server: Any, prefix: str) -> None:
    async def main() -> None:
        s = SharedState(redis_server.url, prefix, socket_timeout=5)
        await admit(s, "a", [req("a#1")])
        await s.release([Release("a#1", credits=3, entry={"job": "j1", "status": 200})], window=3)
        rows = await s.r.xrange(prefix + "ledger")
        assert len(rows) == 1 and '"job":"j1"' in rows[0][1]["a"] and "rt" in rows[0][1]
        for k in await s.r.keys("*"):
            assert k.startswith(prefix) and API_KEY not in k
            dump = await s.r.dump(k)
            assert dump is None or API_KEY.encode() not in dump
        await s.close()

    run(main)


def test_fleet_view_lists_processes_and_window_shares(redis_server: Any, prefix: str) -> None:
    async def main() -> None:
        s = SharedState(redis_server.url, prefix, socket_timeout=5)
        await admit(s, "h1:10", [req(f"h1:10#{i}") for i in range(3)])
        await admit(s, "h2:20", [req("h2:20#1", "mave", 10)])
        for proc, host, role in (("h1:10", "h1", "run"), ("h2:20", "h2", "record")):
            await s.heartbeat(
                proc,
                host=host,
                pid=int(proc.split(":")[1]),
                role=role,
                in_flight=1,
                queued=4,
                best=2 if role == "run" else None,
                ttl=5,
                leases=[],
            )
        await s.add_alert({"proc": "h2:20", "level": "error", "message": "boom"})
        view = FleetView(s, window=3.0)
        procs = {p.proc: p for p in await view.read()}
        assert set(procs) == {"h1:10", "h2:20"}
        assert procs["h1:10"].window_share == 3 and procs["h2:20"].window_share == 1
        assert procs["h1:10"].best_waiting == 2 and procs["h2:20"].best_waiting is None
        assert procs["h2:20"].role == "record" and procs["h2:20"].alive
        snap = await view.snapshot()
        assert snap.window_used == 4 and snap.slots["mave"] == 1
        assert snap.alerts[0]["message"] == "boom"
        await s.leave("h1:10")
        assert [p.proc for p in await view.read()] == ["h2:20"]
        await s.close()

    run(main)


def test_unreachable_redis_is_one_clear_error() -> None:
    async def main() -> None:
        s = SharedState("redis://127.0.0.1:1/0", key_prefix("k"), socket_timeout=0.2)
        with pytest.raises(st.SharedUnavailable):
            await admit(s, "a", [req("a#1")])
        await s.close()

    run(main)


def test_a_write_moves_its_admission_before_the_answer_comes(
    redis_server: Any, prefix: str
) -> None:
    """Admitted, written 0.4 s later, still running: the fleet's window keeps it from its
    write, as the server counts it (indie fleet: a long job admitted 0.3 s before its write
    left the window by its admission, and another process's send got a 429)."""

    async def main() -> None:
        s = SharedState(redis_server.url, prefix, socket_timeout=5)
        r = await admit(s, "a", [req("a#1"), req("a#2")], limit=2, window=1.0)
        assert r.codes == [1, 1]
        admitted = await s.r.zscore(prefix + "win", "a#1")
        await s.written([("a#1", 0.4), ("a#gone", 0.4)])  # an unknown lease: nothing
        assert await s.r.zscore(prefix + "win", "a#1") == pytest.approx(admitted + 400, abs=1)
        assert await s.r.zscore(prefix + "win", "a#gone") is None
        await asyncio.sleep(1.0 + 0.1 + 0.15)  # a#2 has left the window; a#1 has not
        r = await admit(s, "b", [req("b#1"), req("b#2")], limit=2, window=1.0)
        assert r.codes == [st.ADMITTED, st.REFUSED_WINDOW]
        await s.close()

    run(main)


def test_an_answer_released_late_does_not_count_the_fleets_own_sends_as_foreign(
    redis_server: Any, prefix: str
) -> None:
    """A burst of 10 at 0 and a send at 1.0 s, counted with the burst by the server (11 in
    its window); the send's answer released 1.2 s later (a loaded process), after another
    admission. The fleet's log must still have the burst to reconcile with: it had pruned
    it at ``now - window - margin``, and the fleet took its own 10 for foreign traffic (a
    bench run with no foreign traffic showed an estimate of 78 of 120, held a window)."""

    async def main() -> None:
        s = SharedState(redis_server.url, prefix, socket_timeout=5)
        r = await admit(s, "a", [req(f"a#{i}") for i in range(10)], limit=20, window=2.0)
        assert r.codes.count(st.ADMITTED) == 10
        await asyncio.sleep(1.0)
        r = await admit(s, "b", [req("b#1")], limit=20, window=2.0)
        assert r.codes == [st.ADMITTED]
        await asyncio.sleep(1.2)  # the burst has left the window: room for all 20 again
        r = await admit(s, "c", [req("c#1")], limit=20, window=2.0)
        assert r.room == 18
        await s.release([Release("b#1", remaining=20 - 11, limit=20, fresh=True)], window=2.0)
        r = await admit(s, "c", [req("c#2")], limit=20, window=2.0)
        assert r.foreign == 0
        assert r.room == 17
        await s.close()

    run(main)


def test_a_send_at_the_windows_edge_does_not_take_the_last_burst_for_foreign(
    redis_server: Any, prefix: str
) -> None:
    """The server counts a send a little after its write (a burst's last ones tens of ms
    after): a send just past the window's edge from a burst finds the server still counting
    the burst that the fleet's log has just let go. Within the margin, those are the fleet's
    own, not another client's (a bench run with no foreign traffic: an estimate of 117 of
    120 from one such answer, held a window)."""

    async def main() -> None:
        s = SharedState(redis_server.url, prefix, socket_timeout=5)
        r = await admit(s, "a", [req(f"a#{i}") for i in range(10)], limit=20, window=1.0)
        assert r.codes.count(st.ADMITTED) == 10
        r = await admit(s, "b", [req("b#1")], limit=20, window=1.0)
        sent = await s.r.zscore(prefix + "win", "b#1")
        # The burst's log entries 30 ms older than the window before b#1; the server counted
        # them 40 ms after those writes, so all 10 were in its window with b#1: 11.
        await s.r.zadd(prefix + "win", {f"a#{i}": sent - 1000 - 30 for i in range(10)}, xx=True)
        await s.release(
            [Release("b#1", remaining=20 - 11, limit=20, fresh=True)], window=1.0, margin=0.1
        )
        r = await admit(s, "c", [req("c#1")], limit=20, window=1.0)
        assert r.foreign == 0
        # Beyond what the fleet's sends could explain, it is still someone else's: the
        # burst well inside d#1's window, with b#1, c#1 and d#1: 13 of the fleet's, 18
        # counted.
        r = await admit(s, "d", [req("d#1")], limit=20, window=1.0)
        sent = await s.r.zscore(prefix + "win", "d#1")
        await s.r.zadd(prefix + "win", {f"a#{i}": sent - 500 for i in range(10)}, xx=True)
        await s.release(
            [Release("d#1", remaining=20 - 18, limit=20, fresh=True)], window=1.0, margin=0.1
        )
        r = await admit(s, "d", [req("d#2")], limit=20, window=1.0)
        assert r.foreign == 5
        await s.close()

    run(main)


class _SlowAnswer(SharedState):
    """Admission whose answer reaches the process 0.3 s after Redis admitted (a busy loop)."""

    async def admit(self, *a: Any, **kw: Any) -> st.AdmitResult:
        res = await super().admit(*a, **kw)
        await asyncio.sleep(0.3)
        return res


def test_a_write_after_a_late_answer_is_logged_no_earlier_than_the_write(
    redis_server: Any, prefix: str
) -> None:
    """The write's delay is measured from when the admission was asked, not from when its
    answer was read: an answer read 0.3 s late moved the log entry 0.3 s short of the write,
    and the entry left the fleet's window while the server still counted the send."""

    async def main() -> None:
        state = _SlowAnswer(redis_server.url, prefix)
        fleet = Fleet(state, SharedSettings(), role="run")
        sched = Scheduler(transport=None)  # type: ignore[arg-type]  # nothing is sent
        fleet.attach(sched)
        ep = ENDPOINTS["responses"]
        job = Job(JobSpec("j1", ep.method, ep.path, {}, 0), ep, Estimate(ep, 0, 5, "t"), 1)
        assert await fleet.admit([job]) == [job]
        sec, usec = await state.r.time()
        write_ms = sec * 1000 + usec / 1000  # the write is after this, in Redis's time
        fleet.written(job)
        await fleet._send_pending()
        score = await state.r.zscore(prefix + "win", fleet.job_lease["j1"])
        assert score >= write_ms - 5
        assert score <= write_ms + 150  # moved by the write's delay, not twice the answer's
        await state.close()

    run(main)


def test_work_left_to_others_capped_jobs_is_told_when_room_past_them_returns(
    redis_server: Any, prefix: str
) -> None:
    """Uncapped jobs yielded to another process's capped need learn when the window has
    room past it again (the oldest admission's exit), not a polling pause: at a window's
    turn the room comes back within tens of ms, and a 0.6 s pause left it idle."""

    async def main() -> None:
        s = SharedState(redis_server.url, prefix, socket_timeout=5)
        await s.admit(
            "b", [], limit=10, window=1.0, margin=0.1, ttl=30, best=None, known_epoch=None, need=5
        )
        r = await admit(s, "a", [req(f"a#{i}") for i in range(7)], limit=10, window=1.0)
        assert r.codes == [st.ADMITTED] * 5 + [st.YIELDED] * 2
        oldest = await s.r.zscore(prefix + "win", "a#0")
        assert r.retry_ms == pytest.approx(oldest + 1000 + 100, abs=0.01)
        await s.close()

    run(main)


def test_a_process_keeps_room_for_its_own_capped_jobs_too(redis_server: Any, prefix: str) -> None:
    """Its own capped need (``need``) holds its own uncapped work back as the others' does:
    its loop keeps it only from its own sends' room, which at a window's turn is all of it,
    so three processes filled each turn with uncapped work and capped slots idled."""

    async def main() -> None:
        s = SharedState(redis_server.url, prefix, socket_timeout=5)

        async def admit(reqs: list[Any]) -> list[int]:
            r = await s.admit(
                "a",
                reqs,
                limit=10,
                window=1.0,
                margin=0.1,
                ttl=30,
                best=None,
                known_epoch=None,
                need=5,
            )
            return list(r.codes)

        assert (
            await admit([req(f"a#{i}") for i in range(7)]) == [st.ADMITTED] * 5 + [st.YIELDED] * 2
        )
        # Its capped jobs take the room kept for them.
        caps = [req(f"a#c{i}", ep="mave", cap=10) for i in range(5)]
        assert await admit(caps) == [st.ADMITTED] * 5
        await s.close()

    run(main)


def test_fleet_gates_close_uncapped_work_and_wake_when_the_fleets_room_expires() -> None:
    """Uncapped endpoints stay closed while the fleet keeps the room for capped jobs (one
    refused call per job otherwise), and the loop looks again when the fleet's room as last
    heard is no longer believed (a batch it held back waited for the next answer)."""

    fleet: Any = type("F", (), {"closed_for_redis": lambda self: False, "live": 3})()
    slots = SharedSlotGate(100, fleet)
    slots.uncapped_until = 5.0
    assert slots.free(ENDPOINTS["responses"], 4.0) == 0
    assert slots.free(ENDPOINTS["mave"], 4.0) > 0
    assert 5.0 in slots.next_open(4.0)
    assert slots.free(ENDPOINTS["responses"], 5.0) > 0
    gate = SharedWindowGate(SlidingWindow(120, 6.0), fleet)
    gate.heard(3, 10.0)
    assert gate.room(10.0) <= 3
    assert gate.hint_until in gate.next_open(10.0, True)


def test_at_a_windows_turn_the_last_turns_burst_does_not_hide_foreign_traffic(
    redis_server: Any,
) -> None:
    """The fleet admits a window's turn a margin after the last one: the last turn's burst
    lies a whole margin before a turn-send's window, which the server no longer counts. It
    must not explain away another client's traffic (crediting the whole margin did: with
    30% foreign traffic the estimate stayed at 13-26 of 36, and 429s came at each turn)."""

    async def main() -> None:
        s = SharedState(redis_server.url, key_prefix("mvra_another_key"), socket_timeout=5)
        p = s.prefix
        r = await admit(s, "a", [req(f"a#{i}") for i in range(10)], limit=20, window=1.0)
        r = await admit(s, "e", [req("e#1")], limit=20, window=1.0)
        sent = await s.r.zscore(p + "win", "e#1")
        await s.r.zadd(p + "win", {f"a#{i}": sent - 1000 - 100 for i in range(10)}, xx=True)
        await s.release(
            [Release("e#1", remaining=20 - 1 - 8, limit=20, fresh=True)], window=1.0, margin=0.1
        )
        r = await admit(s, "e", [req("e#2")], limit=20, window=1.0)
        assert r.foreign == 8
        await s.close()

    run(main)
