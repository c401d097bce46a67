"""The monitor, driven with Pilot over a frozen engine: what the operator sees and sends."""

from __future__ import annotations

import dataclasses

import pytest
from textual.widgets import Button, DataTable, Static

from mavera_tui import catalog
from mavera_tui.snapshot import AlertView, JobView
from mavera_tui.states import JobState
from mavera_tui.ui.app import MIN_SIZE, create_app
from mavera_tui.ui.chart import ChartView
from mavera_tui.ui.fixtures import FrozenEngine, demo_history, demo_snapshot
from mavera_tui.ui.form import JobForm
from mavera_tui.ui.pane import Line
from mavera_tui.ui.screens import Confirm, ConfirmQuit, HelpScreen

WIDE = (200, 60)
SMALL = (80, 24)


def text_of(widget) -> str:
    if isinstance(widget, Line):
        return widget.plain
    content = widget.content if isinstance(widget, Static) else widget.render()
    return str(getattr(content, "plain", content))


def pane_text(app, pane_id: str) -> str:
    pane = app.main.query_one(f"#{pane_id}")
    return "\n".join(line.plain for line in pane.query(Line))


def make(engine=None, **kw):
    engine = engine or FrozenEngine()
    return engine, create_app(engine, history=demo_history(), watch_terminal=False, **kw)


async def test_panes_show_the_snapshots_numbers():
    engine, app = make()
    snap = engine.snap
    async with app.run_test(size=WIDE) as pilot:
        await pilot.pause()
        head = pane_text(app, "headroom")
        assert f"{snap.window_used}/{snap.limit}" in head
        assert f"remaining {snap.remaining}" in head
        assert f"foreign {snap.foreign}" in head
        slots = pane_text(app, "slots")
        assert "■■■■■■■□□□ 7/10" in slots
        assert "5/5" in slots and "wait 4" in slots and "hold 6s" in slots
        burn = pane_text(app, "burn")
        assert f"5m {snap.burn_5m:.1f}" in burn and f"1m {snap.burn_1m:.1f}" in burn
        assert f"balance {snap.balance:,}" in burn
        assert f"plan {snap.plan_remaining:,} + bought {snap.purchased:,}" in burn
        assert f"{snap.month_used / snap.allocation:.0%} of {snap.allocation:,}" in burn
        queue = pane_text(app, "queue")
        assert f"in flight {snap.in_flight}" in queue
        assert f"waiting {snap.queue_depth}" in queue
        alerts = pane_text(app, "alerts-pane")
        assert "429_storm" in alerts and "75% of the monthly allocation used" in alerts
        table = app.main.query_one(DataTable)
        assert table.row_count == len(snap.jobs)
        header = text_of(app.main.query_one("#header"))
        assert "embedded simulator" in header and "SIMULATOR" in header


async def test_low_remaining_puts_the_headroom_pane_in_warning():
    snap = dataclasses.replace(demo_snapshot(), remaining=catalog.LOW_REMAINING - 1)
    _, app = make(FrozenEngine(snap))
    async with app.run_test(size=WIDE) as pilot:
        await pilot.pause()
        pane = app.main.query_one("#headroom")
        assert pane.has_class("-warning")
        assert "LOW" in pane_text(app, "headroom")


async def test_charts_redraw_only_when_their_data_changes():
    engine, app = make(refresh=0.05)
    async with app.run_test(size=WIDE) as pilot:
        await pilot.pause()
        charts = list(app.main.query(ChartView))
        drawn = [c.draws for c in charts]
        # Drawn, perhaps twice: once more when the layout settles after the first tick.
        assert all(1 <= d <= 2 for d in drawn)
        for _ in range(5):
            app.poll()
        await pilot.pause()
        assert [c.draws for c in charts] == drawn  # frozen snapshot: nothing to redraw


async def test_form_estimate_follows_the_fields():
    _, app = make()
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("n")
        await pilot.pause()
        form = app.screen
        assert isinstance(form, JobForm)
        form.query_one("#sample_size").value = "50"
        form.query_one("#questions").value = "5"
        await pilot.pause()
        est = text_of(form.query_one("#form-estimate"))
        assert "135 credits" in est  # base 125 for 26-50 respondents + 2 per question
        form.query_one("#questions").value = "10"
        await pilot.pause()
        assert "145 credits" in text_of(form.query_one("#form-estimate"))
        assert "pre-flight" in text_of(form.query_one("#form-verdict"))
        assert not form.query_one("#submit", Button).disabled


