"""The benchmark's server: the project's simulator on 127.0.0.1, plus one bench-only route.

Run: ``python bench/http_sim.py --limit 120 --window-seconds 6 --time-scale 0.1``

It serves ``create_sim(SimConfig(...))`` with uvicorn exactly as ``mavera-tui sim`` does
(see ``mavera_tui/sim/server.py``) and adds ``GET /__bench/stats``, which answers the
server's own records of every request so far (arrival time, status, code, endpoint,
latency, window count, completion), so the benchmark judges a client by what the server
saw, not by what the client says. The stats route is answered before the simulator sees
the request: it is not counted, recorded or rate-limited. One process serves one run
(the benchmark starts a fresh one per run, so nothing leaks between clients).

Prints ``PORT <n>`` on stdout once listening; stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mavera_tui.sim import Faults, SimConfig, Simulator, create_sim  # noqa: E402
from mavera_tui.sim.server import bound_port, build_server  # noqa: E402

STATS_PATH = "/__bench/stats"
#: Columns of each row of ``records`` in the stats answer (lists keep 20,000 rows small).
COLUMNS = (
    "t",
    "wall",
    "status",
    "code",
    "endpoint",
    "latency",
    "window_count",
    "counted",
    "done",
    "in_flight",
    "key",
    "credits",
)


def stats(sim: Simulator) -> dict[str, Any]:
    """The server's records and configuration as plain JSON."""
    cfg = sim.config
    rows = [
        [
            r.t,
            r.wall,
            r.status,
            r.code,
            r.endpoint,
            r.latency,
            r.window_count,
            r.counted,
            r.done,
            r.in_flight,
            r.key,
            r.credits,
        ]
        for r in sim.records
    ]
    return {
        "limit": cfg.effective_limit,
        "window_seconds": cfg.window_seconds,
        "time_scale": cfg.time_scale,
        "foreign_rpm": cfg.faults.foreign_rpm,
        "seed": cfg.seed,
        "columns": list(COLUMNS),
        "records": rows,
    }


class BenchApp:
    """ASGI wrapper: ``GET /__bench/stats`` here, everything else to the simulator."""

    def __init__(self, sim: Simulator):
        self.sim = sim

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == STATS_PATH:
            data = json.dumps(stats(self.sim)).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(data)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": data})
            return
        await self.sim(scope, receive, send)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0, help="port (default 0: any free port)")
    ap.add_argument("--limit", type=int, required=True, help="requests per window")
    ap.add_argument("--window-seconds", type=float, default=6.0)
    ap.add_argument("--time-scale", type=float, default=0.1)
    ap.add_argument(
        "--foreign-rpm",
        type=float,
        default=0.0,
        help="phantom foreign arrivals per 60 s (the simulator's unit)",
    )
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    try:
        sim = create_sim(
            SimConfig(
                tier="enterprise",
                limit=a.limit,
                plan="enterprise",
                allocation=1_000_000_000,
                window_seconds=a.window_seconds,
                time_scale=a.time_scale,
                seed=a.seed,
                faults=Faults(foreign_rpm=a.foreign_rpm),
            )
        )
    except ValueError as exc:
        print(f"http_sim: {exc}", file=sys.stderr)
        return 2
    # Loopback only: the benchmark never listens on another address.
    server = build_server(sim, "127.0.0.1", a.port)
    server.config.app = BenchApp(sim)

    async def serve() -> None:
        task = asyncio.ensure_future(server.serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.02)
        if server.started:
            print(f"PORT {bound_port(server)}", flush=True)
        await task

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass
    return 0 if server.started else 1


if __name__ == "__main__":
    raise SystemExit(main())
