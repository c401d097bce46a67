"""Replay: a recording played back through the monitor shows, at each time, what it holds."""

from __future__ import annotations

import io
import sqlite3
import subprocess
import sys

import pytest
from textual.widgets import Input, Static

from mavera_tui.clock import Clock, run_virtual
from mavera_tui.config import Config, SimSettings
from mavera_tui.engine import Settings
from mavera_tui.errors import EXIT_CANNOT_START
from mavera_tui.recording.recorder import Recorder
from mavera_tui.recording.replay import ReplayEngine, create_replay_app
from mavera_tui.store import StoreError
from mavera_tui.ui.pane import Line
from mavera_tui.ui.timebar import GotoScreen, TimeBar

WIDE = (200, 60)
WALL0 = 1_700_000_000.0


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    db = tmp_path_factory.mktemp("replay") / "rec.db"
    rec = Recorder(
        Settings(
            Config(sim=SimSettings(purchased=10_000_000)),
            db=str(db),
            keep_finished=False,
            mode="record",
        ),
        duration=150,
        interval=1.0,
        grace=600,
        clock=Clock(wall0=WALL0),
        out=io.StringIO(),
        keyframe_every=40,
    )
    assert run_virtual(rec.run()) == 0
    return db


def load(db, clock=None):
    eng = run_virtual(ReplayEngine.load(str(db), now=clock or (lambda: 0.0)))
    return eng


def pane_text(app, pane_id):
    return "\n".join(line.plain for line in app.main.query_one(f"#{pane_id}").query(Line))


def header(app):
    w = app.main.query_one("#header", Static)
    return str(getattr(w.content, "plain", w.content))


def test_the_engine_returns_each_recorded_snapshot_in_replay_mode(recording):
    eng = load(recording)
    assert eng.snapshot().mode == "replay" and eng.index == 0
    eng.seek(eng.times[0] + 60)
    s = eng.snapshot()
    assert abs(s.t - (eng.times[0] + 60)) <= 1.0 and s.requests_total > 0
    # Jumping back and forth decodes from keyframes: the same instant, the same state.
    eng.seek(eng.times[-1])
    eng.seek(eng.times[0] + 60)
    assert eng.snapshot() == s
    eng.step(-1)
    assert eng.snapshot().t < s.t and eng.snapshot().requests_total <= s.requests_total


def test_playback_follows_the_real_clock_times_the_speed(recording):
    real = [0.0]
    eng = load(recording, clock=lambda: real[0])
    t0 = eng.snapshot().t
    eng.resume()
    real[0] += 10
    assert eng.snapshot().t == pytest.approx(t0 + 10, abs=1.0)
    eng.cycle_speed()  # 10x
    real[0] += 3
    assert eng.snapshot().t == pytest.approx(t0 + 40, abs=1.0)
    real[0] += 10_000
    assert eng.snapshot().t == eng.times[-1] and not eng.playing  # stops at the end


async def test_the_panes_show_what_the_recording_holds_at_the_cursor(recording):
    eng = await ReplayEngine.load(str(recording), now=lambda: 0.0)
    eng.seek(eng.times[0] + 90)
    snap = eng.snapshot()
    app = create_replay_app(eng, watch_terminal=False)
    async with app.run_test(size=WIDE) as pilot:
        await pilot.pause()
        assert "REPLAY" in header(app)
        head = pane_text(app, "headroom")
        assert f"{snap.window_used}/{snap.limit}" in head
        queue = pane_text(app, "queue")
        assert f"in flight {snap.in_flight}" in queue
        assert f"waiting {snap.queue_depth}" in queue
        bar = app.main.query_one(TimeBar)
        assert f"{eng.index + 1}/{len(eng.times)}" in bar.plain and "paused" in bar.plain
        # The charts hold the history up to the cursor, not just one point.
        assert len(app.history) >= 9
        assert sum(app.history.per_bucket("requests")) > 0

        before = eng.index
        await pilot.press("right")
        assert eng.index == before + 1
        await pilot.press("left", "left")
        assert eng.index == before - 1
        assert app.snap.t == eng.times[before - 1]
        assert f"{eng.index + 1}/{len(eng.times)}" in app.main.query_one(TimeBar).plain

        await pilot.press("s")
        assert eng.speed == 10
        await pilot.press("space")
        assert eng.playing and "playing" in app.main.query_one(TimeBar).plain
        await pilot.press("space")
        assert not eng.playing


