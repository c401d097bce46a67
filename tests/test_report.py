"""Reports: the numbers equal the ledger's and the simulator's own records."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import unpacked

from mavera_tui.clock import Clock, run_virtual
from mavera_tui.engine import Settings
from mavera_tui.errors import EXIT_CANNOT_START
from mavera_tui.recording.recorder import Recorder
from mavera_tui.recording.report import build_report, render_text
from mavera_tui.recording.timespec import TimeContext, parse_time
from mavera_tui.sim import create_sim
from mavera_tui.sim.config import Faults, SimConfig

WALL0 = 1_700_000_000.0
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A demo recording on a simulator that sometimes answers 429 and 5xx."""
    db = tmp_path_factory.mktemp("report") / "rec.db"
    clock = Clock(wall0=WALL0)
    settings = Settings(db=str(db), keep_finished=False, mode="record")
    rec = Recorder(
        settings,
        duration=180,
        interval=1.0,
        grace=600,
        clock=clock,
        out=io.StringIO(),
        sim=_faulty_sim(clock),
        demo_kw={"rate_per_min": 200.0},
    )
    assert run_virtual(rec.run()) == 0
    return db, rec.sim


@pytest.fixture(scope="module")
def plain(recorded):
    """The recording with its ledger unpacked into rows: plain SQL's view of it."""
    return unpacked(recorded[0])


def _faulty_sim(clock):
    cfg = SimConfig(
        tier="professional", plan="professional", purchased=10_000_000, seed=3, faults=_faults()
    )
    return create_sim(cfg, clock)


def _faults():
    # 5xx (some after the work ran: charged, then refunded) and a 20 s storm of 429s.
    return Faults(error_5xx_rate=0.03, storm_start=30.0, storm_seconds=20.0)


def report(db, **kw):
    return run_virtual(build_report(str(db), **kw))


def test_credits_equal_the_simulators_own_records(recorded):
    db, sim = recorded
    rep = report(db)
    assert rep["credits_used_total"] == sim.records.total_charged() > 0
    by_sim = sim.records.charged_by_endpoint()
    assert {k: v for k, v in rep["credits_used_by_endpoint"].items() if v} == by_sim
    assert rep["requests_total"] == len(sim.records)


def test_error_counts_equal_the_simulators(query_db, recorded, plain):
    db, sim = recorded
    rep = report(db)
    assert rep["429_count"] == sim.records.count(status=429) > 0
    assert rep["402_count"] == sim.records.count(status=402)
    assert (
        rep["retry_count"]
        == query_db(plain, "SELECT COUNT(*) FROM ledger WHERE job_id IS NOT NULL AND attempt > 1")[
            0
        ][0]
    )


def test_report_numbers_equal_the_ledgers(query_db, recorded, plain):
    db, _ = recorded
    rep = report(db)
    (total,) = query_db(plain, "SELECT COALESCE(SUM(credits_used), 0) FROM ledger")[0]
    assert rep["credits_used_total"] == total
    rows = query_db(
        plain,
        "SELECT endpoint, COUNT(*), SUM(estimate), SUM(credits_used) "
        "FROM ledger WHERE kind = 'ok' AND job_id IS NOT NULL GROUP BY endpoint",
    )
    for ep, n, est, act in rows:
        x = rep["estimated_vs_actual"][ep]
        assert (x["jobs"], x["estimated"], x["actual"]) == (n, est, act)
    rem = sorted(
        r[0]
        for r in query_db(plain, "SELECT rl_remaining FROM ledger WHERE rl_remaining IS NOT NULL")
    )
    assert rep["rate_limit_remaining"]["min"] == rem[0]
    assert rep["rate_limit_remaining"]["median"] == rem[(len(rem) + 1) // 2 - 1]
    assert rep["requests_per_minute"]["peak"] <= rep["rate_limit_limit"]
    assert rep["queue_depth"]["max"] >= rep["queue_depth"]["mean"] >= 0
    assert rep["batches"] and rep["batches"][0]["makespan_s"] > 0


def test_since_and_until_select_a_time_range(query_db, recorded, plain):
    db, _ = recorded
    full = report(db)
    tail = report(db, since="-120s")  # back from the end of the recording
    last = full["recording"]["last"]
    (n,) = query_db(plain, f"SELECT COUNT(*) FROM ledger WHERE t >= {last - 120}")[0]
    assert tail["requests_total"] == n < full["requests_total"]
    lo = WALL0 + 30
    part = report(db, since=str(lo), until=str(lo + 60))
    (n,) = query_db(plain, f"SELECT COUNT(*) FROM ledger WHERE t >= {lo} AND t <= {lo + 60}")[0]
    assert part["requests_total"] == n


def test_times_parse_as_iso_unix_or_relative():
    at_end = TimeContext(start=0.0, end=1000.0, anchor=1000.0)
    assert parse_time("1700000000", at_end) == 1_700_000_000
    assert parse_time("-10m", at_end) == 400.0
    assert parse_time("2023-11-14T22:13:20+00:00", at_end) == 1_700_000_000
    with pytest.raises(ValueError):
        parse_time("yesterday", at_end)


def test_text_report_has_tables_and_charts(recorded):
    db, _ = recorded
    text = render_text(report(db))
    assert "credits_used_total" in text and "makespan" in text
    assert "credits per minute" in text and "requests per minute" in text
    assert "queue depth" in text


def test_json_output_is_json_only(recorded):
    db, _ = recorded
    r = subprocess.run(
        [sys.executable, "-m", "mavera_tui", "report", str(db), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["credits_used_total"] == report(db)["credits_used_total"]


def test_a_foreign_file_is_one_clear_line(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("hello")
    r = subprocess.run(
        [sys.executable, "-m", "mavera_tui", "report", str(p)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert r.returncode == EXIT_CANNOT_START and "not an SQLite file" in r.stderr
    assert "Traceback" not in r.stderr
