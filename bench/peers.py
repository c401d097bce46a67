"""The clients the HTTP benchmark compares, one per sub-command, each run as its own process.

Run: ``python bench/peers.py PEER --jobs JOBS.jsonl --base-url URL --limit L
--window-seconds W --out RESULT.json`` with the API key in ``$MAVERA_API_KEY``, or
``python bench/peers.py ours --out RESULT.json -- run JOBS.jsonl --base-url URL ...``
(everything after ``--`` goes to ``mavera-tui``).

Peers (all read the same JSONL job files as ``mavera-tui run``, keep the documented
per-endpoint concurrency caps with one ``asyncio.Semaphore`` each, and retry a 429 until
the job succeeds):

``ours``       this project's ``mavera-tui run``, in this process (so its CPU can be read
               around the run, without the interpreter's start-up).
``bucket``     the vendor cookbook's token bucket (pattern 2): capacity a full window, refill
               limit/W per second, the cookbook's ``acquire`` (a caller that finds no token
               is told to wait ``need/rate`` and the bucket is emptied); on a 429 the
               cookbook's backoff (pattern 5): ``Retry-After * 2**attempt + uniform(0, 5)``,
               capped at 300 s, jitter and cap scaled by ``--time-scale``.
``queue``      the cookbook's request queue (pattern 4): fixed workers, each sleeping
               ``60/rate`` (here ``W/limit``) minus the request's time between requests.
               The cookbook's example pairs 4 workers with 60 per minute; the worker count
               scales with the tier (``4 * limit / 60``, at least 4). Backoff as ``bucket``.
``aiolimiter`` ``aiolimiter.AsyncLimiter(limit, W)`` before every send; waits Retry-After.
``sliding``    a plain sliding window: a deque of send times, never more than ``limit``
               sends in any W; waits Retry-After.
``semaphores`` only the concurrency caps, no rate limiting at all; waits Retry-After.

Each writes a JSON result: its own start/end stamps (Unix time, taken after the job file
is read and right before the first job is handed over / after the last answer), the
requests it sent, the 429s it received, transport errors, jobs succeeded and failed, and
the CPU seconds of the process between the stamps (``time.process_time``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import math
import os
import random
import resource
import sys
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mavera_tui import catalog  # noqa: E402
from mavera_tui.jobs import JobSpec, read_job_file  # noqa: E402

PEERS = ("ours", "bucket", "queue", "aiolimiter", "sliding", "semaphores")
#: The cookbook's backoff cap and jitter, in seconds of uncompressed time.
BACKOFF_CAP = catalog.MAX_BACKOFF_SECONDS
BACKOFF_JITTER = 5.0


class Stats:
    """What a peer counts about itself."""

    def __init__(self) -> None:
        self.requests = 0
        self.r429 = 0
        self.transport_errors = 0
        self.other_errors = 0
        self.succeeded = 0
        self.failed = 0


def retry_after(resp: Any, default: float) -> float:
    """The 429's Retry-After in seconds (the simulator sends integer seconds)."""
    try:
        return max(0.0, float(resp.headers.get("retry-after", "")))
    except ValueError:
        return default


