"""The demo workload: a steady mix of jobs across endpoints, with occasional bursts.

Runs against the embedded simulator when no key is set, so every pane of the monitor moves
and ``record`` has something to record. Deterministic for a seed.
"""

from __future__ import annotations

import asyncio
import itertools
import random

from . import catalog
from .jobs import JobSpec
from .scheduler import Scheduler

# (weight, method, path, body factory)
_MIX = (
    (55, "POST", "/responses", lambda r, i: {"input": f"demo question {i}"}),
    (15, "POST", "/mave/chat", lambda r, i: {
        "message": f"demo research {i}", "complexity": r.choice(list(catalog.MAVE_COMPLEXITY))}),
    (10, "POST", "/generations", lambda r, i: {"prompt": f"demo copy {i}"}),
    (6, "POST", "/focus-groups", lambda r, i: {"sample_size": r.choice([10, 25, 40, 60]),
                                               "questions": ["q"] * r.randint(2, 6)}),
    (4, "POST", "/video-analyses", lambda r, i: {"video_seconds": r.choice([20, 45, 120])}),
    (4, "GET", "/personas", lambda r, i: {}),
    (3, "POST", "/news/stories/demo-{i}/analyze", lambda r, i: {}),
    (2, "POST", "/brand-voices", lambda r, i: {"name": f"voice {i}"}),
    (1, "POST", "/personas", lambda r, i: {"name": f"persona {i}"}),
)


def demo_job(rng: random.Random, n: int, prefix: str = "demo") -> JobSpec:
    """One job of the demo mix."""
    weights = [w for w, *_ in _MIX]
    _, method, path, body = rng.choices(_MIX, weights=weights)[0]
    return JobSpec(f"{prefix}-{n}", method, path.format(i=n), body(rng, n),
                   priority=1 if rng.random() < 0.05 else 0)


async def run_demo(sched: Scheduler, *, rate_per_min: float | None = None, seed: int = 1,
                   burst_every: float = 150.0, burst_size: int = 40,
                   prefix: str = "demo") -> None:
    """Submit demo jobs forever (until cancelled): about 70% of the limit, plus bursts."""
    rng = random.Random(seed)
    counter = itertools.count(1)
    clock = sched.clock
    next_burst = clock.now() + burst_every / 3
    prefix = f"{prefix}-{int(clock.wall())}"
    while True:
        rate = rate_per_min or max(6.0, sched.window.limit * 0.7)
        await clock.sleep(rng.expovariate(rate / 60.0))
        specs = [demo_job(rng, next(counter), prefix)]
        if clock.now() >= next_burst:
            specs += [demo_job(rng, next(counter), prefix) for _ in range(burst_size)]
            next_burst = clock.now() + burst_every * rng.uniform(0.7, 1.3)
        if sched.unfinished() < 2000:  # never let a demo queue grow without bound
            await sched.submit_many(specs)


def start_demo(sched: Scheduler, **kw: object) -> asyncio.Task[None]:
    return asyncio.create_task(run_demo(sched, **kw), name="demo-workload")  # type: ignore[arg-type]
