"""Snapshot tests of the monitor on the frozen demo state, at the sizes operators use."""

from __future__ import annotations

import os
import time

from mavera_tui.ui.app import create_app
from mavera_tui.ui.fixtures import FrozenEngine, demo_history

# Rendered clock times are local time: pin the zone so the baselines match everywhere.
os.environ["TZ"] = "UTC"
time.tzset()


def demo_app():
    return create_app(
        FrozenEngine(), history=demo_history(), watch_terminal=False, show_health=False
    )


def test_main_screen_80x24(snap_compare):
    assert snap_compare(demo_app(), terminal_size=(80, 24))


def test_main_screen_200x60(snap_compare):
    assert snap_compare(demo_app(), terminal_size=(200, 60))


def test_new_job_form_100x30(snap_compare):
    async def fill(pilot):
        await pilot.press("n")
        await pilot.pause()
        pilot.app.screen.query_one("#sample_size").value = "50"
        pilot.app.screen.query_one("#questions").value = "5"
        await pilot.pause()

    assert snap_compare(demo_app(), terminal_size=(100, 30), run_before=fill)


def fleet_app(error: str = ""):
    from mavera_tui.ui.fixtures import demo_fleet_snapshot

    return create_app(
        FrozenEngine(demo_fleet_snapshot(error=error)),
        history=demo_history(),
        watch_terminal=False,
        show_health=False,
    )


async def _press_fleet(pilot):
    await pilot.press("F")
    await pilot.pause()


def test_fleet_view_80x24(snap_compare):
    assert snap_compare(fleet_app(), terminal_size=(80, 24), run_before=_press_fleet)


def test_fleet_view_redis_away_120x40(snap_compare):
    assert snap_compare(
        fleet_app("ConnectionError: Error 111 connecting to 10.0.0.5:6379"),
        terminal_size=(120, 40),
        run_before=_press_fleet,
    )