class Peer:
    """The shared machinery: an httpx client, cap semaphores, the retry loop."""

    def __init__(self, args: argparse.Namespace, key: str):
        import httpx

        self.args = args
        self.limit: int = args.limit
        self.window: float = args.window_seconds
        self.scale: float = args.time_scale
        self.stats = Stats()
        # One client for the whole batch, as the cookbook's examples would be written by
        # someone sending a batch: a pool large enough for bursts (httpx's default keeps only
        # 20 idle connections), no pool timeout (queueing for a connection is not an error).
        self.client = httpx.AsyncClient(
            base_url=args.base_url,
            headers={"Authorization": f"Bearer {key}"},
            timeout=httpx.Timeout(120.0, pool=None),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=100),
        )
        self.transport_error = httpx.TransportError
        self.sems = {
            e.slot_key: asyncio.Semaphore(e.cap) for e in catalog.ENDPOINTS.values() if e.cap
        }

    # --- what each peer chooses -------------------------------------------------------------

    async def acquire(self) -> None:
        """Wait for the rate limiter's permission to send one request."""

    async def on_429(self, resp: Any, attempt: int) -> None:
        """Wait after a 429 before trying the job again."""
        await asyncio.sleep(retry_after(resp, 1.0))

    def docs_backoff(self, resp: Any, attempt: int) -> float:
        """The cookbook's pattern 5, with jitter and cap compressed like the window."""
        ra = retry_after(resp, 30.0 * self.scale)
        return min(
            ra * 2**attempt + random.uniform(0, BACKOFF_JITTER * self.scale),
            BACKOFF_CAP * self.scale,
        )

    # --- the shared retry loop --------------------------------------------------------------

    async def run_job(self, job: JobSpec) -> None:
        """Send ``job`` until it gets a final answer (429s, 5xx and transport errors retry)."""
        ep = catalog.find_endpoint(job.method, job.path)
        sem: AbstractAsyncContextManager[Any] = (
            self.sems.get(ep.slot_key, nullcontext()) if ep else nullcontext()
        )
        attempt = 0
        st = self.stats
        while True:
            async with sem:
                await self.acquire()
                st.requests += 1
                try:
                    resp = await self.client.request(
                        job.method, job.path, json=job.body if job.method == "POST" else None
                    )
                except self.transport_error:
                    resp = None
            if resp is None:
                st.transport_errors += 1
                await asyncio.sleep(1.0 * self.scale)
                continue
            status = resp.status_code
            if status == 429:
                st.r429 += 1
                await self.on_429(resp, attempt)
                attempt += 1
                continue
            if status >= 500:
                st.other_errors += 1
                await asyncio.sleep(1.0 * self.scale)
                continue
            if status == 200:
                st.succeeded += 1
            else:
                st.failed += 1
            return

    async def run(self, jobs: list[JobSpec]) -> None:
        """All jobs at once (the caps and the limiter pace them)."""
        await asyncio.gather(*(self.run_job(j) for j in jobs))


class Bucket(Peer):
    """The cookbook's TokenBucket (pattern 2), made async, with pattern 5's backoff."""

    def __init__(self, args: argparse.Namespace, key: str):
        super().__init__(args, key)
        self.rate = self.limit / self.window
        self.capacity = self.limit  # "defaults to rate * 60 for 1 minute burst": one window
        self.tokens = float(self.capacity)
        self.last_refill = time.monotonic()

    def _take(self) -> float:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.last_refill) * self.rate)
        self.last_refill = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        wait = (1 - self.tokens) / self.rate
        self.tokens = 0  # as the cookbook does: the caller sleeps and then sends
        return wait

    async def acquire(self) -> None:
        wait = self._take()
        if wait > 0:
            await asyncio.sleep(wait)

    async def on_429(self, resp: Any, attempt: int) -> None:
        await asyncio.sleep(self.docs_backoff(resp, attempt))


class Queue(Peer):
    """The cookbook's request queue (pattern 4) with pattern 5's backoff on 429."""

    async def on_429(self, resp: Any, attempt: int) -> None:
        await asyncio.sleep(self.docs_backoff(resp, attempt))

    async def run(self, jobs: list[JobSpec]) -> None:
        q: collections.deque[JobSpec] = collections.deque(jobs)
        interval = self.window / self.limit  # the cookbook's 60.0 / rate_per_minute
        workers = self.args.workers or max(4, math.ceil(4 * self.limit / 60))

        async def worker() -> None:
            while q:
                job = q.popleft()
                start = time.monotonic()
                await self.run_job(job)
                await asyncio.sleep(max(0.0, interval - (time.monotonic() - start)))

        await asyncio.gather(*(worker() for _ in range(workers)))


class AioLimiter(Peer):
    """``aiolimiter.AsyncLimiter(limit, W)`` in front of every send."""

    def __init__(self, args: argparse.Namespace, key: str):
        super().__init__(args, key)
        from aiolimiter import AsyncLimiter

        self.limiter = AsyncLimiter(self.limit, self.window)

    async def acquire(self) -> None:
        await self.limiter.acquire()


class Sliding(Peer):
    """A deque of send times: a send waits until fewer than ``limit`` are in the last W."""

    def __init__(self, args: argparse.Namespace, key: str):
        super().__init__(args, key)
        self.sent: collections.deque[float] = collections.deque()

    async def acquire(self) -> None:
        sent, w = self.sent, self.window
        while True:
            now = time.monotonic()
            while sent and sent[0] <= now - w:
                sent.popleft()
            if len(sent) < self.limit:
                sent.append(now)
                return
            await asyncio.sleep(sent[0] + w - now)


