"""Three processes on one key, sharing it through Redis, against the bound of one client.

Run: ``python bench/bench_shared.py [--jobs 600] [--modes shared,unshared,alone]
[--foreign 0.3] [--repeat 1] [--extra=--balance-read=auto] [--python PY --root DIR]``

``--extra`` adds arguments to every ``mavera-tui run`` (repeatable); ``--python`` and
``--root`` run the processes with another interpreter from another checkout (a before and
after with the same benchmark: ``--python /work/main/.venv/bin/python --root /work/main``).

The simulator runs in its own process on a loopback port (``bench/http_sim.py``: basic
tier, 120 per window, window 6 s, latencies x0.1, as ``bench_http.py``), a fresh one per
run, and a ``redis-server`` on a free loopback port (no persistence). One batch (the
realistic mix of ``bench_http.py``) is split three ways:

* ``shared``: three ``mavera-tui run --shared redis://...`` processes, distinct host ids;
* ``unshared``: the same three without ``--shared`` (what issue 10 measured: each sees the
  others only as foreign traffic);
* ``alone``: one ``mavera-tui run`` with the whole batch.

Judged by the server's own records: makespan (first arrival to last completion) over the
lower bound of one client running the whole batch (``bench/bound.py``), 429s, the most
requests counted in any window, credits the server charged against the sum of the
processes' summaries, and the admission cost per job the shared processes measured.
Not a test: it prints numbers (and writes them to ``bench/results/shared.json``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_http as H  # noqa: E402

from mavera_tui import catalog  # noqa: E402

PROCS = 3


def start_redis(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit(
            "bench_shared: redis-server is not installed (apt-get install redis-server)"
        )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = H.spawn(
        [
            exe,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return p, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    raise SystemExit("bench_shared: redis-server did not start")


class RedisTrace:
    """A bench-only look at the fleet's state while it runs (``--trace DIR``): every ~50 ms,
    Redis's ``TIME``, the window log (lease -> score), the foreign estimate and its TTL.
    Kept per lease: its first score (the admission) and last (after moves to its write)."""

    def __init__(self, url: str) -> None:
        import threading

        import redis

        self.r = redis.Redis.from_url(url, decode_responses=True, socket_timeout=1.0)
        self.first: dict[str, float] = {}
        self.last: dict[str, float] = {}
        self.seen_at: dict[str, float] = {}  # Redis ms when first seen
        self.foreign: list[tuple[float, int, int]] = []  # (Redis ms, estimate, pttl)
        self.counts: list[tuple[float, int]] = []  # (Redis ms, entries in the log)
        self.needs: list[tuple[float, dict[str, str]]] = []  # (Redis ms, process -> need)
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                sec, us = self.r.time()
                now = sec * 1000 + us / 1000
                keys = self.r.keys("mavera:*:win")
                for k in keys:
                    entries = self.r.zrange(k, 0, -1, withscores=True)
                    self.counts.append((now, len(entries)))
                    for lease, score in entries:
                        self.first.setdefault(lease, score)
                        self.seen_at.setdefault(lease, now)
                        self.last[lease] = score
                    pre = k[: -len("win")]
                    need = self.r.hgetall(pre + "need")
                    if need:
                        self.needs.append((now, {w: v.split("|")[0] for w, v in need.items()}))
                    fk = pre + "foreign"
                    f = self.r.get(fk)
                    if f is not None:
                        self.foreign.append((now, int(float(f)), int(self.r.pttl(fk))))
            except Exception:  # noqa: BLE001 - a bench probe: Redis gone at the end
                pass
            self._stop.wait(0.05)

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._t.join(2.0)
        return {
            "first": self.first,
            "last": self.last,
            "seen_at": self.seen_at,
            "foreign": self.foreign,
            "counts": self.counts,
            "needs": self.needs,
        }


def run_mode(
    mode: str,
    cell: H.Cell,
    jobs: list[dict[str, Any]],
    work: Path,
    rep: int,
    extra: tuple[str, ...] = (),
    python: str = H.PY,
    root: Path = H.ROOT,
    trace: Path | None = None,
) -> dict[str, Any]:
    """One mode against a fresh simulator (and a fresh Redis)."""
    log = work / f"{mode}-{rep}.log"
    server, port = H.start_server(cell, seed=rep, log=log)
    redis_proc, redis_url = start_redis(work) if mode == "shared" else (None, "")
    url = f"http://127.0.0.1:{port}/api/v1"
    n = 1 if mode == "alone" else PROCS
    tracer = RedisTrace(redis_url) if trace is not None and redis_url else None
    clients = []
    summaries = [work / f"{mode}-{rep}-{i}.summary.json" for i in range(n)]
    try:
        for i in range(n):
            part = jobs[i::n]
            f = work / f"{mode}-{rep}-{i}.jsonl"
            f.write_text("".join(json.dumps(j) + "\n" for j in part))
            cmd = [
                python,
                "-m",
                "mavera_tui",
                "run",
                str(f),
                "--base-url",
                url,
                "--window-seconds",
                f"{H.WINDOW:g}",
                "--summary",
                str(summaries[i]),
                "--quiet",
            ]
            if mode == "shared":
                cmd += ["--shared", redis_url, "--host-id", f"bench-{i}"]
            cmd += [x.replace("{i}", str(i)) for x in extra]
            with open(log, "ab") as lf:
                env = H._child_env()
                env["PYTHONDONTWRITEBYTECODE"] = "1"  # another checkout stays untouched
                clients.append(H.spawn(cmd, stdout=lf, stderr=lf, env=env, cwd=root))
        deadline = time.monotonic() + 10 * cell.expected_bound() + 60
        exits = [H.wait_rusage(c, deadline)[0] for c in clients]
        stats = H.fetch_stats(port)
        if trace is not None:
            trace.mkdir(parents=True, exist_ok=True)
            tag = f"{mode}-{rep}"
            (trace / f"{tag}.records.json").write_text(json.dumps(stats))
            if tracer is not None:
                (trace / f"{tag}.redis.json").write_text(json.dumps(tracer.stop()))
    finally:
        for p in [*clients, server] + ([redis_proc] if redis_proc else []):
            H.stop(p, grace=2.0)
    out = H.analyse(cell, len(jobs), stats, None)
    cols = stats["columns"]
    recs = [dict(zip(cols, row, strict=True)) for row in stats["records"]]
    out["mode"] = mode
    out["exits"] = exits
    if any(e not in (0, 1) for e in exits) or not all(x.exists() for x in summaries):
        out["log_tail"] = H._tail(log, 30)
        print("\n".join(out["log_tail"]), file=sys.stderr)
    out["ratio"] = out["makespan_server_s"] / out["bound_s"] if out.get("bound_s") else None
    out["charged"] = sum(r["credits"] or 0 for r in recs)
    sums = [json.loads(s.read_text()) for s in summaries if s.exists()]
    out["credits_summaries"] = sum(s["credits_used"] for s in sums)
    out["succeeded"] = sum(s["succeeded"] for s in sums)
    out["balance_reads"] = sum(1 for r in recs if r["endpoint"] == "billing_credits")
    out["balance_read"] = [s.get("balance_read") for s in sums]
    out["extra"] = list(extra)
    shared = [s["shared"] for s in sums if "shared" in s]
    if shared:
        calls = sum(x["admission_calls"] for x in shared)
        admitted = sum(x["admitted"] for x in shared)
        out["admission_calls"] = calls
        out["admission_ms_per_job"] = (
            sum(x["admission_ms_per_job"] * x["admitted"] for x in shared) / admitted
            if admitted
            else None
        )
    return out


def admission_cost(work: Path, n: int = 3000) -> dict[str, float]:
    """The scripts alone on an idle loopback Redis: ms per job admitted (one call per
    batch of 1, of 10), and per release (batches of 10), with the Python client's own cost."""
    import asyncio

    from mavera_tui.shared.state import AdmitRequest, Release, SharedState, key_prefix

    redis_proc, url = start_redis(work)

    async def measure() -> dict[str, float]:
        s = SharedState(url, key_prefix("bench-admission"))
        out: dict[str, float] = {}
        seq = 0
        for size in (1, 10):
            t0 = time.perf_counter()
            leases: list[str] = []
            for _ in range(n // size):
                batch = []
                for _ in range(size):
                    seq += 1
                    batch.append(AdmitRequest(f"b#{seq}", "mave", 10**6, 0, 12, 10))
                    leases.append(f"b#{seq}")
                await s.admit(
                    "b",
                    batch,
                    limit=10**6,
                    window=6,
                    margin=0.15,
                    ttl=30,
                    best=None,
                    known_epoch=None,
                )
            out[f"admit_ms_per_job_batch{size}"] = (time.perf_counter() - t0) / n * 1000
            t0 = time.perf_counter()
            for i in range(0, len(leases), 10):
                await s.release([Release(x, credits=10) for x in leases[i : i + 10]], window=6)
            out[f"release_ms_per_job_batch10_after{size}"] = (time.perf_counter() - t0) / n * 1000
        await s.close()
        return out

    try:
        return asyncio.run(measure())
    finally:
        H.stop(redis_proc, grace=2.0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=600)
    ap.add_argument(
        "--modes",
        default="shared,unshared,alone",
        help="comma-separated; empty: the admission cost only",
    )
    ap.add_argument(
        "--foreign",
        type=float,
        default=0.0,
        help="share of the window taken by another client (0.3: 30%%)",
    )
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument(
        "--kind",
        default="mix",
        choices=("mix", "burst"),
        help="the realistic mix (capped endpoints too), or only responses (the window alone)",
    )
    ap.add_argument("--extra", action="append", default=[], help="an argument for every run")
    ap.add_argument("--python", default=H.PY, help="the processes' interpreter")
    ap.add_argument("--root", default=str(H.ROOT), help="the checkout they run from")
    ap.add_argument(
        "--trace",
        default=None,
        help="a directory: keep each run's server records and a trace of the fleet's Redis",
    )
    ap.add_argument("--out", default=str(H.ROOT / "bench" / "results" / "shared.json"))
    args = ap.parse_args(argv)
    limit = catalog.TIERS["basic"]
    cell = H.Cell("basic-shared", limit, args.kind, args.jobs, foreign=args.foreign)
    jobs = cell.make_jobs(1)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-shared-") as tmp:
        cost = admission_cost(Path(tmp))
        print(
            "admission on loopback, scripts alone: "
            + ", ".join(f"{k} {v:.3f}" for k, v in cost.items()),
            flush=True,
        )
        results.append({"mode": "admission_cost", **cost})
        for rep in range(args.repeat):
            for mode in [m for m in args.modes.split(",") if m]:
                r = run_mode(
                    mode,
                    cell,
                    jobs,
                    Path(tmp),
                    rep,
                    tuple(x for e in args.extra for x in e.split("=", 1)),
                    args.python,
                    Path(args.root),
                    Path(args.trace) if args.trace else None,
                )
                r["root"] = args.root
                r["kind"] = args.kind
                results.append(r)
                print(
                    f"{mode:9s} rep {rep}: makespan/bound {r['ratio']:.3f} "
                    f"({r['makespan_server_s']:.1f} s / {r['bound_s']:.1f} s), "
                    f"429s {r['r429']} (window {r['r429_window']}, concurrency "
                    f"{r['r429_concurrency']}) of {r['requests']} requests, "
                    f"most in a window {r['max_in_window']}/{limit}, "
                    f"credits charged {r['charged']} vs summaries {r['credits_summaries']}, "
                    f"succeeded {r['succeeded']}/{len(jobs)}, balance reads "
                    f"{r['balance_reads']} ({', '.join(map(str, r['balance_read']))})"
                    + (
                        f", admission {r['admission_ms_per_job']:.3f} ms/job over "
                        f"{r['admission_calls']} calls"
                        if r.get("admission_ms_per_job") is not None
                        else ""
                    ),
                    flush=True,
                )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        H.stop_all()
