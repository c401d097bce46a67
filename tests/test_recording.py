"""The recording package: one time grammar for report and replay, retention that keeps daily
totals, and recordings of the previous schema still opening."""

from __future__ import annotations

import io
import shutil
import sqlite3
from datetime import datetime

import pytest
from conftest import snapshot_frames, snapshot_times, unpacked

from mavera_tui.clock import Clock, run_virtual
from mavera_tui.engine import Settings
from mavera_tui.recording.codec import FrameDecoder, SnapshotEncoder, is_key_frame
from mavera_tui.recording.reader import Recording
from mavera_tui.recording.recorder import Recorder
from mavera_tui.recording.replay import ReplayEngine
from mavera_tui.recording.report import build_report
from mavera_tui.recording.timespec import TimeContext, parse_time
from mavera_tui.sim import create_sim
from mavera_tui.sim.config import Faults, SimConfig
from mavera_tui.store import OPEN_JOBS, SCHEMA_VERSION, Store

MIDNIGHT = 1_700_006_400.0  # 2023-11-15T00:00:00Z: daily totals are per UTC day
START = MIDNIGHT - 150.0


def _record(db, *, duration=300.0, **kw):
    clock = Clock(wall0=START)
    cfg = SimConfig(
        tier="professional",
        plan="professional",
        purchased=10_000_000,
        seed=5,
        faults=Faults(error_5xx_rate=0.03, storm_start=20.0, storm_seconds=15.0),
    )
    out = io.StringIO()
    rec = Recorder(
        Settings(db=str(db), keep_finished=False, mode="record"),
        duration=duration,
        interval=1.0,
        grace=600,
        clock=clock,
        out=out,
        sim=create_sim(cfg, clock),
        demo_kw={"rate_per_min": 150.0},
        keyframe_every=30,
        **kw,
    )
    assert run_virtual(rec.run()) == 0
    return rec, out.getvalue()


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """Five minutes across a UTC midnight, with 429s and 5xx before it; never pruned."""
    db = tmp_path_factory.mktemp("recording") / "rec.db"
    _record(db)
    return db


@pytest.fixture(scope="module")
def plain(recorded):
    """``recorded`` with its ledger and jobs unpacked: what plain SQL reads of it."""
    return unpacked(recorded)


def _as_schema_3(src, dst):
    """The recording ``src`` as schema 3 stored it: ledger and jobs in rows, a zdelta1 blob
    per snapshot in ``snapshots``, no block tables."""
    shutil.copy(unpacked(src), dst)
    enc = SnapshotEncoder(keyframe_every=30)
    dec = FrameDecoder()
    rows = [(t, enc.encode(dec.snapshot(f))) for t, f in snapshot_frames(src)]
    con = sqlite3.connect(dst)
    con.executemany("INSERT INTO snapshots (t, data) VALUES (?, ?)", rows)
    con.executescript(
        "DROP TABLE ledger_blocks; DROP TABLE job_blocks; DROP TABLE snapshot_blocks;"
        "UPDATE meta SET value = '3' WHERE key = 'schema_version';"
        "UPDATE meta SET value = 'zdelta1' WHERE key = 'snapshot_encoding';"
    )
    con.commit()
    con.close()


@pytest.fixture(scope="module")
def v3(recorded, tmp_path_factory):
    """``recorded`` as a schema 3 file (what mavera-tui wrote before the blocks)."""
    db = tmp_path_factory.mktemp("v3") / "v3.db"
    _as_schema_3(recorded, db)
    return db


def q(db, sql, params=()):
    con = sqlite3.connect(db)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def report(db, **kw):
    return run_virtual(build_report(str(db), **kw))


COUNTS = (
    "requests_total",
    "credits_used_total",
    "429_count",
    "402_count",
    "retry_count",
    "credits_used_by_endpoint",
    "requests_by_endpoint",
    "429_by_endpoint",
)


# --- one time grammar ----------------------------------------------------------------------


