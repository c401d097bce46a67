"""The mirror on a server that counts calendar windows (mavera_tui/fixed_window.py): one
probe of an early X-RateLimit-Reset tells a fixed window from a sliding one."""

from __future__ import annotations

import math
from typing import Any

from conftest import WALL0

from mavera_tui.api_types import RateHeaders
from mavera_tui.clock import Clock, run_virtual
from mavera_tui.gates.window import WindowGate
from mavera_tui.jobs import JobSpec
from mavera_tui.limiter import SlidingWindow
from mavera_tui.sim import Readings

L, W = 10, 60.0
WALL = 1_000_000.0  # wall clock = WALL + loop time


def cheap(n: int, tag: str = "r") -> list[JobSpec]:
    return [JobSpec(f"{tag}{i}", "POST", "/responses", {"input": f"q{i}"}) for i in range(n)]


def fill(w: SlidingWindow, t0: float, reset_loop: float, *, answer_at: float = 0.5) -> None:
    """Send L at t0, answered with Remaining counting down to 0 and Reset ``reset_loop``."""
    for i in range(L):
        w.reserve()
        w.record_send(t0 + i * 0.001, reserved=True)
    for i in range(L):
        now = t0 + answer_at
        w.observe(t0 + i * 0.001, now, RateHeaders(L, L - 1 - i, WALL + reset_loop), WALL + now)


def probe(w: SlidingWindow, at: float) -> float:
    assert w.available(at) == 1
    w.reserve()
    assert w.available(at) == 0  # one probe, not one per job
    w.record_send(at, reserved=True)
    return at


def test_an_early_reset_is_tried_with_one_request_then_counted_as_calendar_windows() -> None:
    w = SlidingWindow(L, W)
    fill(w, 0.0, reset_loop=20.0)  # full; the server says it resets at 20, we'd say 60
    assert w.available(10.0) == 0
    assert w.next_free(10.0) == 20.0 + w.margin  # woken for the probe, not at 60
    sent = probe(w, 20.0 + w.margin)
    # The answer counts only the probe: the window started again at the boundary.
    w.observe(sent, sent + 0.2, RateHeaders(L, L - 1, WALL + 80.0), WALL + sent + 0.2)
    assert w.calendar.active
    assert w.available(sent + 0.3) == L - 1
    for i in range(L - 1):
        w.reserve()
        w.record_send(sent + 0.3 + i * 0.001, reserved=True)
    assert w.available(30.0) == 0
    assert w.next_free(30.0) == 80.0  # the next calendar boundary, 20 + W
    assert w.available(80.0) == L
    assert w.oldest_expiry(30.0) == 80.0


def test_a_burst_answered_after_the_boundary_it_was_sent_before_is_probed_at_once() -> None:
    # Sent at 19.7, the boundary at 20.0, answered at 20.2: the Reset has passed when it
    # is read, and the next window is open already (a whole window earlier than sliding).
    w = SlidingWindow(L, W)
    fill(w, 19.7, reset_loop=20.0, answer_at=0.5)
    now = 20.2
    assert w.next_free(now) == now
    sent = probe(w, now)
    w.observe(sent, sent + 0.05, RateHeaders(L, L - 1, WALL + 80.0), WALL + sent + 0.05)
    assert w.calendar.active
    assert w.available(sent + 0.1) == L - 1


def test_a_reset_before_the_send_is_not_a_boundary() -> None:
    w = SlidingWindow(L, W)
    fill(w, 19.9, reset_loop=19.0, answer_at=0.3)
    assert w.calendar.candidate is None
    assert w.available(20.3) == 0


def test_a_sliding_server_reporting_the_next_boundary_costs_one_429_then_never_again() -> None:
    w = SlidingWindow(L, W)
    gate = WindowGate(w)
    fill(w, 0.0, reset_loop=20.0)
    margin = w.margin
    sent = probe(w, 20.0 + margin)
    # Refused: the sliding window still holds our first sends.
    w.observe(sent, sent + 0.01, RateHeaders(L, 0, WALL + 20.0 + W), WALL + sent + 0.01)
    gate.note_429(sent + 0.01, sent, 40.0)
    assert w.calendar.refuted and not w.calendar.active
    assert w.margin == margin  # the probe's 429 is not a sign that the server counts late
    # Retry-After is whole seconds: the hold ends at the mirror's room, not up to 1 s later.
    held = gate.hold_key(
        RateHeaders(L, 0, None, 40.0), sent + 0.01, WALL, base=1, cap=60, max_retry_after=300
    )
    assert 39.0 <= held < 40.0
    # Later full windows with an early Reset are not probed again.
    fill(w, 61.0, reset_loop=80.0)
    assert w.available(81.0) == 0
    assert w.next_free(81.0) > 100.0


