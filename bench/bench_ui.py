"""Cost of watching: CPU (% of one core) and memory of the monitor, idle and under load.

First, the time from launching ``mavera-tui`` in a pseudo-terminal to its first frame (the
panes' titles on screen), at 80x24 and 200x60. Then it runs the real app headless
(``App.run_test``) for a while at each size: on a frozen
snapshot (idle), on a stream that changes every poll (counters, queue, jobs, alerts:
everything a busy demo moves; built before measuring so only the app's own work is
counted), and on the real engine running the demo at the highest tier, beside a run of
that engine without the app, so the difference is the cost of watching. Not a test: it
prints numbers.

    .venv/bin/python bench/bench_ui.py [seconds per run] [refresh]
"""

from __future__ import annotations

import asyncio
import dataclasses
import resource
import sys
import time

from mavera_tui.snapshot import FINAL_STATES, IN_FLIGHT, QUEUED, JobView, Snapshot
from mavera_tui.ui.app import create_app
from mavera_tui.ui.fixtures import DEMO_T, FrozenEngine, demo_history, demo_snapshot

SIZES = ((80, 24), (200, 60))


class StreamEngine(FrozenEngine):
    """Serves a precomputed stream of snapshots, one per poll, then loops it."""

    def __init__(self, stream: list[Snapshot]):
        super().__init__(stream[0])
        self.stream = stream

    def snapshot(self) -> Snapshot:
        self.polls += 1
        self.snap = self.stream[(self.polls - 1) % len(self.stream)]
        return self.snap


def build_stream(n: int, refresh: float) -> list[Snapshot]:
    """n snapshots ``refresh`` seconds apart, as a busy engine would produce them."""
    out = []
    base = demo_snapshot()
    states = (QUEUED, "waiting_slot", IN_FLIGHT, "succeeded", "backoff")
    loop_s = n * refresh
    for i in range(n):
        step = 90 + int(i * refresh / 10)  # a new 10-second demo step every 10 s
        s = demo_snapshot(DEMO_T + i * refresh, step=step)
        jobs = tuple(
            JobView(
                f"job-{i // 4 + k}",
                "responses",
                "POST",
                "/responses",
                states[(i + k) % len(states)],
                estimate=5,
                actual=3 if states[(i + k) % len(states)] in FINAL_STATES else None,
                attempts=1 + k % 3,
                created=s.t - k * 7,
                updated=s.t,
            )
            for k in range(40)
        )
        queue = dict(s.queue)
        queue[QUEUED] = (i // 3) % 9
        out.append(
            dataclasses.replace(
                s,
                jobs=jobs,
                queue=queue,
                window_used=(i * 7) % s.limit,
                remaining=s.limit - (i * 7) % s.limit,
                reset_in=(loop_s - i * refresh) % 60,
                alerts=base.alerts if i % 40 < 20 else base.alerts[1:],
            )
        )
    return out


def rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def measure(engine, size, seconds: float, refresh: float) -> tuple[float, float, int]:
    app = create_app(engine, refresh=refresh, history=demo_history(), watch_terminal=False)
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        await asyncio.sleep(1.0)  # settle: first layout and chart draws are not steady state
        c0, w0, polls0 = time.process_time(), time.perf_counter(), app.ticks
        await asyncio.sleep(seconds)
        cpu = time.process_time() - c0
        wall = time.perf_counter() - w0
        polls = app.ticks - polls0
        mem = rss_mb()
    return 100.0 * cpu / wall, mem, polls


async def measure_live(
    size, seconds: float, refresh: float, with_app: bool
) -> tuple[float, float, int]:
    """The real engine running the demo at the highest tier (enterprise, 600/min) on the
    embedded simulator, with the monitor on it (or without, for the baseline)."""
    from mavera_tui.config import Config, SimSettings
    from mavera_tui.engine import Engine, Settings
    from mavera_tui.monitor import LiveEngine

    live = LiveEngine(
        Engine(
            Settings(
                Config(sim=SimSettings(tier="enterprise")), keep_finished=False, force_embedded=True
            )
        )
    )
    await live.boot([], demo=True)
    try:
        if not with_app:
            await asyncio.sleep(1.0)
            c0, w0 = time.process_time(), time.perf_counter()
            await asyncio.sleep(seconds)
            return (100.0 * (time.process_time() - c0) / (time.perf_counter() - w0), rss_mb(), 0)
        return await measure(live, size, seconds, refresh)
    finally:
        await live.shutdown()


def first_frame(size: tuple[int, int], timeout: float = 20.0) -> float | None:
    """Seconds from exec of ``mavera-tui --no-demo`` in a pty of ``size`` until the first
    frame (a pane's title) has been written; None if it never came."""
    import fcntl
    import os
    import pty
    import select
    import signal
    import struct
    import termios

    exe = os.path.join(os.path.dirname(sys.executable), "mavera-tui")
    t0 = time.perf_counter()
    pid, fd = pty.fork()
    if pid == 0:  # the child: the monitor on the embedded simulator, no demo traffic
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", size[1], size[0], 0, 0))
        env = dict(os.environ, TERM="xterm-256color")
        env.pop("MAVERA_API_KEY", None)
        os.execve(exe, [exe, "--no-demo"], env)
    out = b""
    took = None
    try:
        while time.perf_counter() - t0 < timeout:
            r, _, _ = select.select([fd], [], [], 0.05)
            if r:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    break
                out += chunk
                if b"Rate-limit" in out or b"headroom" in out:
                    took = time.perf_counter() - t0
                    break
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(fd)
    return took


def main(seconds: float = 15.0, refresh: float = 0.5) -> int:
    for size in ((80, 24), (200, 60)):
        runs = sorted(t for t in (first_frame(size) for _ in range(5)) if t is not None)
        shown = f"{runs[len(runs) // 2]:.2f} s median of {len(runs)}" if runs else "none"
        print(
            f"first frame {size[0]}x{size[1]}: {shown} (runs {', '.join(f'{t:.2f}' for t in runs)})"
        )
    stream = build_stream(int((seconds + 5) / refresh) + 10, refresh)
    print(f"refresh {refresh}s, {seconds:g}s per run; CPU is % of one core (process time)")
    print(f"{'size':>8} {'state':>10} {'cpu %':>7} {'rss MB':>7} {'polls':>6}")
    base, base_mem, _ = asyncio.run(measure_live(None, seconds, refresh, with_app=False))
    print(
        f"{'-':>8} {'engine':>10} {base:>7.1f} {base_mem:>7.0f} {'':>6}  "
        "(demo at 600/min on the embedded simulator, no UI: the baseline)"
    )
    for size in SIZES:
        for label, engine in (("idle", FrozenEngine()), ("stream", StreamEngine(stream))):
            cpu, mem, polls = asyncio.run(measure(engine, size, seconds, refresh))
            print(f"{size[0]:>4}x{size[1]:<3} {label:>10} {cpu:>7.1f} {mem:>7.0f} {polls:>6}")
        cpu, mem, polls = asyncio.run(measure_live(size, seconds, refresh, with_app=True))
        print(
            f"{size[0]:>4}x{size[1]:<3} {'live demo':>10} {cpu:>7.1f} {mem:>7.0f} {polls:>6}"
            f"  (watching costs {cpu - base:.1f} points over the engine alone)"
        )
    return 0


if __name__ == "__main__":
    args = [float(a) for a in sys.argv[1:3]]
    sys.exit(main(*args))
