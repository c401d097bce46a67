"""Makespan over the bound for batch sizes around multiples of the limit, in virtual time.

Run: ``python bench/bench_multiples.py [--sizes 420,480,500,600@120,2100,3000@600]
[--seeds 1,2,3] [--balance-read start|auto|end] [--kind mix|burst]``

The in-process simulator (no transport) with fast-forwarded time, the documented window of
60 s and the documented latencies, and ``bench_http.py``'s realistic mix (capped work about
60% of the window bound). A batch that fills its windows exactly (N = k * L) leaves the
scheduler no spare room: every chain of sends (an admission, the one the window gives back
a window later, ...) carries k requests, so one more request, or a chain started late in
the first window, ends the batch a window later. This prints how far each size is from
the bound, so that a change to the planning can be judged on those sizes and on the
others side by side. Not a test: it prints numbers.

What the planning would need (not done): with R requests left and this window's sends,
G = ceil(total / L) generations remain and L - (total - (G - 1) * L) chains of the last
one are spare; capped jobs started late in a window (``SlotGate.reserve_for_capped``)
cost nothing only on spare chains, or where one start per slot and generation would not
get the capped work through in G generations. Capping the reservation that way alone was
tried and did not help (1.18-1.46 with ``auto``): the first window is also delayed by the
job sent alone to learn the limit, and later windows start chains late as capped slots
free up. And with the balance read first (the default), N + 1 requests need G + 1
generations whatever the planning.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_http as H  # noqa: E402
from bench_scheduler import run_virtual  # noqa: E402
from bound import lower_bound  # noqa: E402

from mavera_tui import catalog  # noqa: E402
from mavera_tui.client import ApiClient  # noqa: E402
from mavera_tui.clock import Clock  # noqa: E402
from mavera_tui.jobs import JobSpec  # noqa: E402
from mavera_tui.scheduler import Scheduler, SchedulerConfig  # noqa: E402
from mavera_tui.sim.app import create_sim, sim_transport  # noqa: E402
from mavera_tui.sim.config import SimConfig  # noqa: E402

KEY = "mvra_test_bench_multiples"  # a test key for the in-process simulator: not a secret
WINDOW = 60.0


async def one(
    n: int, limit: int, seed: int, balance_read: str, kind: str = "mix"
) -> dict[str, Any]:
    """One batch of ``n`` jobs at ``limit`` a window: makespan / bound, 429s, requests."""
    H.WINDOW, H.TIME_SCALE = WINDOW, 1.0  # the mix sized for the documented window
    jobs = H.mix_jobs(n, limit, seed) if kind == "mix" else H.burst_jobs(n)
    specs = [JobSpec(j["id"], j["method"], j["path"], j["body"]) for j in jobs]
    tier = {v: k for k, v in catalog.TIERS.items()}[limit]
    clock = Clock(wall0=1_800_000_000.0)
    sim = create_sim(
        SimConfig(tier=tier, plan="enterprise", allocation=10_000_000, seed=seed), clock
    )
    client = ApiClient("http://sim/api/v1", KEY, clock=clock, transport=sim_transport(sim))
    sched = Scheduler(
        client, clock=clock, config=SchedulerConfig(seed=seed, balance_read=balance_read)
    )
    await sched.start(batch=n)
    await sched.submit_many(specs)
    await sched.wait_idle()
    await sched.close()
    await client.aclose()
    recs = list(sim.records)
    ok = [r for r in recs if r.status == 200 and r.endpoint != "billing_credits"]
    capped: dict[str, list[float]] = {}
    for r in ok:
        ep = catalog.ENDPOINTS[r.endpoint or ""]
        if ep.cap:
            capped.setdefault(ep.key, []).append(r.latency)
    bound = lower_bound(
        [r.latency for r in ok],
        limit,
        WINDOW,
        [(catalog.ENDPOINTS[k].cap or 1, v) for k, v in capped.items()],
    )
    first = min(r.t for r in recs)
    last = max(r.done for r in ok if r.done is not None)
    return {
        "ratio": (last - first) / bound,
        "r429": sum(1 for r in recs if r.status == 429),
        "requests": len(recs),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--sizes",
        default="420,480,500,600@120,2100,3000@600",
        help="comma-separated job counts, each group ending in @LIMIT (a tier's limit)",
    )
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--balance-read", default="start", choices=("start", "auto", "end"))
    ap.add_argument(
        "--kind", default="mix", choices=("mix", "burst"), help="the realistic mix or responses"
    )
    ap.add_argument(
        "--cap-load",
        type=float,
        default=H.CAP_LOAD,
        help="each capped endpoint's work (sum of latencies / cap) as a share of the window's "
        f"bound (default {H.CAP_LOAD}; above 1 the capped work, not the window, sets the bound)",
    )
    a = ap.parse_args(argv)
    if not 0 < a.cap_load <= 10:
        ap.error(f"--cap-load: {a.cap_load} is not in (0, 10]")
    H.CAP_LOAD = a.cap_load
    cells: list[tuple[int, int]] = []
    pending: list[int] = []
    for part in a.sizes.split(","):
        size, _, lim = part.partition("@")
        pending.append(int(size))
        if lim:
            if int(lim) not in catalog.TIERS.values():
                ap.error(f"--sizes: {lim} is not a tier's limit ({sorted(catalog.TIERS.values())})")
            cells += [(n, int(lim)) for n in pending]
            pending = []
    if pending:
        ap.error("--sizes: end each group of sizes with @LIMIT, e.g. 420,600@120")
    seeds = [int(s) for s in a.seeds.split(",")]
    print(
        f"{a.kind} (capped work {a.cap_load:g}x), balance read: {a.balance_read}; "
        "makespan / bound (429s, requests) per seed"
    )
    for n, limit in cells:
        runs = [run_virtual(one(n, limit, s, a.balance_read, a.kind)) for s in seeds]
        kind = "exact multiple" if n % limit == 0 else f"{n / limit:.2f} windows"
        print(
            f"{n:>6} jobs at {limit:>3}/window ({kind}): "
            + "  ".join(f"{r['ratio']:.3f} ({r['r429']}, {r['requests']})" for r in runs),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