@pytest.mark.parametrize("sample", ["0", "5000"])
async def test_out_of_range_sample_size_shows_an_inline_error_and_blocks_submit(sample):
    engine, app = make()
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("n")
        await pilot.pause()
        form = app.screen
        form.query_one("#sample_size").value = sample
        await pilot.pause()
        err = form.query_one("#err-sample_size", Static)
        assert err.display
        assert "between 1 and 1,000" in text_of(err)
        assert form.query_one("#submit", Button).disabled
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert engine.submitted == []
        assert isinstance(app.screen, JobForm)


async def open_form(pilot, **fields):
    await pilot.press("n")
    await pilot.pause()
    form = pilot.app.screen
    assert isinstance(form, JobForm)
    for key, value in fields.items():
        form.query_one(f"#{key}").value = value
    await pilot.pause()
    return form


async def test_the_form_shows_one_live_balance_and_the_worst_case_counts_the_buffer(monkeypatch):
    monkeypatch.setattr("mavera_tui.ui.form.LIVE_EVERY", 0.05)
    snap = dataclasses.replace(demo_snapshot(), balance=253_374, reserved=1_840)
    engine, app = make(FrozenEngine(snap))
    async with app.run_test(size=(100, 30)) as pilot:
        # 50 respondents: base 125, 3 questions: +6 -> 131; the buffer rounds up: 158.
        form = await open_form(pilot, sample_size="50", questions="3")
        est, verdict = (
            text_of(form.query_one("#form-estimate")),
            text_of(form.query_one("#form-verdict")),
        )
        assert "needs 158 (estimate 131 + 20%), 251,534 available" in verdict
        assert "Balance 253,374 − reserved 1,840 → after this job 251,376 at worst" in est
        # The engine's balance moves while the form is open: both lines follow, together.
        engine.snap = dataclasses.replace(snap, balance=252_000, reserved=1_036)
        await pilot.pause(0.3)
        est, verdict = (
            text_of(form.query_one("#form-estimate")),
            text_of(form.query_one("#form-verdict")),
        )
        assert "Balance 252,000 − reserved 1,036 → after this job 250,806 at worst" in est
        assert "250,964 available" in verdict
        assert "253,374" not in est + verdict


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("questions", "-3", "whole number from 0 to 100, got '-3'"),
        ("questions", "abc", "neither a count nor a question"),
        ("questions", "2.5", "whole number from 0 to 100"),
        ("sample_size", "2.5", "must be a whole number"),
        ("sample_size", "2,5", "must be a whole number"),
        ("priority", "2.5", "must be a whole number"),
        ("video_seconds", "0.5", "from 1 to 14,400 seconds"),
        ("video_seconds", "0", "from 1 to 14,400 seconds"),
        ("video_seconds", "14401", "from 1 to 14,400 seconds"),
        ("video_seconds", "1e9", "a number of seconds"),
    ],
)
async def test_bad_numbers_in_the_form_are_errors_not_other_numbers(field, value, words):
    engine, app = make()
    async with app.run_test(size=(100, 30)) as pilot:
        form = await open_form(pilot)
        if field == "video_seconds":
            form.query_one("#endpoint").value = "video_analyses"
            await pilot.pause()
        box = form.query_one(f"#{field}")
        box.value = ""
        box.focus()
        await pilot.press(*value)  # typed, as an operator would: nothing is dropped
        await pilot.pause()
        assert box.value == value
        err = form.query_one(f"#err-{field}", Static)
        assert err.display and words in text_of(err)
        assert form.query_one("#submit", Button).disabled
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert engine.submitted == []


async def test_the_form_speaks_in_singulars_and_thousands():
    snap = dataclasses.replace(demo_snapshot(), balance=1_250_000, reserved=0)
    _, app = make(FrozenEngine(snap))
    async with app.run_test(size=(100, 30)) as pilot:
        form = await open_form(pilot, sample_size="1", questions="Why oat milk?")
        est = text_of(form.query_one("#form-estimate"))
        assert "(1 respondent, 1 question)" in est
        # 77 + 20% = 92.4: pre-flight needs 93
        assert "Balance 1,250,000 → after this job 1,249,907 at worst" in est
        assert "1,250,000 available" in text_of(form.query_one("#form-verdict"))
        form.query_one("#sample_size").value = "1,000"
        form.query_one("#questions").value = "a; b"
        await pilot.pause()
        assert "(1,000 respondents, 2 questions)" in text_of(form.query_one("#form-estimate"))
        form.query_one("#endpoint").value = "video_analyses"
        await pilot.pause()
        form.query_one("#video_seconds").value = "1"
        await pilot.pause()
        assert "(1 s of video)" in text_of(form.query_one("#form-estimate"))
        await pilot.press("ctrl+s")
        await pilot.pause()
    [spec] = app.engine.submitted
    assert spec.body == {"video_seconds": 1}