def test_report_and_replay_read_the_same_time_forms_the_same_way(recorded):
    eng = run_virtual(ReplayEngine.load(str(recorded), now=lambda: 0.0))
    eng.seek(eng.times[-1])  # replay's anchor is the cursor: put it where report's is
    rec = run_virtual(Recording.open(str(recorded)))
    try:
        start, end = eng.times[0], eng.times[-1]
        first, last = run_virtual(rec.bounds())
        at = start + 42.5
        local = datetime.fromtimestamp(round(at))
        forms = [
            f"{at}",
            datetime.fromtimestamp(at).isoformat(),
            local.strftime("%H:%M:%S"),
            "start+42.5s",
            "end-2m",
            "-90s",
            "-1m",
            "end",
            "start",
        ]
        for form in forms:
            lo, _ = run_virtual(rec.parse_range(form, None))
            assert eng.parse_goto(form) == pytest.approx(lo, abs=1.5), form
        # the recording's bounds are the same to both (snapshots and ledger agree to ~1 s)
        assert abs(first - start) <= 1.5 and abs(last - end) <= 1.5
        for bad in ("yesterday", "+ten", "25:00", "nan"):
            with pytest.raises(ValueError, match="not a"):
                eng.parse_goto(bad)
            with pytest.raises(ValueError, match="not a"):
                run_virtual(rec.parse_range(bad, None))
    finally:
        run_virtual(rec.close())


def test_relative_times_count_from_the_commands_anchor():
    ctx = TimeContext(start=1000.0, end=2000.0, anchor=1500.0)
    assert parse_time("+5m", ctx) == 1800.0 and parse_time("-90s", ctx) == 1410.0
    assert parse_time("start+1m", ctx) == 1060.0 and parse_time("end-1h", ctx) == -1600.0
    assert parse_time("end", ctx) == 2000.0 and parse_time(" 1234.5 ", ctx) == 1234.5


def test_report_since_takes_the_clock_and_anchor_forms(recorded, plain):
    full = report(recorded)
    start = full["recording"]["first"]
    lo = start + 60
    n = q(plain, "SELECT COUNT(*) FROM ledger WHERE t >= ?", (lo,))[0][0]
    assert report(recorded, since="start+60s")["requests_total"] == n
    assert report(recorded, since=str(lo))["requests_total"] == n
    r = report(recorded, since="end-1m", until="end")
    last = full["recording"]["last"]
    assert (
        r["requests_total"]
        == q(plain, "SELECT COUNT(*) FROM ledger WHERE t >= ?", (last - 60,))[0][0]
    )


# --- retention -----------------------------------------------------------------------------


def test_retention_drops_old_rows_and_report_still_answers_from_daily_totals(
    recorded, plain, tmp_path
):
    db = tmp_path / "pruned.db"
    shutil.copy(recorded, db)
    before_full = report(recorded)
    before_day = report(recorded, until=str(MIDNIGHT - 0.001))
    assert before_day["requests_total"] > 0 and before_day["429_count"] > 0
    cut = MIDNIGHT + 100
    before_tail = report(recorded, since=str(cut))
    old_final = q(
        plain,
        "SELECT COUNT(*) FROM jobs WHERE updated < ? AND state IN "
        "('succeeded', 'failed', 'cancelled', 'blocked_preflight')",
        (cut,),
    )[0][0]
    old_rows = q(plain, "SELECT COUNT(*) FROM ledger WHERE t < ?", (cut,))[0][0]
    open_jobs = q(
        plain,
        "SELECT COUNT(*) FROM jobs WHERE state NOT IN "
        "('succeeded', 'failed', 'cancelled', 'blocked_preflight')",
    )[0][0]

    async def prune():
        store = await Store.open(db)
        try:
            return await store.prune(cut)
        finally:
            await store.close()

    dropped = run_virtual(prune())
    assert dropped["ledger"] == old_rows > before_day["requests_total"]
    assert dropped["jobs"] == old_final > 0 and dropped["snapshots"] > 0
    # Rows older than the cut are gone; snapshots up to the last keyframe before the cut
    # (what stays decodes from its first row).
    pruned_plain = unpacked(db)
    assert q(pruned_plain, "SELECT COUNT(*) FROM ledger WHERE t < ?", (cut,)) == [(0,)]
    assert is_key_frame(snapshot_frames(db)[0][1])
    assert cut - 31 <= snapshot_times(db)[0] <= cut
    assert (
        q(
            pruned_plain,
            "SELECT COUNT(*) FROM jobs WHERE state NOT IN "
            "('succeeded', 'failed', 'cancelled', 'blocked_preflight')",
        )[0][0]
        == open_jobs
    )
    # The daily totals hold the old day; the report over it answers from them.
    totals = q(
        db,
        "SELECT day, SUM(requests), SUM(r429), SUM(credits) FROM daily_totals "
        "GROUP BY day ORDER BY day",
    )
    assert totals[0] == (
        "2023-11-14",
        before_day["requests_total"],
        before_day["429_count"],
        before_day["credits_used_total"],
    )
    assert totals[1][0] == "2023-11-15" and sum(t[1] for t in totals) == old_rows
    after_day = report(db, until=str(MIDNIGHT - 0.001))
    after_full = report(db)
    after_tail = report(db, since=str(cut))
    for key in COUNTS:
        assert after_day[key] == before_day[key], key
        assert after_full[key] == before_full[key], key
        assert after_tail[key] == before_tail[key], key  # no folded day inside this range
    assert after_day["from_daily_totals"]["days"] == ["2023-11-14"]
    assert after_tail["from_daily_totals"]["days"] == []
    replay = run_virtual(ReplayEngine.load(str(db), now=lambda: 0.0))
    assert replay.snapshot().t >= MIDNIGHT  # replays what is kept, from a keyframe


