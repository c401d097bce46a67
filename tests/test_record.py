"""Record mode: snapshots at the interval, an owner-only file, a clean stop on SIGTERM."""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import snapshot_frames, snapshot_times, unpacked

from mavera_tui.clock import Clock, run_virtual
from mavera_tui.config import Config, SimSettings
from mavera_tui.engine import Settings
from mavera_tui.metrics import render
from mavera_tui.recording.codec import (
    BlockEncoder,
    FrameDecoder,
    SnapshotDecoder,
    SnapshotEncoder,
    block_frames,
    is_key_frame,
    snapshot_state,
)
from mavera_tui.recording.recorder import Recorder
from mavera_tui.recording.timespec import parse_duration
from mavera_tui.states import JobState

WALL0 = 1_700_000_000.0
ROOT = Path(__file__).resolve().parents[1]


def record(db, *, duration=60.0, interval=1.0, jobs=None, **kw):
    out = io.StringIO()
    rec = Recorder(
        Settings(
            Config(sim=SimSettings(purchased=10_000_000)),
            db=str(db),
            keep_finished=False,
            mode="record",
        ),
        duration=duration,
        interval=interval,
        jobs=jobs,
        grace=600,
        clock=Clock(wall0=WALL0),
        out=out,
        **kw,
    )
    rc = run_virtual(rec.run())
    return rc, rec, out.getvalue()


def test_durations_take_seconds_or_units():
    assert parse_duration("90") == 90 and parse_duration("90s") == 90
    assert parse_duration("10m") == 600 and parse_duration("2h") == 7200
    with pytest.raises(ValueError):
        parse_duration("ten minutes")


def test_a_snapshot_is_written_every_interval_into_an_owner_only_file(query_db, tmp_path):
    db = tmp_path / "rec.db"
    rc, rec, log = record(db, duration=60, interval=2.0)
    assert rc == 0
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o600
    ts = snapshot_times(db)
    # one at start and one every 2 s for the duration; then, while the requests in flight
    # land, one every 2 s more, and the final one after the stop
    assert len([t for t in ts if t <= ts[0] + 60.01]) == 31
    gaps = [b - a for a, b in zip(ts, ts[1:-1], strict=False)]
    assert all(abs(g - 2.0) < 0.01 for g in gaps)
    meta = dict(query_db(db, "SELECT key, value FROM meta"))
    assert meta["snapshot_encoding"] == "zblock1" and meta["recorded_target"]
    assert "embedded simulator" in log and "demo workload" in log and "stopped:" in log


def test_every_recorded_snapshot_decodes_to_what_the_engine_showed(query_db, tmp_path):
    db = tmp_path / "rec.db"
    rc, rec, _ = record(db, duration=90, keyframe_every=25)
    frames = [f for _, f in snapshot_frames(db)]
    assert sum(is_key_frame(f) for f in frames) >= 3
    dec = FrameDecoder()
    states = [json.loads(json.dumps(dec.decode(f))) for f in frames]
    assert states[-1] == json.loads(json.dumps(snapshot_state(rec.latest)))
    # Re-encoding the decoded snapshots with other keyframe and block spacing gives them
    # back exactly; so does the old per-row encoding (zdelta1), which old files hold.
    enc2 = BlockEncoder(keyframe_every=7, block_snapshots=3, merge_blocks=2)
    dec3 = FrameDecoder()
    snaps = [dec3.snapshot(f) for f in frames]
    blocks = []
    for i, snap in enumerate(snaps):
        blocks += [b for b, merges in enc2.add(float(i), snap) if not merges]
    blocks += [b for b, merges in enc2.flush(final=True) if not merges]
    dec2 = FrameDecoder()
    for (_, f), snap in zip(block_frames(blocks), snaps, strict=True):
        assert dec2.decode(f) == json.loads(json.dumps(snapshot_state(snap)))
    enc1, dec1 = SnapshotEncoder(keyframe_every=7), SnapshotDecoder()
    for snap in snaps:
        assert json.loads(json.dumps(dec1.decode(enc1.encode(snap)))) == json.loads(
            json.dumps(snapshot_state(snap))
        )


