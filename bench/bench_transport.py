"""Client CPU per request by transport and requests in flight, over real loopback HTTP.

Starts the simulator in its own process (no effective limit, latencies x0.1) and, in this
process, sends POST /responses through each candidate transport with 1, 50, 200 and 600
requests in flight. Prints the client's CPU per request (process time / requests) and the
throughput, side by side, repeated; the worst and the median are quoted.

    .venv/bin/python bench/bench_transport.py [--requests 2000] [--repeat 3]

The candidates: the engine's ApiClient on aiohttp (the default for real sockets) and on
httpx's own httpcore pool (``--http-backend httpx``), with raw aiohttp as a reference.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from mavera_tui.client import ApiClient  # noqa: E402


def start_server(time_scale: float) -> tuple[subprocess.Popen[str], str]:
    """The simulator on a free loopback port, in its own process."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mavera_tui",
            "sim",
            "--port",
            "0",
            "--limit",
            "100000000",
            "--time-scale",
            str(time_scale),
            "--plan",
            "enterprise",
            "--allocation",
            "1000000000",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise SystemExit(f"simulator did not start: {line!r}")
    url = line.split("listening on ")[1].split()[0]
    return proc, url


async def raw_aiohttp_run(base: str, inflight: int, n: int) -> tuple[float, float, int]:
    """Reference: aiohttp alone, without httpx's request and response objects."""
    import aiohttp

    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=max(inflight, 1)),
        headers={"Authorization": "Bearer bench-key"},
    )
    todo = iter(range(n))
    errors = 0

    async def worker() -> None:
        nonlocal errors
        for _ in todo:
            async with session.post(base + "/responses", json={"input": "hello"}) as r:
                await r.json()
                errors += r.status != 200

    await asyncio.gather(
        *(session.post(base + "/responses", json={"input": "w"}) for _ in range(inflight))
    )
    c0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(inflight)))
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    await session.close()
    return cpu / n * 1000.0, n / wall, errors


async def one_run(kind: str, base: str, inflight: int, n: int) -> tuple[float, float, int]:
    if kind == "raw-aiohttp":
        return await raw_aiohttp_run(base, inflight, n)
    client = ApiClient(base, "bench-key", max_connections=max(inflight, 1), backend=kind)
    todo = iter(range(n))
    errors = 0

    async def worker() -> None:
        nonlocal errors
        for _ in todo:
            out = await client.request("POST", "/responses", {"input": "hello"})
            errors += not out.ok

    # Warm the connections first: the measurement is the steady state.
    await asyncio.gather(
        *(client.request("POST", "/responses", {"input": "w"}) for _ in range(inflight))
    )
    c0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(inflight)))
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    await client.aclose()
    return cpu / n * 1000.0, n / wall, errors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--inflight", default="1,50,200,600")
    ap.add_argument("--time-scale", type=float, default=0.1)
    ap.add_argument("--kinds", default="aiohttp,httpx,raw-aiohttp")
    args = ap.parse_args()
    proc, base = start_server(args.time_scale)
    try:
        kinds = args.kinds.split(",")
        print(
            f"server {base}; {args.requests} requests a run, {args.repeat} runs, "
            "interleaved; CPU per request in ms (worst / median), requests/s (median)"
        )
        for c in (int(x) for x in args.inflight.split(",")):
            n = args.requests if c > 1 else max(200, args.requests // 10)
            res: dict[str, list[tuple[float, float, int]]] = {k: [] for k in kinds}
            for _ in range(args.repeat):
                for k in kinds:
                    res[k].append(asyncio.run(one_run(k, base, c, n)))
            cells = []
            for k in kinds:
                cpu = [r[0] for r in res[k]]
                rps = [r[1] for r in res[k]]
                errs = sum(r[2] for r in res[k])
                cells.append(
                    f"{k:8s} {max(cpu):6.3f} / {statistics.median(cpu):6.3f} ms "
                    f"{statistics.median(rps):7.0f}/s" + (f" ({errs} errors)" if errs else "")
                )
            print(f"in flight {c:4d}: " + " | ".join(cells), flush=True)
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