async def test_a_submitted_job_reaches_the_engine_and_shows_in_the_jobs_table():
    engine, app = make()
    async with app.run_test(size=WIDE) as pilot:
        await pilot.press("n")
        await pilot.pause()
        form = app.screen
        form.query_one("#sample_size").value = "50"
        form.query_one("#questions").value = "5"
        form.query_one("#priority").value = "7"
        await pilot.pause()
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert not isinstance(app.screen, JobForm)
        [spec] = engine.submitted
        assert spec.path == "/focus-groups" and spec.priority == 7
        assert spec.body == {"sample_size": 50, "questions": 5}
        assert spec.id.startswith("ui-")
        assert app.main.query_one("#jobs-pane").selected_job is not None
        assert spec.id in {j.id for j in engine.snap.jobs}
        assert app.main.query_one(DataTable).row_count == len(engine.snap.jobs)


async def test_the_form_changes_fields_with_the_endpoint_and_requires_text():
    engine, app = make()
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("n")
        await pilot.pause()
        form = app.screen
        form.query_one("#endpoint").value = "mave"
        await pilot.pause()
        assert form.query_one("#row-complexity").display
        assert form.query_one("#row-message").display
        assert not form.query_one("#row-sample_size").display
        assert form.query_one("#submit", Button).disabled  # message is empty
        assert "required" in text_of(form.query_one("#err-message"))
        form.query_one("#message").value = "who buys oat milk?"
        form.query_one("#complexity").value = "simple"
        await pilot.pause()
        assert "10–15 credits" in text_of(form.query_one("#form-estimate"))
        form.query_one("#endpoint").value = "video_analyses"
        await pilot.pause()
        form.query_one("#video_seconds").value = "20"
        await pilot.pause()
        assert "100–150 credits" in text_of(form.query_one("#form-estimate"))


async def test_preflight_refusal_blocks_submit_and_says_what_to_reduce():
    snap = dataclasses.replace(demo_snapshot(), balance=150, reserved=0)
    engine, app = make(FrozenEngine(snap))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("n")
        await pilot.pause()
        form = app.screen
        form.query_one("#sample_size").value = "50"
        await pilot.pause()
        verdict = text_of(form.query_one("#form-verdict"))
        assert "refuses" in verdict and "reduce sample_size" in verdict
        assert form.query_one("#submit", Button).disabled
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, JobForm)
        assert engine.submitted == []


async def test_p_pauses_and_resumes_dispatch():
    engine, app = make()
    async with app.run_test(size=WIDE) as pilot:
        await pilot.press("p")
        await pilot.pause()
        assert engine.pauses == 1
        assert "PAUSED" in text_of(app.main.query_one("#header"))
        await pilot.press("p")
        await pilot.pause()
        assert engine.resumes == 1
        assert "PAUSED" not in text_of(app.main.query_one("#header"))


async def test_c_asks_naming_the_job_then_cancels_the_job_under_the_cursor():
    engine, app = make()
    async with app.run_test(size=WIDE) as pilot:
        table = app.main.query_one(DataTable)
        table.focus()
        await pilot.press("down")
        await pilot.press("c")
        await pilot.pause()
        job = engine.snap.jobs[1]
        assert isinstance(app.screen, Confirm) and engine.cancelled == []
        assert job.id in text_of(app.screen.query_one("#confirm-text"))
        await pilot.press("n")
        await pilot.pause()
        assert engine.cancelled == []
        await pilot.press("c")
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause()
        assert engine.cancelled == [job.id]


async def test_cancelling_an_in_flight_job_says_it_cannot_be_recalled():
    engine, app = make()
    async with app.run_test(size=WIDE) as pilot:
        app.main.query_one(DataTable).focus()
        assert engine.snap.jobs[0].state == JobState.IN_FLIGHT
        await pilot.press("c")
        await pilot.pause()
        assert not isinstance(app.screen, Confirm) and engine.cancelled == []
        [note] = [n.message for n in app._notifications]
        assert "in flight" in str(note) and "cannot be recalled" in str(note)
        assert "unknown or final" not in str(note)


async def test_slash_filters_the_jobs_table():
    _, app = make()
    async with app.run_test(size=WIDE) as pilot:
        await pilot.press("slash")
        await pilot.press(*"video")
        await pilot.pause()
        assert app.main.query_one(DataTable).row_count == 1
        await pilot.press("escape")
        await pilot.pause()
        assert app.main.query_one(DataTable).row_count == len(demo_snapshot().jobs)