def test_a_job_file_runs_to_the_end_and_bad_lines_are_reported(query_db, tmp_path, job_file):
    lines = [
        json.dumps(
            {"id": f"j{i}", "method": "POST", "path": "/responses", "body": {"input": f"q{i}"}}
        )
        for i in range(20)
    ]
    lines.insert(3, '{"id": "bad", "method": "POST", "path": "/nowhere"}')
    jobs = job_file(lines)
    db = tmp_path / "rec.db"
    rc, rec, log = record(db, duration=None, jobs=str(jobs))
    assert rc == 0
    assert "line 4" in log and "all jobs done" in log
    plain = unpacked(db)
    states = dict(query_db(plain, "SELECT state, COUNT(*) FROM jobs GROUP BY state"))
    assert states == {JobState.SUCCEEDED: 20}
    assert query_db(
        plain, "SELECT COUNT(DISTINCT job_id) FROM ledger WHERE job_id IS NOT NULL"
    ) == [(20,)]


def test_metrics_expose_the_latest_snapshot_in_prometheus_format(tmp_path):
    rc, rec, _ = record(tmp_path / "rec.db", duration=30)
    text = render(rec.latest).decode()
    assert f"mavera_requests_total {float(rec.latest.requests_total)}" in text
    assert f"mavera_credits_used_total {float(rec.latest.credits_used_total)}" in text
    assert 'mavera_queue_depth{state="queued"}' in text


def test_metrics_are_served_on_loopback_and_stop_with_close():
    import urllib.request

    from mavera_tui.metrics import serve_metrics
    from mavera_tui.snapshot import Snapshot

    srv = serve_metrics(lambda: Snapshot(t=1.0, requests_total=7), 0)
    try:
        assert srv._server.server_address[0] == "127.0.0.1"
        body = urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/metrics", timeout=5).read()
        assert b"mavera_requests_total 7.0" in body
    finally:
        srv.close()


