"""Scheduler benchmarks: makespan against the theoretical bound, 429s, foreign traffic, overhead.

Run: ``.venv/bin/python bench/bench_scheduler.py [--jobs N] [--tier T] [--seed S]``

Everything runs in-process on the simulator under fast-forwarded loop time, so the numbers
are the scheduler's decisions, not this machine's speed (except the overhead figure, which
is jobs per second of real CPU time through queue and gates with an instant transport).

Reported side by side, in one run:
- ours: this scheduler, alone on the key;
- bucket: the vendor docs' token bucket (capacity one minute) with semaphores for the caps
  and retry-on-429, the baseline the issue measures against;
- ours with 30% of the window eaten by another client on the same key.
The bound is max(window bound, each capped endpoint's sum of latencies / cap, the longest
job), with the latencies the simulator actually drew for this batch.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mavera_tui import catalog  # noqa: E402
from mavera_tui.client import ApiClient, Outcome, RateHeaders  # noqa: E402
from mavera_tui.clock import Clock, run_virtual  # noqa: E402
from mavera_tui.jobs import JobSpec  # noqa: E402
from mavera_tui.scheduler import Scheduler, SchedulerConfig  # noqa: E402
from mavera_tui.sim.app import create_sim, sim_transport  # noqa: E402
from mavera_tui.sim.config import Faults, SimConfig  # noqa: E402

KEY = "mvra_test_bench"


def realistic_mix(n: int, seed: int = 1, responses_share: float = 0.70) -> list[JobSpec]:
    """Mostly responses, some Mave, focus groups, video analyses and generations."""
    rng = random.Random(seed)
    out = []
    rest = (1.0 - responses_share) / 0.30
    for i in range(n):
        r = rng.random()
        r = r if r < responses_share else responses_share + (r - responses_share) / rest
        if r < responses_share:
            spec = ("POST", "/responses", {"input": f"q{i}"})
        elif r < 0.82:
            spec = (
                "POST",
                "/mave/chat",
                {"message": f"m{i}", "complexity": rng.choice(["simple", "moderate"])},
            )
        elif r < 0.89:
            spec = ("POST", "/generations", {"prompt": f"g{i}"})
        elif r < 0.95:
            spec = (
                "POST",
                "/focus-groups",
                {"sample_size": rng.choice([10, 25, 40]), "questions": ["a", "b", "c"]},
            )
        else:
            spec = ("POST", "/video-analyses", {"video_seconds": rng.choice([20, 90])})
        out.append(JobSpec(f"j{i}", spec[0], spec[1], spec[2]))
    return out


def bound(sim, jobs_n: int, limit: float, window: float) -> float:
    """Lower bound of the makespan from what the simulator recorded for this batch."""
    recs = [r for r in sim.records if r.status == 200 and r.endpoint != "billing_credits"]
    lat = [r.latency for r in recs]
    wb = ((jobs_n - 1) // int(limit)) * window + (min(lat) if lat else 0)
    cb = 0.0
    for ep in catalog.ENDPOINTS.values():
        if ep.cap:
            s = sum(r.latency for r in recs if r.endpoint == ep.key)
            cb = max(cb, s / ep.cap)
    return max(wb, cb, max(lat) if lat else 0)


async def run_ours(jobs, tier, seed, foreign_share=0.0):
    clock = Clock(wall0=1_800_000_000.0)
    limit = catalog.TIERS[tier]
    faults = Faults(foreign_rpm=int(limit * foreign_share)) if foreign_share else Faults()
    sim = create_sim(
        SimConfig(tier=tier, plan="enterprise", allocation=10_000_000, seed=seed, faults=faults),
        clock,
    )
    client = ApiClient("http://sim/api/v1", KEY, clock=clock, transport=sim_transport(sim))
    sched = Scheduler(client, clock=clock, config=SchedulerConfig(seed=seed))
    await sched.start()
    t0 = clock.now()
    await sched.submit_many(jobs)
    await sched.wait_idle()
    makespan = clock.now() - t0
    await sched.close()
    await client.aclose()
    ours = [r for r in sim.records if r.key != "foreign"]
    return {
        "makespan": makespan,
        "bound": bound(sim, len(jobs), limit * (1 - foreign_share), 60.0),
        "requests": len(ours),
        "429": sum(1 for r in ours if r.status == 429),
        "max_window": sim.records.max_window_count(),
        "succeeded": sched.summary()["succeeded"],
        "max_in_flight": {
            k: sim.records.max_in_flight(k) for k in ("mave", "focus_groups", "video_analyses")
        },
    }


async def run_bucket(jobs, tier, seed):
    """The docs' pattern: token bucket (capacity = a minute), semaphores, retry on 429."""
    clock = Clock(wall0=1_800_000_000.0)
    limit = catalog.TIERS[tier]
    sim = create_sim(
        SimConfig(tier=tier, plan="enterprise", allocation=10_000_000, seed=seed), clock
    )
    client = ApiClient("http://sim/api/v1", KEY, clock=clock, transport=sim_transport(sim))
    rate = limit / 60.0
    state = {"tokens": float(limit), "last": clock.now()}
    sems = {e.path: asyncio.Semaphore(e.cap) for e in catalog.ENDPOINTS.values() if e.cap}
    lock = asyncio.Lock()

    async def acquire():
        async with lock:
            while True:
                now = clock.now()
                state["tokens"] = min(limit, state["tokens"] + (now - state["last"]) * rate)
                state["last"] = now
                if state["tokens"] >= 1:
                    state["tokens"] -= 1
                    return
                await asyncio.sleep((1 - state["tokens"]) / rate)

    async def one(job):
        sem = sems.get(job.path)
        for attempt in range(8):
            if sem:
                async with sem:
                    await acquire()
                    out = await client.request(job.method, job.path, job.body)
            else:
                await acquire()
                out = await client.request(job.method, job.path, job.body)
            if out.status != 429:
                return
            ra = out.headers.retry_after or 30
            await asyncio.sleep(min(ra * 2**attempt + random.uniform(0, 5), 300))

    t0 = clock.now()
    await asyncio.gather(*(one(j) for j in jobs))
    makespan = clock.now() - t0
    await client.aclose()
    return {
        "makespan": makespan,
        "bound": bound(sim, len(jobs), limit, 60.0),
        "requests": len(sim.records),
        "429": sim.records.count(status=429),
    }


