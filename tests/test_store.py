"""The store: a stop in the middle of a batch, then a restart on the same database, loses no
job and sends none twice; one writer at a time; the files are private."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mavera_tui import snapshot as S
from mavera_tui.clock import Clock, run_virtual
from mavera_tui.jobs import JobSpec
from mavera_tui.scheduler import Scheduler
from mavera_tui.sim import SimConfig, Simulator, create_sim
from mavera_tui.store import Store, StoreError

WALL0 = 1_800_000_000.0
KEY = "mvra_test_store"
N = 30


def news_jobs(n: int = N) -> list[JobSpec]:
    """News analyses: the story id is in the path, so the API side's log names each job."""
    return [JobSpec(f"n{i:02d}", "POST", f"/news/stories/s{i:02d}/analyze", {}) for i in range(n)]


async def _session(
    make_rig: Callable[..., Any],
    sim: Simulator,
    db: Path,
    *,
    specs: list[JobSpec],
    resend_up_to: int = 0,
    crash_after: float | None = None,
) -> Scheduler:
    rig = await make_rig(
        sim, key=KEY, db=db, window_seconds=60.0, resend_unknown_up_to=resend_up_to
    )
    if specs:
        await rig.sched.submit_many(specs)
    if crash_after is not None:
        await asyncio.sleep(crash_after)
        await rig.sched.abort()  # in-flight requests are cut off mid-way
        await rig.store.close()
        await rig.client.aclose()
    else:
        await rig.sched.wait_idle()
        await rig.close()
    return rig.sched


def _crash_and_restart(
    make_rig: Callable[..., Any], job_states: Callable[..., Any], tmp_path: Path, resend_up_to: int
) -> dict[str, Any]:
    db = tmp_path / "jobs.db"

    async def main() -> dict[str, Any]:
        clock = Clock(wall0=WALL0)
        # 10 requests per minute: the balance read and 9 jobs go in the first window, 10
        # more at its end; we stop 1 s into the second window, while those 10 run (2-8 s).
        sim = create_sim(SimConfig(limit=10, plan="enterprise", allocation=10**6, seed=2), clock)
        first = await _session(make_rig, sim, db, specs=news_jobs(), crash_after=61.0)
        states1 = job_states(db)
        in_flight_at_crash = sorted(i for i, s in states1.items() if s == S.IN_FLIGHT)
        await sim.drain()  # the cut-off requests still complete server-side
        await asyncio.sleep(61.0)  # the window empties
        second = await _session(make_rig, sim, db, specs=[], resend_up_to=resend_up_to)
        return {
            "sim": sim,
            "states1": states1,
            "in_flight": in_flight_at_crash,
            "first": first,
            "second": second,
            "states2": job_states(db),
        }

    return run_virtual(main())


def _sent_per_job(sim: Simulator) -> Counter[str]:
    c: Counter[str] = Counter()
    for r in sim.records:
        if r.path.startswith("/news/stories/"):
            c["n" + r.path.split("/")[3][1:]] += 1
    return c


def test_a_restart_resumes_queued_jobs_and_never_resends_one_that_was_in_flight(
    job_states, make_rig, tmp_path: Path
) -> None:
    out = _crash_and_restart(make_rig, job_states, tmp_path, resend_up_to=0)
    states1, states2, sim = out["states1"], out["states2"], out["sim"]
    done1 = {i for i, s in states1.items() if s == S.SUCCEEDED}
    queued1 = {i for i, s in states1.items() if s in S.WAITING_STATES}
    assert len(done1) == 9 and len(out["in_flight"]) == 10 and len(queued1) == 11
    # Nothing lost: every job has exactly one final state after the restart.
    assert set(states2) == {j.id for j in news_jobs()}
    for i in done1 | queued1:
        assert states2[i] == S.SUCCEEDED, i
    for i in out["in_flight"]:
        assert states2[i] == S.OUTCOME_UNKNOWN, i
        job = out["second"].jobs[i]
        assert "not re-sent" in job.reason.lower() or "not re-sent" in job.reason
    # Nothing sent twice: the API side saw exactly one request per job.
    sent = _sent_per_job(sim)
    assert sent == Counter({j.id: 1 for j in news_jobs()})
    assert sim.records.count(status=429) == 0
    s = out["second"].summary()
    assert s["outcome_unknown"] == 10 and s["succeeded"] == 11


def test_a_restart_resends_in_flight_jobs_that_cost_at_most_the_threshold(
    job_states, make_rig, tmp_path: Path
) -> None:
    # A news analysis costs <= 20.
    out = _crash_and_restart(make_rig, job_states, tmp_path, resend_up_to=20)
    sent = _sent_per_job(out["sim"])
    for i in out["in_flight"]:
        assert out["states2"][i] == S.SUCCEEDED
        assert sent[i] == 2
    assert sum(sent.values()) == N + len(out["in_flight"])


def test_jobs_are_persisted_before_dispatch_and_the_ledger_records_every_attempt(
    make_rig, tmp_path: Path
) -> None:
    db = tmp_path / "ledger.db"

    async def main() -> None:
        clock = Clock(wall0=WALL0)
        sim = create_sim(SimConfig(limit=600, plan="enterprise", allocation=10**6), clock)
        await _session(make_rig, sim, db, specs=news_jobs(5))
        store = await Store.open(db, readonly=True)
        rows = await store.query(
            "SELECT job_id, status, credits_used, estimate, attempt "
            "FROM ledger WHERE job_id IS NOT NULL ORDER BY job_id"
        )
        jobs = await store.load_jobs()
        await store.close()
        assert [r[0] for r in rows] == [f"n{i:02d}" for i in range(5)]
        assert all(r[1] == 200 and r[3] == 20 and r[4] == 1 for r in rows)
        assert sum(r[2] for r in rows) == sim.records.total_charged()
        assert {j.state for j in jobs} == {S.SUCCEEDED}
        assert all(j.actual is not None for j in jobs)

    run_virtual(main())