def test_sigterm_during_a_record_loses_nothing(query_db, tmp_path):
    db = tmp_path / "rec.db"
    env = {k: v for k, v in os.environ.items() if k not in ("MAVERA_API_KEY", "MAVERA_BASE_URL")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mavera_tui",
            "record",
            "--db",
            str(db),
            "--interval",
            "0.2",
            "--grace",
            "1",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if db.exists() and os.path.getsize(db) > 0:
                try:
                    n = "SELECT COALESCE(SUM(json_array_length(times)), 0) FROM snapshot_blocks"
                    if query_db(db, n)[0][0] >= 5:
                        break
                except sqlite3.Error:
                    pass
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "stopping: SIGTERM" in err and "Traceback" not in err
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o600
    assert query_db(db, "PRAGMA integrity_check") == [("ok",)]
    stopped = dict(query_db(db, "SELECT key, value FROM meta"))["recording_stopped"]
    last_t = snapshot_times(db)[-1]
    assert abs(last_t - float(stopped)) < 0.01  # the final snapshot is there
    # Every job the ledger mentions is in the jobs table, in a state that says what happened.
    db = unpacked(db)
    orphans = query_db(
        db,
        "SELECT COUNT(*) FROM ledger WHERE job_id IS NOT NULL AND job_id "
        "NOT IN (SELECT id FROM jobs)",
    )
    assert orphans == [(0,)]
    done = query_db(
        db,
        "SELECT COUNT(*) FROM jobs j WHERE state IN (?, ?) "
        "AND reason NOT LIKE 'served from cache%' AND NOT EXISTS "
        "(SELECT 1 FROM ledger l WHERE l.job_id = j.id)",
        (JobState.SUCCEEDED, JobState.FAILED),
    )
    assert done == [(0,)]  # nothing finished without its attempt in the ledger
    in_flight = query_db(db, "SELECT COUNT(*) FROM jobs WHERE state = ?", (JobState.IN_FLIGHT,))[0][
        0
    ]
    assert in_flight == 0 or "abandoning" in err


def test_the_end_of_a_duration_stops_admitting_and_waits_for_what_is_in_flight(
    job_file, query_db, tmp_path
):
    """Videos take 40-150 s on the simulator: at the end of a 10 s duration the ones in
    flight are paid for, so the recorder sends nothing new, says so once, keeps recording
    while they land, and ends within duration + grace."""
    lines = [
        {"id": f"v{i}", "method": "POST", "path": "/video-analyses", "body": {"video_seconds": 20}}
        for i in range(2)
    ]
    lines += [
        {"id": f"r{i}", "method": "POST", "path": "/responses", "body": {"input": f"q{i}"}}
        for i in range(400)
    ]
    jobs = job_file(lines)
    db = tmp_path / "rec.db"
    out = io.StringIO()
    rec = Recorder(
        Settings(
            Config(sim=SimSettings(tier="starter", purchased=10_000_000)),
            db=str(db),
            keep_finished=False,
            mode="record",
        ),
        duration=10,
        interval=1.0,
        jobs=str(jobs),
        grace=200,
        clock=Clock(wall0=WALL0),
        out=out,
    )
    assert run_virtual(rec.run()) == 0
    log = out.getvalue()
    assert log.count("waiting up to 200 s") == 1
    assert "duration 10 s reached: no new requests" in log and "they are paid for" in log
    assert "signal again" not in log and "abandoning" not in log
    ts = snapshot_times(db)
    db = unpacked(db)
    states = dict(query_db(db, "SELECT state, COUNT(*) FROM jobs GROUP BY state"))
    assert states.get(JobState.IN_FLIGHT, 0) == 0  # every paid-for request's outcome is known
    assert query_db(db, "SELECT state FROM jobs WHERE id LIKE 'v%'") == [(JobState.SUCCEEDED,)] * 2
    assert states.get(JobState.QUEUED, 0) > 0  # the rest was not admitted after the duration
    sent = [r[0] - WALL0 for r in query_db(db, "SELECT t FROM ledger WHERE job_id IS NOT NULL")]
    assert max(sent) <= 10.5  # nothing sent after the duration
    done = [r[0] - WALL0 for r in query_db(db, "SELECT t_done FROM ledger")]
    assert 40 <= max(done) <= 10 + 200  # waited for the videos, within the documented bound
    assert len([t for t in ts if t - WALL0 > 11]) >= 25  # the recording went on while they landed
    assert "after waiting" in log and "stopped:" in log


def test_a_grace_shorter_than_the_requests_in_flight_abandons_them_and_says_so(tmp_path, job_file):
    jobs = job_file(
        [{"id": "v", "method": "POST", "path": "/video-analyses", "body": {"video_seconds": 20}}]
    )
    out = io.StringIO()
    rec = Recorder(
        Settings(db=str(tmp_path / "rec.db"), keep_finished=False, mode="record"),
        duration=5,
        jobs=str(jobs),
        grace=3,
        clock=Clock(wall0=WALL0),
        out=out,
    )
    assert run_virtual(rec.run()) == 0
    log = out.getvalue()
    assert "waiting up to 3 s for the 1 request(s) in flight" in log
    assert "1 request(s) still in flight after 3 s: abandoning them" in log


def test_a_signal_during_the_end_of_duration_wait_stops_at_once(job_file, query_db, tmp_path):
    import asyncio

    jobs = job_file(
        [{"id": "v", "method": "POST", "path": "/video-analyses", "body": {"video_seconds": 20}}]
    )
    db = tmp_path / "rec.db"
    out = io.StringIO()
    rec = Recorder(
        Settings(db=str(db), keep_finished=False, mode="record"),
        duration=5,
        jobs=str(jobs),
        grace=600,
        clock=Clock(wall0=WALL0),
        out=out,
    )

    async def go():
        run = asyncio.ensure_future(rec.run())
        await asyncio.sleep(15)  # 10 s into the wait for the video (40 s at least)
        rec.request_stop("SIGINT")
        return await run

    assert run_virtual(go()) == 0
    log = out.getvalue()
    assert "still in flight on a signal to stop at once: abandoning" in log
    last = snapshot_times(db)[-1] - WALL0
    assert 14 < last < 17
