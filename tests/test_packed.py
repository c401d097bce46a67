"""Packed recordings (schema 4): what was recorded reads back the same, in fewer bytes.

The ledger and finished jobs move into column blocks (``Store.pack``), snapshots are
written in zblock1 blocks; report, replay and the store's lookups read rows and blocks as
one. Each test here compares the packed reading with what the engine showed or with the
same history unpacked into plain rows.
"""

from __future__ import annotations

import io
import json
import shutil
import sqlite3
from dataclasses import replace

import pytest
from conftest import snapshot_frames, unpacked

from mavera_tui.clock import Clock, run_virtual
from mavera_tui.colblock import BlockError, pack, unpack
from mavera_tui.engine import Settings
from mavera_tui.recording.codec import FrameDecoder, snapshot_state, state_to_snapshot
from mavera_tui.recording.recorder import Recorder
from mavera_tui.recording.replay import ReplayEngine
from mavera_tui.recording.report import build_report
from mavera_tui.recording.writer import RecordingWriter
from mavera_tui.sim import create_sim
from mavera_tui.sim.config import Faults, SimConfig
from mavera_tui.store import Store

WALL0 = 1_700_000_000.0


def _record(db, monkeypatch=None, **kw):
    """Four minutes of the demo on a simulator with 429s and 5xx; every snapshot the
    writer was given, in order, if ``monkeypatch`` is given."""
    written = []
    if monkeypatch is not None:
        orig = RecordingWriter.write

        def spy(self, snap):
            written.append(snap)
            orig(self, snap)

        monkeypatch.setattr(RecordingWriter, "write", spy)
    clock = Clock(wall0=WALL0)
    cfg = SimConfig(
        tier="professional",
        plan="professional",
        purchased=10_000_000,
        seed=7,
        faults=Faults(error_5xx_rate=0.03, storm_start=30.0, storm_seconds=15.0),
    )
    rec = Recorder(
        Settings(db=str(db), keep_finished=False, mode="record"),
        duration=240,
        interval=1.0,
        grace=600,
        clock=clock,
        out=io.StringIO(),
        sim=create_sim(cfg, clock),
        demo_kw={"rate_per_min": 240.0},
        keyframe_every=45,
        **kw,
    )
    assert run_virtual(rec.run()) == 0
    return rec, written


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    try:
        db = tmp_path_factory.mktemp("packed") / "rec.db"
        rec, written = _record(db, mp)
    finally:
        mp.undo()
    return db, rec, written


def report(db, **kw):
    return run_virtual(build_report(str(db), **kw))


def test_report_totals_equal_what_was_recorded_and_the_unpacked_rows(packed, tmp_path):
    db, rec, _ = packed
    n = sqlite3.connect(db)
    try:
        blocks = n.execute("SELECT COUNT(*) FROM ledger_blocks").fetchone()[0]
        rows = n.execute("SELECT COUNT(*) FROM ledger_rows").fetchone()[0]
    finally:
        n.close()
    assert blocks >= 4 and rows <= 1  # the ledger is packed, all but its newest row
    rep = report(db)
    last = rec.latest
    assert rep["requests_total"] == last.requests_total > 500
    assert rep["credits_used_total"] == last.credits_used_total > 0
    assert rep["429_count"] == last.responses_429_total > 0
    # The same history as plain rows (Store.unpack) reports the same, key for key.
    plain = report(unpacked(db))
    for key in ("file", "schema_version"):
        plain.pop(key), rep.pop(key)
    assert rep == plain
    # A recording never packed reports the same before and after it is packed.
    never = tmp_path / "never.db"
    _record(never, pack_every=None)
    before = report(never)

    async def pack_it():
        store = await Store.open(never)
        try:
            return await store.pack()
        finally:
            await store.close()

    assert run_virtual(pack_it())["ledger"] == before["requests_total"] - 1  # all but one
    assert report(never) == before


