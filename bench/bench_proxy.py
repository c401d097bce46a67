"""50 naive clients through ``mavera-tui proxy`` and directly, against the simulator on a port.

Run: ``python bench/bench_proxy.py [--jobs 420] [--clients 50] [--limit 120]``

Each client is what most code does: take the next job, POST it, and on a 429 sleep the
Retry-After (or 1 s) and send it again; nothing else. The same clients run twice against a
fresh simulator in its own process (``bench/http_sim.py``: window 6 s, latencies x0.1, the
basic tier's 120 a window, the realistic mix of ``bench_http.py``): once straight at it, once
through the proxy in its own process. From the server's own records: 429s at the API, the
makespan over the lower bound (``bench/bound.py``), the most requests in any window.

Then the proxy's overhead per request: one client sends requests one after another to an
instant simulator (latency 0, no effective limit), directly and through the proxy; the
difference of the medians is what the proxy adds to a request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import aiohttp  # noqa: E402
from bench_http import WINDOW, analyse, fetch_stats, mix_jobs, spawn, start_server, stop  # noqa: E402

KEY = "mvra_bench_proxy"  # a key for a local simulator: not a secret
PY = sys.executable


class _Cell:
    """What ``bench_http.analyse`` needs to know about the run."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.limit_left = limit
        self.kind = "mix"
        self.foreign_rpm = 0.0


def start_proxy(target: str, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAVERA")}
    env["MAVERA_TUI_CONFIG"] = os.devnull
    cmd = [PY, "-m", "mavera_tui", "proxy", "--listen", "127.0.0.1:0", "--base-url", target]
    cmd += ["--window-seconds", f"{WINDOW:g}", "--max-wait", "600", "--max-queue", "100000"]
    p = spawn([*cmd, *extra], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
    assert p.stdout is not None
    line = p.stdout.readline().decode()
    if not line.startswith("proxy listening on "):
        stop(p)
        raise RuntimeError(f"the proxy did not start: {line!r}")
    return p, line.split()[3]


async def naive_clients(base: str, jobs: list[dict[str, Any]], clients: int) -> dict[str, Any]:
    """``clients`` workers over a shared list; returns the client-side numbers."""
    todo = iter(jobs)
    seen_429 = 0
    statuses: dict[int, int] = {}
    headers = {"Authorization": f"Bearer {KEY}"}
    conn = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=conn, headers=headers) as s:

        async def worker() -> None:
            nonlocal seen_429
            for job in todo:
                while True:
                    async with s.request(job["method"], base + job["path"], json=job["body"]) as r:
                        await r.read()
                        if r.status != 429:
                            statuses[r.status] = statuses.get(r.status, 0) + 1
                            break
                        seen_429 += 1
                        try:
                            wait = float(r.headers.get("Retry-After", "1"))
                        except ValueError:
                            wait = 1.0
                    await asyncio.sleep(wait)

        t0 = time.time()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return {"t_start": t0, "t_end": time.time(), "seen_429": seen_429, "statuses": statuses}


def run_mode(mode: str, jobs: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    log = Path(tempfile.gettempdir()) / f"bench_proxy.{mode}.log"  # the server's stderr
    server, port = start_server(_Cell(args.limit), args.seed, log)  # type: ignore[arg-type]
    direct = f"http://127.0.0.1:{port}/api/v1"
    proxy = None
    try:
        base = direct
        if mode == "proxy":
            proxy, base = start_proxy(direct)
        result = asyncio.run(naive_clients(base, jobs, args.clients))
        result["cpu_s"] = 0.0
        stats = fetch_stats(port)
    finally:
        if proxy is not None:
            stop(proxy)
        stop(server)
    out = analyse(_Cell(args.limit), len(jobs), stats, result)  # type: ignore[arg-type]
    out.pop("client", None)
    out["client_saw_429"] = result["seen_429"]
    out["client_statuses"] = result["statuses"]
    return out


async def _sequential(base: str, n: int) -> list[float]:
    lat: list[float] = []
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as s:
        for i in range(n + 20):
            t = time.perf_counter()
            async with s.post(base + "/responses", json={"input": f"o{i}"}) as r:
                await r.read()
                assert r.status == 200, r.status
            if i >= 20:  # the first ones warm connections and the engine up
                lat.append(time.perf_counter() - t)
    return lat


def overhead(n: int) -> dict[str, float]:
    """Median latency of a lone request directly and through the proxy (instant server)."""
    # bench/http_sim.py, not `mavera-tui sim`: served from a socket bound in advance, the
    # latter answers a lone request in ~44 ms on this machine whatever the client (the
    # former in ~0.5 ms), which would hide what the proxy adds.
    sim = spawn(
        [PY, str(ROOT / "bench" / "http_sim.py"), "--limit", "1000000", "--time-scale", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert sim.stdout is not None
    line = sim.stdout.readline().decode()
    assert line.startswith("PORT "), line
    direct = f"http://127.0.0.1:{int(line.split()[1])}/api/v1"
    proxy, via = start_proxy(direct)
    try:
        d = asyncio.run(_sequential(direct, n))
        p = asyncio.run(_sequential(via, n))
    finally:
        stop(proxy)
        stop(sim)
    md, mp = statistics.median(d), statistics.median(p)
    return {
        "direct_median_ms": md * 1e3,
        "proxy_median_ms": mp * 1e3,
        "overhead_ms": (mp - md) * 1e3,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=420, help="jobs per run (default 420: 3.5 windows)")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--limit", type=int, default=120, help="requests per window (basic: 120)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--overhead-requests", type=int, default=300)
    ap.add_argument("--modes", default="direct,proxy", help="direct, proxy or both")
    ap.add_argument(
        "--workload",
        choices=("mix", "responses"),
        default="mix",
        help="mix: bench_http's realistic mix (capped jobs of up to 15 s among short ones); "
        "responses: short /responses only (the window alone sets the bound)",
    )
    ap.add_argument("--out", default=None, help="default bench/results/proxy-WORKLOAD.json")
    args = ap.parse_args(argv)
    if args.out is None:
        args.out = str(ROOT / "bench" / "results" / f"proxy-{args.workload}.json")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    if args.workload == "mix":
        jobs = mix_jobs(args.jobs, args.limit, args.seed)
    else:
        jobs = [
            {"id": f"r{i}", "method": "POST", "path": "/responses", "body": {"input": f"q{i}"}}
            for i in range(args.jobs)
        ]
    results: dict[str, Any] = {
        "jobs": args.jobs,
        "clients": args.clients,
        "limit": args.limit,
        "workload": args.workload,
    }
    for mode in [m for m in args.modes.split(",") if m]:
        r = run_mode(mode, jobs, args)
        results[mode] = r
        print(
            f"{mode:>7}: {r['ok']}/{r['jobs']} ok, 429s at the API {r['r429']} "
            f"(window {r['r429_window']}, concurrency {r['r429_concurrency']}), requests "
            f"{r['requests']}, most in a window {r['max_in_window']}/{args.limit}, makespan "
            f"{r.get('makespan_s', 0):.1f} s, bound {r.get('bound_s', 0):.1f} s, "
            f"ratio {r.get('ratio', 0):.3f}",
            flush=True,
        )
    if args.overhead_requests > 0:
        o = overhead(args.overhead_requests)
        results["overhead"] = o
        print(
            f"overhead: a lone request {o['direct_median_ms']:.2f} ms direct, "
            f"{o['proxy_median_ms']:.2f} ms through the proxy: +{o['overhead_ms']:.2f} ms "
            "at the median",
            flush=True,
        )
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
