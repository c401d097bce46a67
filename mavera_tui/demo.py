"""The demo workload: a steady mix of jobs across endpoints, with occasional bursts.

Runs against the embedded simulator when no key is set, so every pane of the monitor moves
and ``record`` has something to record. Deterministic for a seed.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import catalog
from .jobs import JobSpec

if TYPE_CHECKING:
    from .control import RunControl

# (weight, method, path, body factory)
_MIX: tuple[tuple[float, str, str, Callable[[random.Random, int], dict[str, Any]]], ...] = (
    (70, "POST", "/responses", lambda r, i: {"input": f"demo question {i}"}),
    (
        12,
        "POST",
        "/mave/chat",
        lambda r, i: {
            "message": f"demo research {i}",
            "complexity": r.choice(list(catalog.MAVE_COMPLEXITY)),
        },
    ),
    (8, "POST", "/generations", lambda r, i: {"prompt": f"demo copy {i}"}),
    (
        3,
        "POST",
        "/focus-groups",
        lambda r, i: {
            "sample_size": r.choice([10, 25, 40, 60]),
            "questions": ["q"] * r.randint(2, 6),
        },
    ),
    (2, "POST", "/video-analyses", lambda r, i: {"video_seconds": r.choice([20, 45, 120])}),
    (3, "GET", "/personas", lambda r, i: {}),
    (1.5, "POST", "/news/stories/demo-{i}/analyze", lambda r, i: {}),
    (0.4, "POST", "/brand-voices", lambda r, i: {"name": f"voice {i}"}),
    (0.1, "POST", "/personas", lambda r, i: {"name": f"persona {i}"}),
)


def demo_job(rng: random.Random, n: int, prefix: str = "demo") -> JobSpec:
    """One job of the demo mix."""
    weights = [w for w, *_ in _MIX]
    _, method, path, body = rng.choices(_MIX, weights=weights)[0]
    return JobSpec(
        f"{prefix}-{n}",
        method,
        path.format(i=n),
        body(rng, n),
        priority=1 if rng.random() < 0.05 else 0,
    )


async def run_demo(
    sched: RunControl,
    *,
    rate_per_min: float | None = None,
    seed: int = 1,
    burst_every: float = 150.0,
    burst_size: int = 40,
    prefix: str = "demo",
) -> None:
    """Submit demo jobs forever (until cancelled): about 40% of the limit, plus bursts."""
    rng = random.Random(seed)
    counter = itertools.count(1)
    clock = sched.clock
    next_burst = clock.now() + burst_every / 3
    prefix = f"{prefix}-{int(clock.wall())}"
    while True:
        rate = rate_per_min or max(6.0, sched.snapshot().limit * 0.4)
        await clock.sleep(rng.expovariate(rate / 60.0))
        specs = [demo_job(rng, next(counter), prefix)]
        if clock.now() >= next_burst:
            specs += [demo_job(rng, next(counter), prefix) for _ in range(burst_size)]
            next_burst = clock.now() + burst_every * rng.uniform(0.7, 1.3)
        if sched.unfinished() < 2000:  # never let a demo queue grow without bound
            await sched.submit_many(specs)


def start_demo(sched: RunControl, **kw: object) -> asyncio.Task[None]:
    return asyncio.create_task(run_demo(sched, **kw), name="demo-workload")  # type: ignore[arg-type]


def simulate_demo(
    minutes: float = 12.0,
    *,
    seed: int = 1,
    interval: float = 1.0,
    wall0: float = 1_795_000_000.0,
    sim_config=None,
):  # noqa: ANN001, ANN201
    """Run the demo on the embedded simulator for ``minutes`` of fast-forwarded time.

    Returns (final snapshot, History of the run): a real, deterministic demo state for
    screenshots and snapshot tests, produced by the real engine rather than drawn by hand.
    ``sim_config`` (a SimConfig) replaces the embedded simulator's account and faults.
    """
    from .clock import Clock, run_virtual
    from .config import Config, SimSettings
    from .engine import Engine, Settings
    from .history import History

    async def go():  # noqa: ANN202
        clock = Clock(wall0=wall0)
        sim = None
        if sim_config is not None:
            from .sim import create_sim

            sim = create_sim(sim_config, clock)
        engine = Engine(
            Settings(Config(sim=SimSettings(seed=seed)), keep_finished=False, force_embedded=True),
            clock=clock,
            sim=sim,
        )
        sched = await engine.start()
        demo = start_demo(sched, seed=seed)
        history = History()
        end = clock.now() + minutes * 60
        while clock.now() < end:
            await clock.sleep(interval)
            history.add(sched.snapshot())
        snap = sched.snapshot()
        demo.cancel()
        await engine.stop(abort=True)
        rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in rest:  # the simulator's work still running for aborted requests
            t.cancel()
        await asyncio.gather(*rest, return_exceptions=True)
        return snap, history

    return run_virtual(go())
