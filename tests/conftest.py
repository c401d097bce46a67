"""The tests' shared rig, as fixtures: build it here once, ask for it by name in a test.

* ``make_rig``: clock + simulator + client + scheduler (and optionally a store and a tap), in
  process, for fast-forwarded time under ``run_virtual``;
* ``loopback_sim`` / ``loopback_sim_module``: the simulator served by uvicorn on 127.0.0.1
  from a thread, for tests that run ``mavera-tui`` in its own process;
* ``RequestTap`` (the ``tap`` of both): an ASGI wrapper that remembers which job each
  request carried, its body and its Retry-After, so the API side's records can be matched
  to the client's jobs;
* ``job_file``: writes a JSONL job file; ``query_db`` and ``job_states``: read a database
  with plain sqlite3, the way an operator would; ``unpacked(db)``: a copy of a recording
  with its packed ledger and jobs back in rows (what plain SQL over the views needs);
  ``snapshot_times(db)`` / ``snapshot_frames(db)``: its snapshots, rows or blocks;
* ``redis_server``: a real ``redis-server`` on a free loopback port, no persistence, that a
  test can restart on the same port (the shared-key tests).
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from mavera_tui.client import ApiClient
from mavera_tui.clock import Clock
from mavera_tui.scheduler import Scheduler, SchedulerConfig
from mavera_tui.sim import SimConfig, Simulator, create_sim, sim_transport
from mavera_tui.sim.server import bound_port, build_server
from mavera_tui.store import Store

ROOT = Path(__file__).resolve().parents[1]
WALL0 = 1_800_000_000.0
SIM_URL = "http://sim/api/v1"
#: An account that never runs out unless a test says so; a test's own settings go on top.
RICH_ACCOUNT: dict[str, Any] = {"plan": "enterprise", "allocation": 10_000_000, "seed": 1}


# --- the API side's view of each request -----------------------------------------------------


class RequestTap:
    """ASGI wrapper around the simulator: by the simulator's record index, each request's body,
    its job id (``ref`` in the JSON body or the query string) and any Retry-After answered."""

    def __init__(self, sim: Simulator):
        self.sim = sim
        self.bodies: dict[int, bytes] = {}
        self.refs: dict[int, str] = {}
        self.retry_after: dict[int, str] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.sim(scope, receive, send)
        chunks = []
        while True:
            msg = await receive()
            chunks.append(msg.get("body", b""))
            if not msg.get("more_body"):
                break
        raw = b"".join(chunks)
        index = len(self.sim.records)  # the index the simulator gives this request
        self.bodies[index] = raw
        ref = _body_ref(raw)
        if ref is None:
            ref = parse_qs(scope.get("query_string", b"").decode()).get("ref", [None])[0]
        if ref is not None:
            self.refs[index] = ref
        given = False

        async def replay() -> dict[str, Any] | None:
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": raw, "more_body": False}
            await asyncio.Event().wait()  # no disconnect: the client waits for its answer
            return None

        async def tap_send(msg: dict[str, Any]) -> None:
            if msg["type"] == "http.response.start":
                for k, v in msg.get("headers", []):
                    if k.lower() == b"retry-after":
                        self.retry_after[index] = v.decode()
            await send(msg)

        await self.sim(scope, replay, tap_send)

    def job_of(self, index: int) -> str | None:
        """The job id the JSON body of request ``index`` carried, if any."""
        return _body_ref(self.bodies.get(index, b""))


def _body_ref(raw: bytes) -> str | None:
    if not raw:
        return None
    try:
        ref = json.loads(raw).get("ref")
    except (ValueError, AttributeError):
        return None
    return ref if isinstance(ref, str) else None


# --- in process: clock + simulator + client + scheduler --------------------------------------


@dataclass
class Rig:
    """One scheduler talking to one simulator in process, on one clock."""

    clock: Clock
    sim: Simulator
    client: ApiClient
    sched: Scheduler
    store: Store | None = None
    tap: RequestTap | None = None

    async def close(self) -> None:
        """Graceful stop (waits for in-flight requests), then the client and the store."""
        await self.sched.close()
        await self.client.aclose()
        if self.store is not None:
            await self.store.close()

    def now(self) -> float:
        return self.clock.now()


async def build_rig(
    sim: Simulator | SimConfig | dict[str, Any] | None = None,
    *,
    clock: Clock | None = None,
    key: str = "mvra_test",
    tap: bool = False,
    transport: httpx.AsyncBaseTransport | None = None,
    db: Path | None = None,
    timeout: float | None = None,
    start: bool = True,
    **config: Any,
) -> Rig:
    """A started scheduler on a simulator; call inside ``run_virtual``.

    ``sim``: a Simulator to share (e.g. across a restart), a SimConfig used as is, or
    SimConfig fields laid over ``RICH_ACCOUNT``. ``tap`` puts a RequestTap in front of it;
    ``transport`` replaces the in-process one. ``db`` opens a Store there. ``config`` are
    SchedulerConfig fields (seed 1 unless given).
    """
    if isinstance(sim, Simulator):
        simulator = sim
        clock = clock or sim.clock
    else:
        clock = clock or Clock(wall0=WALL0)
        cfg = sim if isinstance(sim, SimConfig) else SimConfig(**{**RICH_ACCOUNT, **(sim or {})})
        simulator = create_sim(cfg, clock)
    request_tap = RequestTap(simulator) if tap else None
    if transport is None:
        transport = (
            httpx.ASGITransport(app=request_tap)
            if request_tap is not None
            else sim_transport(simulator)
        )
    client_kw: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
    client = ApiClient(SIM_URL, key, clock=clock, transport=transport, **client_kw)
    store = await Store.open(db) if db is not None else None
    config.setdefault("seed", 1)
    sched = Scheduler(client, clock=clock, store=store, config=SchedulerConfig(**config))
    if start:
        await sched.start()
    return Rig(clock, simulator, client, sched, store, request_tap)


@pytest.fixture
def make_rig() -> Callable[..., Any]:
    """``await make_rig(sim, **scheduler_config)``: see ``build_rig``."""
    return build_rig


# --- over loopback: the simulator served by uvicorn from a thread ----------------------------


class LoopbackSim:
    """The simulator on 127.0.0.1:<free port>, served by uvicorn from a thread of this process,
    so its records survive the client processes a test starts and kills."""

    def __init__(self, config: SimConfig, *, tap: bool = False):
        self.sim = create_sim(config)
        self.tap = RequestTap(self.sim) if tap else None
        self.server = build_server(self.tap or self.sim, "127.0.0.1", 0)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            assert self.thread.is_alive(), "uvicorn exited"
            time.sleep(0.01)
        self.url = f"http://127.0.0.1:{bound_port(self.server)}/api/v1"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        assert not self.thread.is_alive(), "uvicorn did not stop"

    def requests_for(self, job_id: str) -> list[Any]:
        """The API side's records of the requests that carried ``job_id`` (needs tap=True)."""
        assert self.tap is not None, "start the LoopbackSim with tap=True"
        refs = self.tap.refs
        return [r for r in list(self.sim.records) if refs.get(r.index) == job_id]