def test_a_second_pass_adds_late_rows_to_the_days_totals(recorded, tmp_path):
    db = tmp_path / "pruned.db"
    shutil.copy(recorded, db)

    async def go():
        store = await Store.open(db)
        try:
            await store.prune(MIDNIGHT + 10)
            # a request sent before midnight whose outcome landed after the first pass
            store.record_attempt(
                {
                    "t": MIDNIGHT - 5,
                    "t_done": MIDNIGHT + 20,
                    "job_id": "late",
                    "endpoint": "responses",
                    "method": "POST",
                    "path": "/responses",
                    "attempt": 2,
                    "status": 200,
                    "kind": "ok",
                    "credits_used": 7,
                    "estimate": 5,
                }
            )
            await store.flush()
            return await store.prune(MIDNIGHT + 10)
        finally:
            await store.close()

    before = report(recorded, until=str(MIDNIGHT - 0.001))
    assert run_virtual(go())["ledger"] == 1
    after = report(db, until=str(MIDNIGHT - 0.001))
    assert after["requests_total"] == before["requests_total"] + 1
    assert after["credits_used_total"] == before["credits_used_total"] + 7
    assert after["retry_count"] == before["retry_count"] + 1


def test_the_recorder_prunes_periodically_with_keep(tmp_path):
    db = tmp_path / "rec.db"
    rec, log = _record(db, duration=300.0, keep=120.0, prune_every=30.0)
    assert rec.pruned["ledger"] > 0 and "retention: dropped" in log
    last_pass = START + 300 - 120 - 30  # passes every 30 s; the last one keeps 120 s
    assert q(unpacked(db), "SELECT COUNT(*) FROM ledger WHERE t < ?", (last_pass,)) == [(0,)]
    assert q(db, "SELECT SUM(requests) FROM daily_totals")[0][0] == rec.pruned["ledger"]
    rep = report(db)
    assert rep["requests_total"] == rec.latest.requests_total


def test_record_takes_keep_as_a_duration_and_refuses_nonsense(capsys):
    from mavera_tui.cli import parse_args

    assert parse_args(["record", "--db", "x.db", "--keep", "7d"]).keep == 7 * 86400
    with pytest.raises(SystemExit) as e:
        parse_args(["record", "--db", "x.db", "--keep", "a week"])
    assert e.value.code == 2 and "not a duration" in capsys.readouterr().err


# --- the previous schema -------------------------------------------------------------------


#: Schema 2 as mavera-tui wrote it (text in every row, float times), frozen here: the files
#: it wrote must keep opening.
SCHEMA_2 = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    body TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    estimate INTEGER NOT NULL DEFAULT 0,
    actual INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    reason TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_open ON jobs(state)
    WHERE state NOT IN ('succeeded', 'failed', 'cancelled', 'blocked_preflight');
