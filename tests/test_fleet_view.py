"""The fleet in the monitor (issue 10, item 2): the snapshot's FleetState through the
recording codec, the Fleet view rendered from a fixture (no Redis), two shared engines on
one key read by one monitor through a real redis-server, a replay of a recording holding
fleet state, and the proxy's callers in the jobs filter (issue 11)."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import time

import pytest

from mavera_tui.config import Config, EngineSettings, SharedSettings
from mavera_tui.engine import Engine, Settings
from mavera_tui.recording.codec import SnapshotDecoder, SnapshotEncoder
from mavera_tui.snapshot import FleetState, JobView, Snapshot
from mavera_tui.ui.app import create_app
from mavera_tui.ui.fixtures import (
    DEMO_T,
    FrozenEngine,
    demo_fleet,
    demo_fleet_snapshot,
    demo_history,
    demo_snapshot,
)
from mavera_tui.ui.fleet import NOT_SHARED
from mavera_tui.ui.jobs import JobsPane, caller_of
from mavera_tui.ui.pane import Line


def fleet_text(app) -> str:
    return app.main.query_one("#fleet-body", Line).plain


# --- the codec ---------------------------------------------------------------------------


def test_codec_round_trips_a_fleet_through_keyframes_and_deltas():
    enc, dec = SnapshotEncoder(keyframe_every=3), SnapshotDecoder()
    fleet = demo_fleet()
    seq = [
        demo_fleet_snapshot(),
        dataclasses.replace(demo_snapshot(DEMO_T + 1), fleet=dataclasses.replace(fleet, foreign=9)),
        demo_snapshot(DEMO_T + 2),  # the key stops being shared: None survives a delta
        demo_fleet_snapshot(DEMO_T + 3, error="ConnectionError: refused"),
        demo_fleet_snapshot(DEMO_T + 4),
    ]
    for snap in seq:
        got = dec.snapshot(enc.encode(snap))
        assert got.fleet == snap.fleet
    assert got.fleet is not None and got.fleet.processes[3].alive is False
    # The plain-dict form (to_dict/from_dict) too.
    assert Snapshot.from_dict(seq[0].to_dict()).fleet == fleet


def test_an_old_state_without_fleet_decodes_as_not_shared():
    d = demo_snapshot().to_dict()
    del d["fleet"]
    assert Snapshot.from_dict(d).fleet is None


# --- the view from a fixture -----------------------------------------------------------


def app_for(snap):
    return create_app(
        FrozenEngine(snap), history=demo_history(), watch_terminal=False, show_health=False
    )


@pytest.mark.parametrize("size", [(80, 24), (160, 50)])
def test_fleet_view_shows_processes_window_slots_credits_alerts(size):
    async def go():
        app = app_for(demo_fleet_snapshot())
        async with app.run_test(size=size) as pilot:
            await pilot.press("F")
            await pilot.pause()
            assert app.view == "fleet"
            pane = app.main.query_one("#fleet-pane")
            assert pane.display and pane.region.height >= 18
            text = fleet_text(app)
            lines = text.split("\n")
            assert all(len(line) <= pane.content_size.width for line in lines)
            assert "99/120" in text and "foreign 4" in text and "this process 14" in text
            assert "batch-7" in text and "991" in text and "212" in text
            assert "DEAD" in next(line for line in lines if " 13 run" in line)
            assert "mave 9/10" in text and "focus_groups 4/5" in text
            assert "balance 48,210, reserved 1,340" in text
            assert "[batch-7:991]" in text and "[this process]" in text
            # Other processes' text is shown literally: markup kept, escapes dropped.
            assert "[red]not markup[/red]" in text and "\x1b" not in text
            # The alerts are all on screen at 80x24, no scrolling needed.
            svg = app.export_screenshot().replace("&#160;", " ")
            assert "not markup" in svg and "shared_back" in svg
            await pilot.press("F")  # F again: back to the overview
            await pilot.pause()
            assert app.view == "overview" and not pane.display

    asyncio.run(go())


def test_fleet_view_when_not_shared_says_how_and_redis_away_is_marked():
    async def go():
        app = app_for(demo_snapshot())
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("v", "v", "v")  # overview -> jobs -> alerts -> fleet
            await pilot.pause()
            assert app.view == "fleet"
            assert fleet_text(app) == NOT_SHARED
            app.engine.snap = demo_fleet_snapshot(error="ConnectionError: refused")
            app.poll()
            await pilot.pause()
            assert "REDIS" in fleet_text(app) and "last good read" in fleet_text(app)
            assert "batch-7" in fleet_text(app)  # the last good read stays on screen
            assert "REDIS AWAY" in str(app.main.query_one("#header").content)

    asyncio.run(go())


def test_help_lists_the_fleet_key():
    async def go():
        app = app_for(demo_snapshot())
        async with app.run_test(size=(100, 40)) as pilot:
            from mavera_tui.ui.app import help_rows

            rows = dict(help_rows(app))
            assert "Fleet view" in rows["F"]
            await pilot.pause()

    asyncio.run(go())


# --- the proxy's callers ------------------------------------------------------------------


def test_caller_comes_from_a_proxied_job_id_and_filters_the_jobs():
    assert caller_of("a1b2c3-17-billing-app") == "billing-app"
    assert caller_of("a1b2c3-18--") is None  # no caller header
    assert caller_of("a1b2c3-19-etl~r2") == "etl"  # a retry keeps its caller
    assert caller_of("resp-support-2229") is None  # a job file's id

    def job(i, jid):
        return JobView(jid, "responses", "POST", "/responses", "queued", created=DEMO_T - i)

    jobs = (job(1, "a1b2c3-1-etl"), job(2, "a1b2c3-2-billing"), job(3, "a1b2c3-3-etl"))

    async def go():
        app = app_for(dataclasses.replace(demo_snapshot(), jobs=jobs))
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            pane = app.main.query_one(JobsPane)
            await pilot.press("slash", *"caller:etl", "enter")
            await pilot.pause()
            assert pane.filter == "caller:etl"
            assert [j.id for j in jobs if pane.matches(j)] == ["a1b2c3-1-etl", "a1b2c3-3-etl"]
            table = app.main.query_one("#jobs-table")
            shown = {str(k.value) for k in table.rows}
            assert shown == {"a1b2c3-1-etl", "a1b2c3-3-etl"}
            from mavera_tui.ui.screens import JobDetail

            assert "caller billing" in JobDetail(jobs[1])._summary().plain
            assert "caller" not in JobDetail(job(4, "resp-support-1"))._summary().plain

    asyncio.run(go())


# --- a real redis-server -------------------------------------------------------------------


def shared_settings(url: str, host: str, mode: str, db: str | None = None) -> Settings:
    return Settings(
        Config(
            engine=EngineSettings(window_seconds=2.0),
            shared=SharedSettings(redis_url=url, host_id=host),
        ),
        db=db,
        force_embedded=True,  # both on the simulator's one key: one fleet
        keep_finished=False,
        mode=mode,
    )


def test_two_shared_engines_on_one_key_appear_in_one_monitors_fleet(redis_server):
    from mavera_tui.monitor import LiveEngine

    async def go():
        a = Engine(shared_settings(redis_server.url, "host-a", "live"))
        b = Engine(shared_settings(redis_server.url, "host-b", "run"))
        live = LiveEngine(a)
        await live.boot([], demo=False)
        await b.start()
        try:
            deadline = time.monotonic() + 10
            while True:
                await live._fleet.refresh()
                fleet = live.snapshot().fleet
                hosts = sorted(p.host for p in fleet.processes)
                if hosts == ["host-a", "host-b"] or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            assert hosts == ["host-a", "host-b"]
            assert fleet.error == "" and fleet.me == a.fleet.proc
            roles = {p.host: p.role for p in fleet.processes}
            assert roles == {"host-a": "monitor", "host-b": "run"}
            # Redis goes away: the monitor's snapshot says so and keeps the last read.
            redis_server.stop()
            await live._fleet.refresh()
            gone = live.snapshot().fleet
            assert gone.error and len(gone.processes) == 2
        finally:
            await b.stop()
            await live.shutdown()
        return fleet

    fleet = asyncio.run(go())

    async def show():
        app = app_for(dataclasses.replace(demo_snapshot(), fleet=fleet))
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("F")
            await pilot.pause()
            text = fleet_text(app)
            assert "host-a" in text and "host-b" in text and "2 alive of 2" in text

    asyncio.run(show())


def test_a_shared_recording_replays_its_fleet(redis_server, tmp_path):
    from mavera_tui.recording.recorder import Recorder
    from mavera_tui.recording.replay import ReplayEngine, create_replay_app

    db = tmp_path / "rec.db"
    rec = Recorder(
        shared_settings(redis_server.url, "rec-host", "record", db=str(db)),
        duration=1.5,
        interval=0.5,
        grace=1,
        out=io.StringIO(),
    )
    assert asyncio.run(rec.run()) == 0

    async def go():
        eng = await ReplayEngine.load(str(db))
        snap = eng.snapshot()
        assert isinstance(snap.fleet, FleetState)
        app = create_replay_app(eng, watch_terminal=False, show_health=False)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press("F")
            await pilot.pause()
            text = fleet_text(app)
            assert "rec-host" in text and "record" in text, text

    asyncio.run(go())


def test_the_watch_never_raises_and_keeps_the_last_good_read():
    from mavera_tui.shared.view import FleetSnapshot, ProcessInfo
    from mavera_tui.shared.watch import FleetWatch

    class Flaky:
        def __init__(self):
            self.fail: Exception | None = None

        async def snapshot(self):
            if self.fail is not None:
                raise self.fail
            p = ProcessInfo("h:1", "h", 1, "run", 1, 2, None, 0.25, True, 5)
            return FleetSnapshot([p], 5, 60, 1, 0.0, False, 100, 7, {"mave": 1}, [])

    class FakeFleet:
        proc = "h:1"
        sched = None

        class state:  # noqa: N801 - stands in for a SharedState
            url = "redis://:secret@127.0.0.1:1/0"
            prefix = "p:"
            r = None

    w = FleetWatch(FakeFleet(), wall=lambda: 123.0)
    assert w.latest.redis == "redis://127.0.0.1:1/0"  # never the password
    w.view = Flaky()
    got = asyncio.run(w.refresh())
    assert got.error == "" and got.at == 123.0 and got.processes[0].window_share == 5
    assert got.slots == (("mave", 1),)
    for err in (ConnectionError("refused"), KeyError("odd data")):
        w.view.fail = err
        bad = asyncio.run(w.refresh())
        assert bad.error and bad.processes == got.processes and bad.at == 123.0
