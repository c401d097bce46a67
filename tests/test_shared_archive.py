"""The fleet's ledger archive against a real redis-server: the key's ledger stream copied
into a store from the last archived id, each entry once (by stream id, and by its
process's run and number), and every loss said: a trim past the cursor, the state lost
with a Redis restart, a process's entries whose numbers never came."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from conftest import fleet_report, unpacked
from test_shared_fleet import KEY, ROOT, WINDOW, finish, fleet_sim, jobs_for, start_run

from mavera_tui.shared import key_prefix
from mavera_tui.shared.archive import LedgerArchive, entry_row
from mavera_tui.shared.state import Release, SharedState
from mavera_tui.store import Store

PREFIX = key_prefix("mvra_archive_test")
PREFIX_FLEET = key_prefix(KEY)


def entry(run: str, n: int, *, credits: int = 2, status: int = 200) -> dict[str, Any]:
    host = f"host-{run}"
    return {
        "proc": f"{host}:{100 + len(run)}",
        "host": host,
        "pid": 100 + len(run),
        "role": "run",
        "run": run,
        "n": n,
        "job": f"{run}-{n}",
        "endpoint": "responses",
        "attempt": 1,
        "status": status,
        "kind": "ok" if status == 200 else "rate_limited",
        "credits": credits if status == 200 else 0,
        "latency": 0.01,
    }


async def append(state: SharedState, run: str, numbers: range | list[int]) -> None:
    """Entries as the release script appends them (the real script, a lease per entry)."""
    await state.release([Release(f"{run}#{n}", entry=entry(run, n)) for n in numbers], window=2.0)


def rows(db: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as c:
        return c.execute("SELECT run, n, ms, seq FROM fleet_ledger ORDER BY ms, seq").fetchall()


def gaps(db: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as c:
        return c.execute("SELECT kind, proc, missing FROM fleet_gaps ORDER BY id").fetchall()


async def archive_once(url: str, db: Path, **kw: Any) -> LedgerArchive:
    """An archive as a restarted recorder makes one: open, read what there is, close."""
    store = await Store.open(db)
    arch = LedgerArchive(SharedState(url, PREFIX, socket_timeout=5), store, **kw)
    await arch.start()
    await arch.close(drain=5.0)
    await store.close()
    return arch


async def test_archive_resumes_without_duplicates_and_says_every_gap(
    tmp_path: Path, redis_server: Any
) -> None:
    url = redis_server.url
    db = tmp_path / "fleet.db"
    state = SharedState(url, PREFIX, socket_timeout=5)
    r = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        await r.set(PREFIX + "epoch", "1000.000")
        await append(state, "a", range(1, 16))
        await append(state, "b", range(1, 16))
        arch = await archive_once(url, db, batch=7)  # several batches
        assert arch.archived == 30 and arch.gaps == 0
        assert sorted((run, n) for run, n, *_ in rows(db)) == sorted(
            [("a", n) for n in range(1, 16)] + [("b", n) for n in range(1, 16)]
        )
        # Every archived stream id is the stream's, in its order.
        stream = [sid for sid, _ in await r.xrange(PREFIX + "ledger")]
        assert [f"{ms}-{seq}" for *_, ms, seq in rows(db)] == stream

        # A restart goes on from the cursor; the cursor rewound to the start (an archive
        # that lost its cursor) re-reads the stream and keeps nothing twice.
        await append(state, "a", [16])
        await archive_once(url, db)
        assert len(rows(db)) == 31
        with sqlite3.connect(db) as c:
            c.execute("UPDATE fleet_archive SET last_id = '0-0', position = 0")
        await archive_once(url, db)
        assert len(rows(db)) == 31
        # An entry its process sent twice (a release whose answer timed out, sent again):
        # two stream ids, one number: kept once.
        await append(state, "a", [16])
        await archive_once(url, db)
        assert len(rows(db)) == 31 and gaps(db) == []

        # Trimmed past the cursor: the trim and each process's missing numbers are said.
        await append(state, "a", range(17, 27))
        await r.xtrim(PREFIX + "ledger", maxlen=3, approximate=False)  # keeps a 24, 25, 26
        await append(state, "b", [16])
        arch = await archive_once(url, db)
        assert [g[0] for g in gaps(db)] == ["trimmed", "sequence"]
        assert gaps(db)[0][2] == gaps(db)[1][2] == 7  # a's 17..23, by both counts
        assert arch.missing == 7
        assert {n for run, n, *_ in rows(db) if run == "a"} == set(range(1, 17)) | set(
            range(24, 27)
        )

        # Redis restarted empty (a new epoch): said; the new stream is archived from its
        # start; a's entry 27 was lost with the old stream.
        await r.flushall()
        await r.set(PREFIX + "epoch", "2000.000")
        await append(state, "a", [28, 29])
        await append(state, "b", [17])
        await archive_once(url, db)
        kinds = [g[0] for g in gaps(db)]
        assert kinds == ["trimmed", "sequence", "lost", "sequence"]
        assert gaps(db)[3][2] == 1
        got = [(run, n) for run, n, *_ in rows(db)]
        assert len(got) == len(set(got)) == 16 + 3 + 2 + 17
    finally:
        await r.aclose()
        await state.close()


def test_an_entry_from_redis_is_checked_field_by_field() -> None:
    good = {"rt": "1.5", "a": json.dumps(entry("r", 3))}
    row = entry_row("1700000000000-4", good)
    assert row is not None
    assert row[:9] == (1700000000000, 4, 1.5, "host-r:101", "host-r", 101, "run", "r", 3)
    for bad in ({"a": "not json"}, {"a": "[1]"}, {"a": json.dumps({"job": 1})}, {}):
        assert entry_row("1-1", bad) is None
    odd = entry("r", 3)
    odd.update(status="200", credits=True, n=None, role=["x"])
    row = entry_row("5-0", {"a": json.dumps(odd)})
    assert row is not None and row[8] is None and row[12] is None and row[14] is None
    assert row[6] == "?"


# --- processes: three runs and a recorder on one key, Redis and the recorder restarted ------


@pytest.fixture
def sim(loopback_sim: Any) -> Any:
    return fleet_sim(loopback_sim, seed=7)


def start_record(tmp: Path, sim_url: str, redis_url: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAVERA")}
    env["MAVERA_TUI_CONFIG"] = os.devnull
    env["MAVERA_API_KEY"] = KEY
    cmd = [sys.executable, "-m", "mavera_tui", "record", "--db", str(tmp / "rec.db")]
    cmd += ["--base-url", sim_url, "--window-seconds", str(WINDOW), "--tier", "starter"]
    cmd += ["--interval", "0.2", "--shared", redis_url, "--host-id", "host-rec"]
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_archiving(db: Path, proc: subprocess.Popen[str]) -> None:
    """Until the recorder has made its archive's tables (it archives from then on)."""
    deadline = time.monotonic() + 20
    while True:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the recorder did not start archiving"
        if db.exists():
            with contextlib.suppress(sqlite3.Error), sqlite3.connect(db, timeout=1) as c:
                if c.execute("SELECT 1 FROM sqlite_master WHERE name = 'fleet_archive'").fetchall():
                    return
        time.sleep(0.05)