def test_a_reset_no_earlier_than_the_mirror_is_never_probed() -> None:
    w = SlidingWindow(L, W)
    fill(w, 0.0, reset_loop=60.0)  # oldest + W: what a sliding server says
    assert w.calendar.candidate is None
    assert w.available(30.0) == 0 and w.next_free(30.0) >= 60.0


def test_a_probe_answer_that_still_counts_the_old_sends_refutes() -> None:
    w = SlidingWindow(L, W)
    fill(w, 0.0, reset_loop=20.0)
    sent = probe(w, 20.0 + w.margin)
    # Not refused (a server with one slot we did not know of), but the count holds our
    # first burst: not a calendar window.
    w.observe(sent, sent + 0.2, RateHeaders(L + 1, 0, WALL + 20.0), WALL + sent + 0.2)
    assert w.calendar.refuted and not w.calendar.active


def test_a_429_while_counting_calendar_windows_goes_back_to_sliding() -> None:
    w = SlidingWindow(L, W)
    gate = WindowGate(w)
    fill(w, 0.0, reset_loop=20.0)
    sent = probe(w, 20.0 + w.margin)
    w.observe(sent, sent + 0.2, RateHeaders(L, L - 1, WALL + 80.0), WALL + sent + 0.2)
    assert w.calendar.active
    w.reserve()
    w.record_send(25.0, reserved=True)
    gate.note_429(25.1, 25.0, 1.0)
    assert not w.calendar.active and w.calendar.refuted
    assert w.available(30.0) == 0  # sliding again: the first burst is still in its window


def test_the_engines_own_balance_read_as_the_probe_is_held_only_to_the_mirrors_room(
    make_rig: Any,
) -> None:
    # A sliding server whose Reset is the next minute boundary (40 s into the run: the
    # clock starts 20 s into a minute). The start's balance read goes at 0.3 s, the jobs
    # fill the window at ~0.5 s; the early Reset is probed at 40 s + margin, and here the
    # probe is the engine's balance read. Its 429 says Retry-After 21 (ceil 60.3 - 40.12)
    # but the mirror has room again once the jobs leave the window, at ~60.5 + margin: the
    # next job must not wait the half second Retry-After's rounding adds here (measured:
    # a loopback run at 1.106 of its bound, against a 10% target).
    async def main() -> tuple[Any, list[float]]:
        rig = await make_rig(
            {"limit": L, "window_seconds": W, "readings": Readings(reset="minute")},
            clock=Clock(wall0=WALL0 + 20),
            window_seconds=W,
            limit=L,
            start=False,
            balance_read="none",
        )
        rig.clock.wall()  # its wall clock starts now: the boundary is at 40 s from here
        await rig.clock.sleep(0.3)
        await rig.sched.start(batch=L + 1)
        await rig.sched.submit_many(cheap(L - 1))  # with the start's balance read: L
        await rig.sched.wait_idle()
        w = rig.sched.window
        assert w.calendar.candidate is not None  # the early Reset is to be tried
        await rig.sched.balance.refresh()  # the read: refused, a 429
        probe = [r for r in rig.sim.records if "billing" in r.path][1:]  # the start's first
        assert [r.status for r in probe] == [429] and 1040.0 <= probe[0].t < 1041.0
        assert w.calendar.refuted and w.margin == w.margin_floor
        await rig.sched.submit_many(cheap(1, "late"))
        await rig.sched.wait_idle()
        await rig.close()
        return rig.sim, [r.t for r in rig.sim.records if r.path.endswith("/responses")]

    sim, sent = run_virtual(main())
    assert sim.records.count(status=429) == 1
    (refused,) = [r for r in sim.records if r.status == 429]
    retry_after = math.ceil(sim.records[0].t + W - refused.t)  # what the server said
    assert retry_after == 21
    assert sent[-1] < sent[0] + W + 0.2 < refused.t + retry_after