def test_replay_frames_equal_the_snapshots_recorded(packed):
    db, _, written = packed
    eng = run_virtual(ReplayEngine.load(str(db), now=lambda: 0.0))
    assert len(eng.times) == len(written) > 240
    assert eng.times == [round(s.t, 3) for s in written]

    def shown(snap):
        norm = state_to_snapshot(json.loads(json.dumps(snapshot_state(snap))))
        return replace(norm, mode="replay", paused=True)

    for i, snap in enumerate(written):  # every frame, in order
        if i:
            eng.step(1)
        assert eng.snapshot() == shown(snap), i
    # --goto: any instant, forward and back, decodes from the keyframe before it.
    for form in ("start+100s", "end-7s", "start+3s", "start+199.5s", "start"):
        t = eng.parse_goto(form)
        eng.seek(t)
        i = max(k for k, s in enumerate(written) if round(s.t, 3) <= t)
        assert eng.snapshot() == shown(written[i]), form


def test_a_crash_loses_at_most_the_block_being_filled(packed, tmp_path):
    """The writer stops without its last flush, as under SIGKILL: merged blocks and the
    small blocks after them decode as one chain, short only of the block being filled."""
    _, _, written = packed
    db = tmp_path / "crash.db"

    async def go():
        store = await Store.open(db)
        w = RecordingWriter(store, Clock(wall0=WALL0), print, keyframe_every=45)
        for snap in written[:137]:
            w.write(snap)
        await store.close()  # no w.flush()

    run_virtual(go())
    frames = snapshot_frames(db)
    # Blocks of 10 (a keyframe, every 45, starts one): 0-9, ..., 40-44, 45-54, ...,
    # 130-134; 135 and 136 were being filled.
    assert len(frames) == 135
    dec = FrameDecoder()
    for (t, f), snap in zip(frames, written, strict=False):
        assert t == round(snap.t, 3)
        assert dec.decode(f) == json.loads(json.dumps(snapshot_state(snap)))


def test_pack_then_unpack_gives_every_row_back(packed, tmp_path):
    db, _, _ = packed
    plain = unpacked(db)
    again = tmp_path / "again.db"
    shutil.copy(plain, again)

    async def go():
        store = await Store.open(again)
        try:
            return await store.pack(), await store.unpack()
        finally:
            await store.close()

    packed_n, unpacked_n = run_virtual(go())
    assert packed_n == unpacked_n and packed_n["ledger"] > 500 and packed_n["jobs"] > 500

    def rows(path):
        con = sqlite3.connect(path)
        try:
            return (
                con.execute("SELECT * FROM ledger ORDER BY id").fetchall(),
                con.execute("SELECT * FROM jobs ORDER BY seq").fetchall(),
            )
        finally:
            con.close()

    assert rows(again) == rows(plain)


def test_packed_jobs_stay_known_by_id(packed):
    """Duplicates are refused, an earlier run's jobs found, a job's detail and the jobs
    list read, whether a job is in a row or in a block."""
    db, _, _ = packed
    plain = unpacked(db)

    async def read(path):
        store = await Store.open(path, readonly=True)
        try:
            ids = [r[0] for r in await store.query("SELECT id FROM jobs ORDER BY seq")]
            ids += [r[1] for r in await store.archived_job_rows()]
            some = sorted(ids)[::37]
            return (
                len(ids),
                await store.existing_ids([*some, "no-such-job"]),
                await store.job_states(some),
                [await store.job_request(i) for i in some[:5]],
                [await store.job_attempts(i) for i in some[:5]],
                await store.jobs_page(3, 20, "succ", "endpoint", True),
                await store.jobs_page(0, 15, "", "created", False),
                await store.next_seq(),
            )
        finally:
            await store.close()

    got, want = run_virtual(read(db)), run_virtual(read(plain))
    assert got[0] == want[0] > 500
    assert got[1] == want[1] and "no-such-job" not in got[1] and len(got[1]) > 10
    assert got[2:] == want[2:]
    assert any(got[4]) and got[5][1] > 0


def test_column_blocks_round_trip_and_refuse_damage():
    rows = [
        (1, 1_700_000_000_123, "demo-9", None, "x"),
        (2, 1_700_000_000_100, "demo-10", 3, ""),
        (5, None, "007", -4, "ünï"),
        (6, 1_700_000_000_900, "", 2**40, "demo-11"),
    ]
    cols = ("id", "t", "job", "n", "s")
    blob = pack(cols, rows, ("id", "t", "n"), ("job", "s"))
    assert unpack(blob) == (list(cols), rows)
    with pytest.raises(BlockError):
        unpack(blob[:-3])