def _loopback_factory() -> Iterator[Callable[..., LoopbackSim]]:
    started: list[LoopbackSim] = []

    def start(
        config: SimConfig | None = None,
        *,
        tap: bool = False,
        **fields: Any,
    ) -> LoopbackSim:
        srv = LoopbackSim(config or SimConfig(**fields), tap=tap)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


@pytest.fixture
def loopback_sim() -> Iterator[Callable[..., LoopbackSim]]:
    """``loopback_sim(SimConfig(...) or **fields, tap=False)``: stopped after the test."""
    yield from _loopback_factory()


@pytest.fixture(scope="module")
def loopback_sim_module() -> Iterator[Callable[..., LoopbackSim]]:
    """As ``loopback_sim``, stopped after the module: one server for several tests."""
    yield from _loopback_factory()


# --- files: job files and databases ----------------------------------------------------------


def write_job_file(path: Path, lines: Sequence[dict[str, Any] | str]) -> Path:
    """A JSONL job file: dicts are written as JSON, strings as they are (bad lines too)."""
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


@pytest.fixture
def job_file(tmp_path: Path) -> Callable[..., Path]:
    """``job_file(lines, name="jobs.jsonl")``: a job file in the test's tmp_path."""

    def write(lines: Sequence[dict[str, Any] | str], name: str = "jobs.jsonl") -> Path:
        return write_job_file(tmp_path / name, lines)

    return write


def read_db(
    db: Path | str, sql: str, params: Sequence[Any] = (), *, readonly: bool = False
) -> list[Any]:
    """Rows of ``sql`` on the SQLite file ``db`` (read-only: safe beside a live writer)."""
    con = (
        sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        if readonly
        else sqlite3.connect(db)
    )
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def read_job_states(db: Path | str) -> dict[str, str]:
    """Each job's state in a mavera-tui database, after checking the file is sound."""
    con = sqlite3.connect(db)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return dict(con.execute("SELECT id, state FROM jobs"))
    finally:
        con.close()