def stop_record(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "Traceback" not in out + err, err
    return err


def own_ledger(db: Path) -> tuple[int, int]:
    """(attempts, credits) of a process's own ledger, read as an operator would (a
    recording's packed rows unpacked first, on a copy)."""
    with sqlite3.connect(unpacked(db)) as c:
        n, credits = c.execute(
            "SELECT COUNT(*), COALESCE(SUM(credits_used), 0) FROM ledger"
        ).fetchone()
    return int(n), int(credits)


@pytest.mark.parametrize("persist", [True, False], ids=["redis-persists", "redis-loses-all"])
def test_the_recording_archives_the_fleets_ledger_through_restarts(
    tmp_path: Path, sim: Any, tmp_path_factory: Any, persist: bool
) -> None:
    """Three ``run --shared`` processes and a ``record --shared`` on one key; Redis killed
    and restarted mid-run, the recorder stopped and started again on its file. The archive
    holds each process's attempts once: every one when Redis kept its data; when Redis
    came back empty, every one but those lost with it, and exactly those are said missing.
    The report gives the fleet's totals, labelled apart from the recorder's own."""
    from conftest import RedisServer

    redis = RedisServer(tmp_path_factory.mktemp("redis"), persist=persist)
    db = tmp_path / "rec.db"
    try:
        rec = start_record(tmp_path, sim.url, redis.url)
        wait_archiving(db, rec)
        names = ("a", "b", "c")
        runs = [
            start_run(
                tmp_path, n, jobs_for(n, 30), sim.url, redis.url, "--db", str(tmp_path / f"{n}.db")
            )
            for n in names
        ]
        deadline = time.monotonic() + 20
        while len(asyncio.run(read_stream(redis.url))) < 20:  # the fleet is under way
            assert time.monotonic() < deadline
            time.sleep(0.05)
        # The recorder held still while the fleet goes on: what is appended meanwhile is
        # not archived when Redis goes (and, without persistence, is lost with it).
        rec.send_signal(signal.SIGSTOP)
        time.sleep(0.4)
        assert all(p.poll() is None for p in runs), "finished before the restart: more jobs"
        redis.restart(down_for=0.5)
        rec.send_signal(signal.SIGCONT)
        time.sleep(0.3)
        stop_record(rec)
        rec = start_record(tmp_path, sim.url, redis.url)
        wait_archiving(db, rec)
        for p in runs:
            _, err = finish(p)
            assert p.returncode == 0, err
        err = stop_record(rec)
        assert "fleet ledger:" in err
        stream = asyncio.run(read_stream(redis.url))
    finally:
        redis.stop()

    with sqlite3.connect(db) as c:
        archived = c.execute("SELECT host, role, n, credits, ms, seq FROM fleet_ledger").fetchall()
        gap_rows = c.execute("SELECT kind, proc, missing FROM fleet_gaps").fetchall()
    kinds = {g[0] for g in gap_rows}
    summaries = {n: json.loads((tmp_path / f"{n}.json").read_text()) for n in names}
    for n in names:
        own_n, own_credits = own_ledger(tmp_path / f"{n}.db")
        assert own_n == summaries[n]["requests"]
        mine = [r for r in archived if r[0] == f"host-{n}"]
        numbers = sorted(r[2] for r in mine)
        assert len(numbers) == len(set(numbers))  # nothing twice
        assert {r[1] for r in mine} == {"run"}
        missing = sum(
            g[2] for g in gap_rows if g[0] == "sequence" and g[1].startswith(f"host-{n}:")
        )
        # Nothing unaccounted for: archived, or said missing by number.
        assert len(numbers) + missing == own_n, (n, len(numbers), missing, own_n)
        assert max(numbers) == own_n or missing
        if persist:
            assert numbers == list(range(1, own_n + 1))
            assert sum(r[3] or 0 for r in mine) == own_credits == summaries[n]["credits_used"]
    # Each recorder run's own attempts (balance reads) are in the archive too, once. (A
    # process's last entries lost with Redis, with none after them, cannot be counted: the
    # first recorder may have ended so; the runs went on after the restart.)
    recorded = [r for r in archived if r[1] == "record"]
    rec_missing = sum(g[2] for g in gap_rows if g[1] and g[1].startswith("host-rec"))
    if persist:
        assert len(recorded) == own_ledger(db)[0]
    else:
        assert 0 < len(recorded) + rec_missing <= own_ledger(db)[0]
    # What the stream still has is all in the archive.
    keys = {(ms, seq) for *_, ms, seq in archived}
    by_number = {(r[0], r[2]) for r in archived}
    for sid, fields in stream:
        ms, _, seq = sid.partition("-")
        a = json.loads(fields["a"])
        assert (int(ms), int(seq)) in keys or (a["host"], a["n"]) in by_number
    print(f"archived {len(archived)}, gaps {gap_rows}, requests {len(sim.sim.records)}")
    if persist:
        assert gap_rows == []
        assert len(archived) == len(sim.sim.records)
        assert sum(r[3] or 0 for r in archived) == sim.sim.records.total_charged()
    else:
        assert "lost" in kinds, gap_rows
        assert kinds <= {"lost", "sequence"}
        assert "sequence" in kinds  # entries were lost, and are counted per process

    rep = subprocess.run(
        [sys.executable, "-m", "mavera_tui", "report", str(db), "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert rep.returncode == 0, rep.stderr
    fleet = json.loads(rep.stdout)["fleet"]
    assert fleet["requests_total"] == len(archived)
    assert fleet["credits_used_total"] == sum(r[3] or 0 for r in archived)
    assert fleet["429_count"] == sum(1 for r in sim.sim.records if r.status == 429) or not persist
    assert {p["role"] for p in fleet["processes"]} == {"run", "record"}
    assert fleet["missing_entries"] == sum(g[2] for g in gap_rows if g[0] == "sequence")
    text = subprocess.run(
        [sys.executable, "-m", "mavera_tui", "report", str(db), "--no-charts"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert "this process: the recorder's own ledger" in text
    assert "fleet: every process on the key, from the archived ledger stream" in text


async def read_stream(url: str) -> list[tuple[str, dict[str, str]]]:
    r = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        return [(sid, dict(f)) for sid, f in await r.xrange(PREFIX_FLEET + "ledger")]
    finally:
        await r.aclose()


def test_a_process_archives_the_fleet_into_its_own_store_when_asked(
    tmp_path: Path, redis_server: Any
) -> None:
    """``[shared] archive = true``: a run's store holds the whole fleet's ledger (its own
    attempts and another process's), through Redis going away and coming back; a process
    not asked keeps only its own ledger."""
    from mavera_tui.config import Config, EngineSettings, SharedSettings
    from mavera_tui.engine import Engine, Settings
    from mavera_tui.jobs import JobSpec

    def settings(host: str, archive: bool) -> Settings:
        return Settings(
            Config(
                engine=EngineSettings(window_seconds=2.0),
                shared=SharedSettings(redis_url=redis_server.url, host_id=host, archive=archive),
            ),
            db=str(tmp_path / f"{host}.db"),
            force_embedded=True,  # both on the simulator's one key: one fleet
            keep_finished=False,
            mode="run",
        )

    async def go() -> tuple[LedgerArchive, Any]:
        a, b = Engine(settings("a", True)), Engine(settings("b", False))
        sa, sb = await a.start(), await b.start()
        try:
            for s, tag in ((sa, "a"), (sb, "b")):
                await s.submit_many(
                    [JobSpec(f"{tag}{i}", "POST", "/responses", {"input": "x"}) for i in range(15)]
                )
            await asyncio.sleep(0.3)
            redis_server.restart(down_for=0.3)  # the archive waits, then goes on
            for s in (sa, sb):
                await asyncio.wait_for(s.wait_idle(), 30)
            assert b.archive is None
            return a.archive, (sa.summary(), sb.summary())
        finally:
            await b.stop()
            await a.stop()

    arch, (sum_a, sum_b) = asyncio.run(go())
    with sqlite3.connect(tmp_path / "a.db") as c:
        got = dict(c.execute("SELECT host, COUNT(*) FROM fleet_ledger GROUP BY host").fetchall())
        gap_rows = c.execute("SELECT kind, proc, missing FROM fleet_gaps").fetchall()
    with sqlite3.connect(tmp_path / "b.db") as c:
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master")}
    assert "fleet_ledger" not in tables
    for host, summary in (("a", sum_a), ("b", sum_b)):
        missing = sum(g[2] for g in gap_rows if g[0] == "sequence" and g[1].startswith(host))
        own = own_ledger(tmp_path / f"{host}.db")[0]
        assert own == summary["requests"]
        assert got.get(host, 0) + missing == own
        assert got.get(host, 0) > 0
    assert arch.archived == sum(got.values())


async def test_retention_folds_the_fleet_ledger_and_numbers_go_on(
    tmp_path: Path, redis_server: Any
) -> None:
    """``record --keep``: archived entries older than the cut are folded per day and process
    (the report's totals do not change) and dropped; a process's numbers are still checked
    after its old entries are gone (no false gap, a real one still said)."""
    from mavera_tui.recording.writer import RecordingWriter

    url = redis_server.url
    db = tmp_path / "fleet.db"
    state = SharedState(url, PREFIX, socket_timeout=5)
    r = aioredis.Redis.from_url(url, decode_responses=True)

    class Later:  # a clock a day and a minute on: everything archived is past a day's keep
        def wall(self) -> float:
            return time.time() + 86400 + 60

        def now(self) -> float:
            return time.monotonic()

    try:
        await r.set(PREFIX + "epoch", "1000.000")
        await append(state, "a", range(1, 11))
        await state.release([Release("b#1", entry=entry("b", 1, status=429))], window=2.0)
        await archive_once(url, db)
        before = await fleet_report(db)
        assert before["requests_total"] == 11 and before["429_count"] == 1

        store = await Store.open(db)
        logged: list[str] = []
        writer = RecordingWriter(store, Later(), logged.append, keep=86400.0)  # type: ignore[arg-type]
        dropped = await writer.prune()
        await store.close()
        assert dropped["fleet ledger"] == 11
        assert rows(db) == []
        assert any("11 fleet ledger rows" in line for line in logged), logged
        after = await fleet_report(db)
        for k in ("requests_total", "credits_used_total", "429_count", "402_count"):
            assert after[k] == before[k], k
        assert [(p["process"], p["requests"]) for p in after["processes"]] == [
            (p["process"], p["requests"]) for p in before["processes"]
        ]
        assert len(after["from_daily_totals"]) in (1, 2)  # the entries' UTC day(s)

        # a goes on at 11 (its old entries are gone: no gap); b skips 2 (a real gap).
        await append(state, "a", [11])
        await append(state, "b", [3])
        arch = await archive_once(url, db)
        assert gaps(db) == [("sequence", "host-b:101", 1)]
        assert arch.missing == 1
        assert (await fleet_report(db))["requests_total"] == 13
    finally:
        await r.aclose()
        await state.close()