HOSTILE = "[@click=app.quit]x[/] \x1b[31mred\x1b[0m \x1b]0;pwned\x07 [bold]b[/bold]"


async def test_server_text_is_shown_literally_and_cannot_act():
    snap = demo_snapshot()
    snap = dataclasses.replace(
        snap,
        alerts=(AlertView(snap.t, "error", "credits_exhausted", HOSTILE),) + snap.alerts,
        jobs=(
            JobView(
                "evil-1",
                "responses",
                "POST",
                "/responses",
                JobState.FAILED,
                reason=HOSTILE,
                created=snap.t,
            ),
        )
        + snap.jobs,
    )
    _, app = make(FrozenEngine(snap))
    async with app.run_test(size=WIDE) as pilot:
        await pilot.pause()
        alerts = pane_text(app, "alerts-pane")
        assert "[@click=app.quit]x[/]" in alerts and "[bold]b[/bold]" in alerts
        assert "\x1b" not in alerts and "\x07" not in alerts
        table = app.main.query_one(DataTable)
        reason = str(table.get_cell("evil-1", "reason"))
        assert "[@click=app.quit]x[/]" in reason and "\x1b" not in reason
        alerts_list = app.main.query_one("#alerts-list")
        await pilot.click(alerts_list, offset=(30, 0))
        await pilot.click(table, offset=(60, 2))
        await pilot.pause()
        assert app.is_running and app.return_code is None


async def test_80x24_shows_headroom_slots_burn_and_queue():
    engine, app = make()
    async with app.run_test(size=SMALL) as pilot:
        await pilot.pause()
        assert app.layout_name == "compact"
        for pane_id in ("headroom", "slots", "burn", "queue"):
            pane = app.main.query_one(f"#{pane_id}")
            assert pane.display and pane.region.width >= 30 and pane.region.height >= 8
        assert "7/10" in pane_text(app, "slots")
        assert f"{engine.snap.window_used}/{engine.snap.limit}" in pane_text(app, "headroom")
        assert "burn/min" in pane_text(app, "burn")
        await pilot.press("v")
        await pilot.pause()
        assert app.main.query_one("#jobs-pane").display
        assert not app.main.query_one("#headroom").display


async def test_too_small_terminal_says_what_it_needs():
    _, app = make()
    async with app.run_test(size=(50, 15)) as pilot:
        await pilot.pause()
        msg = app.main.query_one("#too-small", Static)
        assert msg.display and not app.main.query_one("#root").display
        assert f"need {MIN_SIZE[0]}x{MIN_SIZE[1]}" in text_of(msg)


async def test_quit_asks_first_while_jobs_are_in_flight():
    _, app = make()
    async with app.run_test(size=WIDE) as pilot:
        await pilot.press("q")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmQuit)
        await pilot.press("n")
        await pilot.pause()
        assert app.is_running and not isinstance(app.screen, ConfirmQuit)


async def test_help_lists_every_binding():
    _, app = make()
    async with app.run_test(size=WIDE) as pilot:
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        keys = text_of(app.screen.query_one("#help-keys"))
        for b in app.BINDINGS:
            assert b.description in keys
        assert "ctrl+p" in keys


async def test_debug_log_receives_logging(tmp_path):
    path = tmp_path / "debug.log"
    _, app = make(debug_log=str(path))
    async with app.run_test(size=WIDE) as pilot:
        await pilot.press("p")
        await pilot.pause()
    assert "paused dispatch" in path.read_text()


async def test_monitor_keys_do_nothing_behind_the_form():
    engine, app = make()
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("n")
        await pilot.pause()
        await pilot.press("p")  # focus is on the endpoint chooser, not a text field
        await pilot.pause()
        assert engine.pauses == 0 and isinstance(app.screen, JobForm)


async def test_no_color_terminals_still_show_every_number(monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    engine, app = make()
    async with app.run_test(size=SMALL) as pilot:
        await pilot.pause()
        assert "7/10" in pane_text(app, "slots")
        assert f"{engine.snap.window_used}/{engine.snap.limit}" in pane_text(app, "headroom")


def test_a_lost_terminal_is_detected():
    import subprocess
    import sys

    code = (
        "from mavera_tui.ui.app import _terminal_alive; "
        "raise SystemExit(0 if _terminal_alive() is False else 1)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], stdin=subprocess.DEVNULL, capture_output=True
    )
    assert done.returncode == 0, done.stderr