CREATE TABLE IF NOT EXISTS ledger (
    id INTEGER PRIMARY KEY,
    t REAL NOT NULL,             -- wall time the request was sent
    t_done REAL NOT NULL,        -- wall time the outcome was known
    job_id TEXT,                 -- NULL for the engine's own requests (balance polls)
    endpoint TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    status INTEGER,              -- HTTP status; NULL for timeouts and dropped connections
    kind TEXT NOT NULL,          -- 'ok' or an error kind (client.py)
    code TEXT,                   -- the server's error code
    credits_used INTEGER,        -- usage.credits_used; NULL when not reported
    tokens INTEGER,
    estimate INTEGER NOT NULL DEFAULT 0,
    latency REAL,
    rl_limit INTEGER,
    rl_remaining INTEGER,
    rl_reset REAL,
    retry_after REAL,
    message TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS ledger_t ON ledger(t);
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY,
    t REAL NOT NULL,
    level TEXT NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshots (
    t REAL PRIMARY KEY,          -- wall time of the snapshot
    data BLOB NOT NULL           -- encoded by the recorder (see recording/codec.py)
);

CREATE TABLE IF NOT EXISTS daily_totals (
    day TEXT NOT NULL,           -- UTC date (YYYY-MM-DD) of the requests' send times
    endpoint TEXT NOT NULL,
    requests INTEGER NOT NULL,
    r429 INTEGER NOT NULL,
    r402 INTEGER NOT NULL,
    credits INTEGER NOT NULL,    -- SUM(credits_used)
    retries INTEGER NOT NULL,    -- job attempts after the first
    first REAL NOT NULL,         -- earliest and latest send time folded in: a report
    last REAL NOT NULL,          -- range counts a day's totals if it overlaps these
    PRIMARY KEY (day, endpoint)
);
"""


def _as_schema_2(src, dst):
    """The recording ``src`` as schema 2 stored it: the same rows in the text tables."""
    con = sqlite3.connect(dst)
    con.executescript(SCHEMA_2)
    con.execute("ATTACH DATABASE ? AS src", (str(src),))
    for table in ("meta", "jobs", "ledger", "alerts", "snapshots", "daily_totals"):
        cols = [r[1] for r in con.execute(f"PRAGMA main.table_info({table})")]
        names = ", ".join(cols)
        con.execute(f"INSERT INTO main.{table} ({names}) SELECT {names} FROM src.{table}")
    con.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    con.commit()
    con.execute("DETACH DATABASE src")
    con.close()


def _as_schema_1(src, dst):
    """The file as schema 1 wrote it: no daily totals, an index over every job's state."""
    _as_schema_2(src, dst)
    con = sqlite3.connect(dst)
    con.execute("DROP TABLE daily_totals")
    con.execute("DROP INDEX jobs_open")
    con.execute("CREATE INDEX jobs_state ON jobs(state)")
    con.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    con.commit()
    con.close()


def test_a_schema_3_recording_still_opens_for_report_and_replay(recorded, v3):
    rep = report(v3)
    assert rep["schema_version"] == 3 and rep["snapshot_encoding"] == "zdelta1"
    assert {k: rep[k] for k in COUNTS} == {k: report(recorded)[k] for k in COUNTS}
    for since in ("end-60s", "start+100s"):
        assert (
            report(v3, since=since)["requests_total"]
            == report(recorded, since=since)["requests_total"]
        )
    old = run_virtual(ReplayEngine.load(str(v3), now=lambda: 0.0))
    new = run_virtual(ReplayEngine.load(str(recorded), now=lambda: 0.0))
    assert old.times == new.times
    for t in (old.times[0], old.times[len(old.times) // 2] + 0.5, old.times[-1]):
        old.seek(t)
        new.seek(t)
        assert old.snapshot() == new.snapshot()


def test_a_writer_migrates_a_schema_3_file_and_keeps_reading_it(recorded, v3, tmp_path):
    db = tmp_path / "v3.db"
    shutil.copy(v3, db)

    async def go():
        store = await Store.open(db)
        try:
            assert store.schema_version == SCHEMA_VERSION
            return await store.pack()
        finally:
            await store.close()

    packed = run_virtual(go())
    assert packed["ledger"] > 0 and packed["jobs"] > 0
    assert q(db, "SELECT value FROM meta WHERE key = 'schema_version'") == [(str(SCHEMA_VERSION),)]
    rep = report(db)
    assert {k: rep[k] for k in COUNTS} == {k: report(recorded)[k] for k in COUNTS}
    # its snapshots stay zdelta1 rows, which replay still reads
    assert len(run_virtual(ReplayEngine.load(str(db), now=lambda: 0.0)).times) == len(
        snapshot_times(recorded)
    )


def test_a_schema_2_recording_still_opens_for_report_and_replay(recorded, v3, tmp_path):
    db = tmp_path / "v2.db"
    _as_schema_2(v3, db)
    rep = report(db)
    assert rep["schema_version"] == 2
    assert {k: rep[k] for k in COUNTS} == {k: report(recorded)[k] for k in COUNTS}
    assert (
        report(db, since="end-60s")["requests_total"]
        == report(recorded, since="end-60s")["requests_total"]
    )
    eng = run_virtual(ReplayEngine.load(str(db), now=lambda: 0.0))
    assert len(eng.times) == len(snapshot_times(recorded))
    assert q(db, "SELECT value FROM meta WHERE key = 'schema_version'") == [("2",)]


def test_a_writer_migrates_a_schema_2_file_to_the_compact_rows_losing_nothing(v3, tmp_path):
    db = tmp_path / "v2.db"
    _as_schema_2(v3, db)
    before = {t: q(db, f"SELECT * FROM {t} ORDER BY id") for t in ("jobs", "ledger")}

    async def go():
        store = await Store.open(db)
        try:
            assert store.schema_version == SCHEMA_VERSION
            jobs = await store.load_jobs()
            store.update_job(jobs[0].id, "cancelled", reason="x", wall=jobs[0].created + 1)
            return jobs
        finally:
            await store.close()

    jobs = run_virtual(go())
    kinds = {r[0]: r[1] for r in q(db, "SELECT name, type FROM sqlite_master")}
    assert kinds["jobs"] == kinds["ledger"] == "view" and "ledger_t" in kinds
    for table, rows in before.items():
        after = [r[: len(rows[0])] for r in q(db, f"SELECT * FROM {table} ORDER BY id")]
        if table == "jobs":  # the one job changed above
            after = [r for r in after if r[0] != jobs[0].id]
            rows = [r for r in rows if r[0] != jobs[0].id]
        assert after == rows, table  # the same values: times were whole milliseconds
    assert q(db, "SELECT state, reason FROM jobs WHERE id = ?", (jobs[0].id,)) == [
        ("cancelled", "x")
    ]


def test_a_schema_1_recording_still_opens_for_report_and_replay(recorded, v3, tmp_path):
    db = tmp_path / "v1.db"
    _as_schema_1(v3, db)
    rep = report(db)
    assert rep["schema_version"] == 1 and rep["from_daily_totals"]["days"] == []
    assert {k: rep[k] for k in COUNTS} == {k: report(recorded)[k] for k in COUNTS}
    eng = run_virtual(ReplayEngine.load(str(db), now=lambda: 0.0))
    assert len(eng.times) == len(snapshot_times(recorded))
    assert q(db, "SELECT value FROM meta WHERE key = 'schema_version'") == [("1",)]


def test_a_writer_migrates_a_schema_1_file_and_can_prune_it(v3, tmp_path):
    db = tmp_path / "v1.db"
    _as_schema_1(v3, db)

    async def go():
        store = await Store.open(db)
        try:
            assert store.schema_version == SCHEMA_VERSION
            return await store.prune(MIDNIGHT + 100)
        finally:
            await store.close()

    assert run_virtual(go())["ledger"] > 0
    assert q(db, "SELECT value FROM meta WHERE key = 'schema_version'") == [(str(SCHEMA_VERSION),)]
    assert q(db, "SELECT COUNT(*) FROM daily_totals")[0][0] > 0
    indexes = {r[0] for r in q(db, "SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "jobs_open" in indexes and "jobs_state" not in indexes
    plan = q(db, f"EXPLAIN QUERY PLAN SELECT id FROM job_rows WHERE state IN (1) AND {OPEN_JOBS}")
    assert "jobs_open" in str(plan)