class Semaphores(Peer):
    """Only the caps: every uncapped job goes at once; a 429 waits its Retry-After."""


CLASSES: dict[str, Callable[[argparse.Namespace, str], Peer]] = {
    "bucket": Bucket,
    "queue": Queue,
    "aiolimiter": AioLimiter,
    "sliding": Sliding,
    "semaphores": Semaphores,
}


def _write(path: str, result: dict[str, Any]) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, path)


def _peak_rss_kb() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


async def _run_peer(args: argparse.Namespace, key: str) -> dict[str, Any]:
    jobs, errors = read_job_file(args.jobs)
    if errors:
        raise SystemExit(f"peers: {args.jobs}: {errors[0]} ({len(errors)} bad line(s))")
    peer = CLASSES[args.peer](args, key)
    c0 = time.process_time()
    t0 = time.time()
    try:
        await peer.run(jobs)
    finally:
        t1 = time.time()
        c1 = time.process_time()
        await peer.client.aclose()
    st = peer.stats
    return {
        "peer": args.peer,
        "jobs": len(jobs),
        "t_start": t0,
        "t_end": t1,
        "makespan_client": t1 - t0,
        "cpu_s": c1 - c0,
        "requests": st.requests,
        "r429": st.r429,
        "transport_errors": st.transport_errors,
        "server_errors": st.other_errors,
        "succeeded": st.succeeded,
        "failed": st.failed,
        "peak_rss_kb": _peak_rss_kb(),
    }


def _run_ours(out: str, rest: list[str]) -> int:
    """``mavera-tui`` in this process, stamped around ``cli.main`` (import time excluded).

    ``run`` imports its engine and HTTP client lazily (``--help`` should not wait for them):
    they are imported here, before the stamp, as the other peers import httpx before theirs.
    """
    import aiohttp  # noqa: F401

    from mavera_tui import cli, engine  # noqa: F401

    c0 = time.process_time()
    t0 = time.time()
    rc = cli.main(rest)
    t1 = time.time()
    c1 = time.process_time()
    result: dict[str, Any] = {
        "peer": "ours",
        "t_start": t0,
        "t_end": t1,
        "makespan_client": t1 - t0,
        "cpu_s": c1 - c0,
        "exit": rc,
        "peak_rss_kb": _peak_rss_kb(),
    }
    if "--summary" in rest:
        try:
            with open(rest[rest.index("--summary") + 1]) as f:
                s = json.load(f)
            result.update(
                jobs=s.get("jobs"),
                succeeded=s.get("succeeded"),
                failed=s.get("failed"),
                requests=s.get("requests"),
                r429=s.get("responses_429"),
                makespan_reported=s.get("makespan_s"),
            )
        except (OSError, ValueError, IndexError):
            pass
    _write(out, result)
    return rc


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    rest: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, rest = argv[:i], argv[i + 1 :]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("peer", choices=PEERS)
    ap.add_argument("--out", required=True, help="where to write the JSON result")
    ap.add_argument("--jobs", help="JSONL job file (not for ours: give it after --)")
    ap.add_argument("--base-url", default="")
    ap.add_argument("--limit", type=int, default=0, help="requests per window (the tier)")
    ap.add_argument("--window-seconds", type=float, default=6.0)
    ap.add_argument(
        "--time-scale",
        type=float,
        default=0.1,
        help="how compressed time is (scales the docs' backoff jitter and cap)",
    )
    ap.add_argument("--workers", type=int, default=0, help="queue: worker count (0: auto)")
    a = ap.parse_args(argv)
    if a.peer == "ours":
        return _run_ours(a.out, rest)
    key = os.environ.get(catalog.API_KEY_ENV, "")
    if not key:
        print(f"peers: set ${catalog.API_KEY_ENV}", file=sys.stderr)
        return 2
    if not (a.jobs and a.base_url and a.limit >= 1):
        print("peers: --jobs, --base-url and --limit (>= 1) are required", file=sys.stderr)
        return 2
    result = asyncio.run(_run_peer(a, key))
    _write(a.out, result)
    return 0 if result["succeeded"] == result["jobs"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
