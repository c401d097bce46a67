"""The HTTP benchmark's workloads (bench/bench_http.py): valid job files, the foreign rate."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path

import httpx

from mavera_tui import catalog
from mavera_tui.clock import Clock, run_virtual
from mavera_tui.jobs import parse_lines
from mavera_tui.sim import Faults, SimConfig, create_sim, sim_transport

_PATH = Path(__file__).resolve().parents[1] / "bench" / "bench_http.py"
_spec = importlib.util.spec_from_file_location("bench_http", _PATH)
assert _spec is not None and _spec.loader is not None
bench = importlib.util.module_from_spec(_spec)
sys.modules["bench_http"] = bench  # dataclasses look their module up while building
_spec.loader.exec_module(bench)


def test_every_cell_writes_a_job_file_that_run_accepts() -> None:
    import json

    for cell in bench._cells().values():
        jobs = cell.make_jobs(seed=1)
        specs, errors = parse_lines([json.dumps(j) for j in jobs])
        assert errors == [], (cell.name, errors[:3])
        assert len(specs) == cell.jobs
        if cell.kind == "mix":
            keys = {s.endpoint.key for s in specs}
            # the caps matter: every capped endpoint is in the mix
            assert {"mave", "focus_groups", "video_analyses"} <= keys, cell.name
            share = sum(1 for s in specs if s.endpoint.key == "responses") / len(specs)
            assert share >= 0.6, (cell.name, share)
            # no identical GETs (run would answer them from its cache, the peers would not)
            assert all(s.method == "POST" for s in specs)


def test_foreign_traffic_takes_its_share_of_an_idle_window() -> None:
    """The simulator's foreign rate is per 60 s whatever the window: the cell converts it
    so that 30% of the limit arrives in each 6 s window (checked on the simulator itself)."""
    cell = bench._cells()["basic-foreign"]
    assert cell.limit_left == cell.limit - 36

    async def go() -> int:
        clock = Clock(wall0=1_800_000_000.0)
        sim = create_sim(
            SimConfig(
                tier="basic",
                window_seconds=bench.WINDOW,
                faults=Faults(foreign_rpm=cell.foreign_rpm),
            ),
            clock,
        )
        async with httpx.AsyncClient(
            transport=sim_transport(sim),
            base_url="http://sim/api/v1",
            headers={"Authorization": "Bearer k"},
        ) as c:
            r = await c.get("/personas")
            assert r.status_code == 200
            await asyncio.sleep(3 * bench.WINDOW)
            return sim.window_count("k")

    # ours left the window long ago: what is counted is foreign, one window's worth
    assert abs(run_virtual(go()) - 0.3 * catalog.TIERS["basic"]) <= 1