class InstantTransport:
    """Answers at once with a generous window: measures the scheduler alone."""

    def __init__(self) -> None:
        self.n = 0

    async def request(self, method, path, body=None, timeout=None):
        self.n += 1
        return Outcome(
            200,
            0.0,
            RateHeaders(1_000_000, 999_999, None, None),
            1,
            10,
            {"usage": {"credits_used": 1}},
        )


async def overhead(n: int) -> float:
    jobs = [JobSpec(f"o{i}", "POST", "/responses", {}) for i in range(n)]
    sched = Scheduler(InstantTransport(), config=SchedulerConfig(limit=1_000_000))
    await sched.start(fetch_balance=False)
    c0 = time.process_time()
    await sched.submit_many(jobs)
    await sched.wait_idle()
    cpu = time.process_time() - c0
    await sched.close()
    return n / cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=600)
    ap.add_argument("--tier", default="starter", choices=list(catalog.TIERS))
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--skip-bucket", action="store_true")
    ap.add_argument(
        "--responses-share",
        type=float,
        default=0.70,
        help="share of cheap, fast /responses jobs (0.97: a window-bound batch)",
    )
    a = ap.parse_args()
    jobs = realistic_mix(a.jobs, a.seed, a.responses_share)
    mix = {}
    for j in jobs:
        mix[j.path] = mix.get(j.path, 0) + 1
    print(f"batch: {a.jobs} jobs, tier {a.tier} ({catalog.TIERS[a.tier]}/min), mix {mix}")
    r = run_virtual(run_ours(jobs, a.tier, a.seed))
    print(
        f"ours alone:        makespan {r['makespan']:8.1f} s  bound {r['bound']:8.1f} s  "
        f"ratio {r['makespan'] / r['bound']:.3f}  429s {r['429']}  "
        f"max window {r['max_window']}  succeeded {r['succeeded']}/{a.jobs}  "
        f"max in flight {r['max_in_flight']}"
    )
    f = run_virtual(run_ours(jobs, a.tier, a.seed, foreign_share=0.3))
    print(
        f"ours, 30% foreign: makespan {f['makespan']:8.1f} s  bound {f['bound']:8.1f} s  "
        f"ratio {f['makespan'] / f['bound']:.3f}  429s {f['429']} of {f['requests']} "
        f"({100 * f['429'] / max(1, f['requests']):.2f}%)  succeeded {f['succeeded']}"
    )
    if not a.skip_bucket:
        b = run_virtual(run_bucket(jobs, a.tier, a.seed))
        print(
            f"docs token bucket: makespan {b['makespan']:8.1f} s  bound {b['bound']:8.1f} s  "
            f"ratio {b['makespan'] / b['bound']:.3f}  429s {b['429']} of {b['requests']}"
        )
    rate = asyncio.run(overhead(20_000))
    print(
        f"scheduler overhead: {rate:,.0f} jobs/s of CPU through queue and gates "
        "(instant transport, no store)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