# --- one writer, private files ---------------------------------------------------------------


def test_a_second_writer_on_the_same_database_gets_a_clear_store_error(tmp_path: Path) -> None:
    db = tmp_path / "busy.db"

    async def main() -> None:
        store = await Store.open(db)
        try:
            # Another process.
            code = (
                "import asyncio, sys\n"
                "from mavera_tui.store import Store, StoreError\n"
                "async def m():\n"
                "    try:\n"
                "        s = await Store.open(sys.argv[1])\n"
                "    except StoreError as e:\n"
                "        print(e); return 7\n"
                "    await s.close(); return 0\n"
                "sys.exit(asyncio.run(m()))\n"
            )
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                code,
                str(db),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=Path(__file__).resolve().parents[1],
            )
            out, err = await proc.communicate()
            assert proc.returncode == 7, err.decode()
            text = out.decode()
            assert "in use by another mavera-tui process" in text and str(db) in text
            # And within this process, a second writer is refused the same way.
            with pytest.raises(StoreError, match="in use"):
                await Store.open(db)
            # Readers may look meanwhile.
            ro = await Store.open(db, readonly=True)
            await ro.close()
        finally:
            await store.close()
        again = await Store.open(db)  # released on close
        await again.close()

    asyncio.run(main())


def test_the_database_and_its_wal_file_are_readable_by_the_owner_only(tmp_path: Path) -> None:
    db = tmp_path / "private.db"
    old = os.umask(0o022)
    try:

        async def main() -> None:
            store = await Store.open(db)
            await store.add_jobs(
                [
                    (
                        "j1",
                        1,
                        "POST",
                        "/responses",
                        "responses",
                        json.dumps({}),
                        0,
                        S.QUEUED,
                        5,
                        "",
                        WALL0,
                    )
                ]
            )
            wal = Path(str(db) + "-wal")
            assert wal.exists()
            for p in (db, wal):
                assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
            await store.close()

        asyncio.run(main())
    finally:
        os.umask(old)
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


def test_a_file_that_is_not_a_mavera_database_is_refused_clearly(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    before = _sqlite_threads()

    async def main() -> None:
        with pytest.raises(StoreError, match="not a mavera-tui database"):
            await Store.open(junk)
        with pytest.raises(StoreError, match="does not exist"):
            await Store.open(tmp_path / "missing-dir" / "x.db")

    asyncio.run(main())
    # The refused connection was closed: no aiosqlite thread is left to keep the process
    # alive after the one-line error (it used to hang `mavera-tui run --db junk.db`).
    deadline = time.monotonic() + 5
    while _sqlite_threads() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _sqlite_threads() <= before


def _sqlite_threads() -> int:
    return sum(
        1 for t in threading.enumerate() if "_connection_worker_thread" in t.name and t.is_alive()
    )


# --- a real kill -9 -------------------------------------------------------------------------

KILL_N = 20


def test_kill_9_mid_run_then_rerun_sends_no_job_twice(
    tmp_path: Path, loopback_sim, job_file, query_db
) -> None:
    """`mavera-tui run --db` in a subprocess against the simulator on loopback, killed with
    SIGKILL while requests are in flight; the rerun on the same db finishes the queued jobs
    and leaves the in-flight ones as outcome_unknown: the API side saw one request per job."""
    import signal
    import sqlite3

    srv = loopback_sim(limit=10, window_seconds=2.0, time_scale=0.15, seed=4, plan="professional")
    sim = srv.sim
    db = tmp_path / "kill.db"
    jobs_file = job_file(
        [
            {"id": j.id, "method": j.method, "path": j.path, "body": j.body}
            for j in news_jobs(KILL_N)
        ]
    )
    env = {**os.environ, "MAVERA_API_KEY": "mvra_test_kill"}
    env.pop("MAVERA_BASE_URL", None)
    argv = [
        sys.executable,
        "-m",
        "mavera_tui",
        "run",
        str(jobs_file),
        "--db",
        str(db),
        "--base-url",
        srv.url,
        "--window-seconds",
        "2",
        "--quiet",
    ]
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(argv, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def states() -> Counter[str]:
        if not db.exists():
            return Counter()
        try:
            return Counter(r[0] for r in query_db(db, "SELECT state FROM jobs", readonly=True))
        except sqlite3.Error:
            return Counter()

    deadline = time.monotonic() + 30
    while True:
        c = states()
        if c[S.SUCCEEDED] >= 1 and c[S.IN_FLIGHT] >= 1:
            break
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, c
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    at_kill = states()
    assert at_kill[S.IN_FLIGHT] >= 1
    time.sleep(2.5)  # the window empties
    rerun = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, timeout=60)
    assert "Traceback" not in rerun.stderr
    assert rerun.returncode == 1  # some outcomes are unknown
    final = states()
    assert sum(final.values()) == KILL_N
    assert final[S.OUTCOME_UNKNOWN] >= 1
    assert final[S.SUCCEEDED] + final[S.OUTCOME_UNKNOWN] == KILL_N
    srv.stop()
    executed: Counter[str] = Counter()
    for r in sim.records:
        if r.path.startswith("/news/stories/") and r.status != 429:
            executed["n" + r.path.split("/")[3][1:]] += 1
    assert executed == Counter({j.id: 1 for j in news_jobs(KILL_N)})
