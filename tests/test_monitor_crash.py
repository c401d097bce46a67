"""kill -9 of the live monitor (in a pseudo-terminal, as over SSH) loses nothing."""

import os
import pty
import select
import signal
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from mavera_tui.clock import run_virtual
from mavera_tui.config import Config, EngineSettings, SimSettings
from mavera_tui.engine import Engine, Settings
from mavera_tui.states import JobState

ROOT = Path(__file__).resolve().parents[1]


def _read_for(fd: int, seconds: float) -> bytes:
    out = b""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            try:
                out += os.read(fd, 65536)
            except OSError:
                break
    return out


def _states(job_states, db: Path) -> Counter[str]:
    """Jobs per state (job_states checks the database's integrity first)."""
    return Counter(job_states(db).values())


@pytest.mark.skipif(sys.platform != "linux", reason="needs a Linux pty")
def test_kill_9_of_the_monitor_leaves_a_sound_database_that_resumes(
    tmp_path, monkeypatch, job_file, job_states
):
    db = tmp_path / "monitor.db"
    # Five videos for three slots (8-30 s each at time scale 0.2): when the monitor is
    # killed, some are in flight and some still queued.
    jobs = job_file(
        [
            {
                "id": f"v{i}",
                "method": "POST",
                "path": "/video-analyses",
                "body": {"video_seconds": 20},
            }
            for i in range(5)
        ]
        + [{"id": f"r{i}", "method": "POST", "path": "/responses", "body": {}} for i in range(10)]
    )
    env = {
        **os.environ,
        "TERM": os.environ.get("TERM", "xterm-256color"),
        "COLUMNS": "100",
        "LINES": "30",
    }
    env.pop("MAVERA_API_KEY", None)
    env.pop("MAVERA_BASE_URL", None)
    pid, fd = pty.fork()
    if pid == 0:  # the child: the monitor on that batch, in the pty
        os.chdir(ROOT)
        os.execve(
            sys.executable,
            [
                sys.executable,
                "-m",
                "mavera_tui",
                "--db",
                str(db),
                "--jobs",
                str(jobs),
                "--window-seconds",
                "5",
                "--sim-time-scale",
                "0.2",
            ],
            env,
        )
    try:
        screen = _read_for(fd, 5.0)
        assert b"Rate-limit" in screen or b"SIMULATOR" in screen, screen[-500:]
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(fd)

    before = _states(job_states, db)
    assert sum(before.values()) == 15, before  # every job persisted before it was sent
    assert before.get(JobState.IN_FLIGHT, 0) >= 1 and before.get(JobState.QUEUED, 0) >= 1, before

    # Restart on the same database (headless here): nothing is left 'in flight', jobs that
    # were in flight become 'outcome unknown' (not re-sent), queued ones run.
    monkeypatch.delenv("MAVERA_API_KEY", raising=False)
    monkeypatch.delenv("MAVERA_BASE_URL", raising=False)

    async def resume():
        engine = Engine(
            Settings(
                Config(engine=EngineSettings(window_seconds=5), sim=SimSettings(time_scale=0.0)),
                db=str(db),
            )
        )
        sched = await engine.start()
        await sched.wait_idle()
        await engine.stop()

    run_virtual(resume())
    after = _states(job_states, db)
    assert after.get(JobState.IN_FLIGHT, 0) == 0
    assert after.get(JobState.OUTCOME_UNKNOWN, 0) == before.get(JobState.IN_FLIGHT, 0)
    assert sum(after.values()) == sum(before.values())  # no job lost
    queued_before = sum(
        v
        for k, v in before.items()
        if k in (JobState.QUEUED, JobState.WAITING_WINDOW, JobState.WAITING_SLOT, JobState.BACKOFF)
    )
    assert after.get(JobState.SUCCEEDED, 0) >= before.get(JobState.SUCCEEDED, 0) + queued_before