async def test_go_to_a_time_rebuilds_the_charts_up_to_it(recording):
    eng = await ReplayEngine.load(str(recording), now=lambda: 0.0)
    app = create_replay_app(eng, watch_terminal=False)
    async with app.run_test(size=WIDE) as pilot:
        await pilot.pause()
        assert len(app.history) <= 1
        await pilot.press("g")
        assert isinstance(app.screen, GotoScreen)
        app.screen.query_one(Input).value = "+2m"
        await pilot.press("enter")
        await pilot.pause()
        assert abs(eng.snapshot().t - (eng.times[0] + 120)) <= 1.0
        assert app.snap.t == eng.snapshot().t
        assert len(app.history) >= 12
        assert f"{app.snap.window_used}/{app.snap.limit}" in pane_text(app, "headroom")


async def test_next_alert_jumps_to_the_snapshot_that_shows_it(recording):
    eng = await ReplayEngine.load(str(recording), now=lambda: 0.0)
    if not eng.alert_times:
        pytest.skip("the recording has no alerts")
    app = create_replay_app(eng, watch_terminal=False)
    async with app.run_test(size=WIDE) as pilot:
        await pilot.pause()
        await pilot.press("a")
        t = eng.alert_times[0]
        assert eng.snapshot().t >= t or eng.index == len(eng.times) - 1
        assert any(abs(a.t - t) < 1e-3 for a in eng.snapshot().alerts)


def test_submit_and_cancel_refuse_politely(recording):
    eng = load(recording)
    assert eng.cancel("x") is False
    with pytest.raises(ValueError, match="read-only"):
        run_virtual(eng.submit(None))


def _replay_cli(path):
    return subprocess.run(
        [sys.executable, "-m", "mavera_tui", "replay", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_a_foreign_sqlite_file_is_one_clear_line(tmp_path):
    p = tmp_path / "other.db"
    con = sqlite3.connect(p)
    con.execute("CREATE TABLE t (a)")
    con.commit()
    con.close()
    r = _replay_cli(p)
    assert r.returncode == EXIT_CANNOT_START  # a file it cannot use: as in every command
    assert "another program" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_a_corrupted_recording_is_one_clear_line(tmp_path, recording):
    p = tmp_path / "broken.db"
    data = bytearray(recording.read_bytes())
    data[100 : 4096 * 3] = b"\xff" * (4096 * 3 - 100)
    p.write_bytes(bytes(data))
    r = _replay_cli(p)
    assert r.returncode == EXIT_CANNOT_START and "Traceback" not in r.stderr
    assert r.stderr.startswith("replay: ") and len(r.stderr.strip().splitlines()) == 1


def test_a_newer_schema_is_refused_with_a_clear_message(tmp_path, recording):
    p = tmp_path / "newer.db"
    p.write_bytes(recording.read_bytes())
    con = sqlite3.connect(p)
    con.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="newer"):
        load(p)


async def test_replay_help_lists_its_keys_not_live_ones_and_fits_80_columns(recording):
    from mavera_tui.ui.screens import HelpScreen

    eng = await ReplayEngine.load(str(recording), now=lambda: 0.0)
    app = create_replay_app(eng, watch_terminal=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        bar = app.main.query_one(TimeBar)
        assert len(bar.plain) <= 78 and f"{len(eng.times)}" in bar.plain
        assert "PLAYBACK PAUSED" in header(app) and "connecting" not in header(app)
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        keys = str(app.screen.query_one("#help-keys", Static).content)
        for want in ("space", "Speed", "Go to time", "Next alert"):
            assert want in keys, want
        for live in ("New job", "in form", "Cancel"):
            assert live not in keys, live


async def test_q_leaves_a_replay_without_asking(recording):
    eng = await ReplayEngine.load(str(recording), now=lambda: 0.0)
    eng.seek(eng.times[0] + 90)
    app = create_replay_app(eng, watch_terminal=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert app.snap.in_flight or app.snap.queue_depth  # a busy moment was recorded
        await pilot.press("q")
        await pilot.pause()
    assert not app.is_running