@pytest.fixture
def query_db() -> Callable[..., list[Any]]:
    """``query_db(db, sql, params=(), readonly=False)``: see ``read_db``."""
    return read_db


@pytest.fixture
def job_states() -> Callable[[Path | str], dict[str, str]]:
    """``job_states(db)``: {job id: state}, after PRAGMA integrity_check."""
    return read_job_states


# --- Redis: a real redis-server on a free loopback port --------------------------------------


class RedisServer:
    """``redis-server`` on 127.0.0.1:<free port>, no persistence, its files in a temporary
    folder; ``stop`` and ``start`` again on the same port stand in for a Redis restart
    (which loses every key: nothing is saved, unless ``persist``)."""

    def __init__(self, directory: Path, *, persist: bool = False):
        import shutil
        import socket

        # ``persist``: an append-only file synced before each answer, so a restart (even
        # after SIGKILL) keeps every write Redis acknowledged.
        self.persist = persist
        exe = shutil.which("redis-server")
        if exe is None:
            if os.environ.get("CI"):
                pytest.fail("redis-server is not installed (.ci/run installs it)")
            pytest.skip("redis-server is not installed (apt-get install redis-server)")
        self.exe = exe
        self.dir = directory
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        """Start (or restart) the server on the same port; returns once it answers."""
        import socket

        self.proc = subprocess.Popen(
            [
                self.exe,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes" if self.persist else "no",
                "--appendfsync",
                "always",
                "--dir",
                str(self.dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as c:
                    c.sendall(b"PING\r\n")
                    if c.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            assert self.proc.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        """Kill the server (SIGKILL: nothing is saved anyway)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def restart(self, down_for: float = 0.0) -> None:
        """Stop, stay down ``down_for`` seconds, start again on the same port (empty,
        unless ``persist``)."""
        self.stop()
        time.sleep(down_for)
        self.start()


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A fresh ``redis-server`` for the test (``.url``, ``.port``, ``restart()``)."""
    srv = RedisServer(tmp_path_factory.mktemp("redis"))
    yield srv
    srv.stop()


def unpacked(db: Path | str) -> Path:
    """A copy of the recording ``db`` beside it with its ledger and job blocks unpacked
    into rows (``Store.unpack``), so plain SQL over the ``ledger`` and ``jobs`` views sees
    the whole history: an independent reading of what ``report`` reads packed."""
    from mavera_tui.clock import run_virtual
    from mavera_tui.store import Store

    src = Path(db)
    dest = src.with_name(src.stem + ".plain" + src.suffix)
    for p in (dest, Path(f"{dest}-wal"), Path(f"{dest}-shm")):
        p.unlink(missing_ok=True)
    with sqlite3.connect(f"file:{src}?mode=ro", uri=True) as a, sqlite3.connect(dest) as b:
        a.backup(b)

    async def go() -> None:
        store = await Store.open(dest)
        try:
            await store.unpack()
        finally:
            await store.close()

    run_virtual(go())
    return dest


def snapshot_times(db: Path | str) -> list[float]:
    """The time of every recorded snapshot (rows of schema 3, blocks of schema 4)."""
    from mavera_tui.clock import run_virtual
    from mavera_tui.recording.reader import Recording

    async def go() -> list[float]:
        async with await Recording.open(str(db)) as rec:
            return [t for t, _ in await rec.snapshot_rows()]

    return run_virtual(go())


def snapshot_frames(db: Path | str) -> list[tuple[float, Any]]:
    """Every recorded snapshot as ``(t, frame)`` (``Recording.snapshot_rows``)."""
    from mavera_tui.clock import run_virtual
    from mavera_tui.recording.reader import Recording

    async def go() -> list[tuple[float, Any]]:
        async with await Recording.open(str(db)) as rec:
            return await rec.snapshot_rows()

    return run_virtual(go())


async def fleet_report(db: Path | str) -> dict[str, Any]:
    """The report's fleet totals (``recording.fleet.fleet_totals``) of the store ``db``."""
    from mavera_tui.recording.fleet import fleet_totals
    from mavera_tui.recording.reader import Recording

    rec = await Recording.open(str(db))
    try:
        out = await fleet_totals(rec)
    finally:
        await rec.close()
    assert out is not None, f"{db}: no archived fleet ledger"
    return out
