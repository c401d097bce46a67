"""The engine at the limit over real HTTP, with peers side by side (issue 8, part 3).

Run: ``.venv/bin/python bench/bench_http.py`` (the default matrix), or
``bench/bench_http.py --quick`` (a smoke run of a few minutes), or e.g.
``bench/bench_http.py --cells basic,ent-foreign --peers ours,sliding --repeat 3``;
``--list`` shows the cells and peers, ``--dry-run`` the number of runs and a time estimate.
Needs the ``bench`` extra (``pip install -e '.[bench]'``).

The default matrix (about 70 minutes on a 2-core machine): every cell, this project's
``run`` 5 times each, each peer once on the cells without a CPU hog; the hog and no-limit
cells run ``run`` only. ``--cells all --peer-repeat 5`` is the issue's full protocol (about
5 hours): the peers that hand hundreds of requests to httpx at once are slow at enterprise.

For every run it starts a fresh simulator process on 127.0.0.1 (``bench/http_sim.py``: the
project's simulator with time compressed ten times, window 6 s and latencies x0.1), runs one
client as its own process against it (``bench/peers.py``: this project's ``mavera-tui run``
and five peers), then reads the server's own records of the run and stops both. Optionally
a CPU hog pinned to one core runs alongside, and the server adds foreign traffic on the key.

Measured per run, from the server's records (not from what the client says):
- makespan / lower bound: makespan is from the client's own start stamp (after reading the
  job file, before the first job is handed over) to the server's completion of the last
  job; the bound is ``bench/bound.py`` over the latencies the server drew for this run's
  successful job requests, with the limit left after foreign traffic;
- 429s the server sent to the client; requests it received;
- most requests counted in any window (and most offered, 429s included);
- client CPU per request: the client process's CPU seconds between its stamps over the
  requests the server received (also the whole process's CPU, start-up included);
- for the no-limit cells: jobs per second end to end and the client's peak RSS.
Each cell and peer: median and worst over the repeats. Results: ``bench/results/http-*.json``.

Everything listens on and talks to 127.0.0.1 only. Each run is killed if it takes more
than ``--timeout-factor`` times its expected bound; every child (server, client, hog) is
in its own process group, dies with this process (PR_SET_PDEATHSIG) and is stopped on exit
or Ctrl-C.
"""

from __future__ import annotations

import argparse
import atexit
import ctypes
import datetime as dt
import json
import os
import platform
import random
import select
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bound import lower_bound  # noqa: E402

from mavera_tui import catalog  # noqa: E402

KEY = "mvra_test_bench_http"  # a test key for a local simulator: not a secret
WINDOW = 6.0  # seconds: the documented 60 s compressed ten times
TIME_SCALE = 0.1  # the simulator's latencies, compressed the same
FOREIGN_SHARE = 0.30
NO_LIMIT = 1_000_000
PEERS = ("ours", "bucket", "queue", "aiolimiter", "sliding", "semaphores")
PY = sys.executable

# --- workloads ------------------------------------------------------------------------------

#: The uncapped part of the realistic mix: mavera_tui/demo.py's weights (responses 70,
#: generations 8, news 1.5, brand voices 0.4, persona creation 0.1). The demo's GET
#: /personas is left out: `run` answers an identical GET from its cache without a request,
#: which the peers don't, and the server would then see fewer jobs than were given.
UNCAPPED = (
    (70.0, "POST", "/responses", lambda r, i: {"input": f"bench question {i}"}),
    (8.0, "POST", "/generations", lambda r, i: {"prompt": f"bench copy {i}"}),
    (1.5, "POST", "/news/stories/bench-{i}/analyze", lambda r, i: {}),
    (0.4, "POST", "/brand-voices", lambda r, i: {"name": f"voice {i}"}),
    (0.1, "POST", "/personas", lambda r, i: {"name": f"persona {i}"}),
)
#: The capped endpoints and a body for each.
CAPPED = {
    "mave": lambda r, i: {
        "message": f"bench research {i}",
        "complexity": r.choice(["simple", "moderate", "complex"]),
    },
    "focus_groups": lambda r, i: {
        "sample_size": r.choice([10, 25, 40, 60]),
        "questions": ["q"] * r.randint(2, 6),
    },
    "video_analyses": lambda r, i: {"video_seconds": r.choice([20, 45, 120])},
}
#: Share of the window bound each capped endpoint's work fills (sum of latencies / cap):
#: enough that the caps matter, not so much that they, rather than the window, set the bound.
CAP_LOAD = 0.6


def mean_latency(ep: catalog.Endpoint) -> float:
    return (ep.latency[0] + ep.latency[1]) / 2 * TIME_SCALE


def mix_jobs(n: int, limit: int, seed: int) -> list[dict[str, Any]]:
    """The realistic mix: capped jobs sized to ``CAP_LOAD`` of the window bound, the rest
    drawn from the demo's uncapped weights (about 70% responses overall at basic), shuffled.
    """
    rng = random.Random(seed)
    wb = ((n - 1) // limit) * WINDOW
    jobs: list[dict[str, Any]] = []
    for key, body in CAPPED.items():
        ep = catalog.ENDPOINTS[key]
        assert ep.cap
        for _ in range(int(CAP_LOAD * wb * ep.cap / mean_latency(ep))):
            i = len(jobs)
            jobs.append({"id": f"j{i}", "method": ep.method, "path": ep.path, "body": body(rng, i)})
    weights = [w for w, *_ in UNCAPPED]
    while len(jobs) < n:
        i = len(jobs)
        _, method, path, body = rng.choices(UNCAPPED, weights=weights)[0]
        jobs.append(
            {"id": f"j{i}", "method": method, "path": path.format(i=i), "body": body(rng, i)}
        )
    rng.shuffle(jobs)
    return jobs


def burst_jobs(n: int) -> list[dict[str, Any]]:
    """``n`` responses, all submitted at once."""
    return [
        {"id": f"b{i}", "method": "POST", "path": "/responses", "body": {"input": f"burst {i}"}}
        for i in range(n)
    ]


@dataclass(frozen=True)
class Cell:
    """One workload: a tier, a job list, optional foreign traffic and CPU hog."""

    name: str
    limit: int
    kind: str  # "mix" | "burst" | "flood"
    jobs: int
    foreign: float = 0.0
    hog: bool = False
    peers: tuple[str, ...] = PEERS
    about: str = ""

    @property
    def limit_left(self) -> int:
        """Requests per window left to the client once foreign traffic took its share."""
        return self.limit - int(round(self.foreign * self.limit))

    @property
    def foreign_rpm(self) -> float:
        # The simulator's foreign traffic is a rate per 60 s whatever the window (see
        # _Window.settle: interval = 60 / foreign_rpm), so a share of a 6 s window is
        # share * limit per 6 s = share * limit * 60 / 6 per 60 s.
        return self.foreign * self.limit * 60.0 / WINDOW

    def make_jobs(self, seed: int) -> list[dict[str, Any]]:
        if self.kind == "mix":
            return mix_jobs(self.jobs, self.limit_left, seed)
        return burst_jobs(self.jobs)

    def timeout(self, factor: float, flood_factor: float) -> float:
        """Seconds after which a run is killed (it has failed its cell by then)."""
        f = flood_factor if self.kind == "flood" else factor
        return max(30.0, f * self.expected_bound()) + 15.0

    def expected_bound(self) -> float:
        """The bound with nominal (mean) latencies, before the run: sets the time-out."""
        if self.kind == "flood":
            return self.jobs / 1000.0  # the issue's target: 1,000 requests per second
        lats: list[float] = []
        capped: dict[str, list[float]] = {}
        for j in self.make_jobs(0):
            ep = catalog.find_endpoint(j["method"], j["path"])
            assert ep is not None
            lat = ep.latency[1] * TIME_SCALE
            lats.append(lat)
            if ep.cap:
                capped.setdefault(ep.key, []).append(mean_latency(ep))
        return lower_bound(
            lats,
            self.limit_left,
            WINDOW,
            [(catalog.ENDPOINTS[k].cap or 1, v) for k, v in capped.items()],
        )


def _cells(scale: float = 1.0) -> dict[str, Cell]:
    """Every cell, job counts multiplied by ``scale`` (``--quick`` shrinks them)."""
    out: dict[str, Cell] = {}
    basic, ent = catalog.TIERS["basic"], catalog.TIERS["enterprise"]
    windows = 3.5  # of work per mix run: a bound of about 18-20 s, a run of 20-40 s
    for tier, lim in (("basic", basic), ("ent", ent)):
        for hog in (False, True):
            sfx = "-hog" if hog else ""
            hog_txt = ", a CPU hog on one core" if hog else ""
            # By default the hog cells run ours only, to keep the default matrix near
            # 70 minutes; naming them with --cells runs every peer on them.
            peers = ("ours",) if hog else PEERS
            n = max(2, int(windows * lim * scale))
            out[f"{tier}{sfx}"] = Cell(
                f"{tier}{sfx}",
                lim,
                "mix",
                n,
                hog=hog,
                peers=peers,
                about=f"realistic mix, {n} jobs, {lim}/window, alone{hog_txt}",
            )
            nf = max(2, int(windows * lim * (1 - FOREIGN_SHARE) * scale))
            out[f"{tier}-foreign{sfx}"] = Cell(
                f"{tier}-foreign{sfx}",
                lim,
                "mix",
                nf,
                foreign=FOREIGN_SHARE,
                hog=hog,
                peers=peers,
                about=f"realistic mix, {nf} jobs, {lim}/window, 30% foreign{hog_txt}",
            )
            nb = max(2, int(5 * lim * scale))
            if not hog:  # the mix in 5 windows exactly: by name only (not in the default)
                about = f"realistic mix, {nb} jobs: 5 windows exactly, {lim}/window, alone"
                out[f"{tier}-5x"] = Cell(f"{tier}-5x", lim, "mix", nb, peers=("ours",), about=about)
            out[f"{tier}-burst{sfx}"] = Cell(
                f"{tier}-burst{sfx}",
                lim,
                "burst",
                nb,
                hog=hog,
                peers=peers,
                about=f"burst: {nb} responses at once, {lim}/window{hog_txt}",
            )
    for n in (5_000, 20_000):
        nn = max(2, int(n * scale))
        name = f"flood-{n // 1000}k"  # the nominal size, whatever --scale makes it
        out[name] = Cell(
            name,
            NO_LIMIT,
            "flood",
            nn,
            peers=("ours",),
            about=f"{nn} responses, no effective limit (req/s, peak RSS)",
        )
    return out


DEFAULT_CELLS = (
    "basic",
    "basic-hog",
    "basic-foreign",
    "basic-foreign-hog",
    "basic-burst",
    "basic-burst-hog",
    "ent",
    "ent-hog",
    "ent-foreign",
    "ent-foreign-hog",
    "ent-burst",
    "ent-burst-hog",
    "flood-5k",
    "flood-20k",
)
QUICK_CELLS = ("basic", "basic-burst-hog", "flood-5k")
QUICK_SCALE = 0.4

# --- processes ------------------------------------------------------------------------------

_LIVE: dict[int, subprocess.Popen[bytes]] = {}


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL if the benchmark dies (no orphan servers)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def spawn(cmd: list[str], **kw: Any) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own process group, tracked for clean-up."""
    p = subprocess.Popen(
        cmd, start_new_session=True, preexec_fn=_die_with_parent, stdin=subprocess.DEVNULL, **kw
    )
    _LIVE[p.pid] = p
    return p


def stop(p: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM the process group, SIGKILL after ``grace`` seconds; reap it."""
    if p.returncode is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
    _LIVE.pop(p.pid, None)


def stop_all(grace: float = 2.0) -> None:
    """SIGTERM every live child group at once, SIGKILL what is left after ``grace``."""
    procs = list(_LIVE.values())
    for p in procs:
        if p.returncode is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    end = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(max(0.0, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for p in procs:
        stop(p, grace=1.0)


def wait_rusage(
    p: subprocess.Popen[bytes],
    deadline: float,
) -> tuple[int | None, Any, bool]:
    """Wait for ``p`` until ``deadline`` (monotonic): (exit code, rusage, timed out).

    ``os.wait4`` rather than ``Popen.wait`` so the child's own CPU time and peak RSS come
    back with its exit status.
    """
    timed_out = False
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid == p.pid:
            p.returncode = os.waitstatus_to_exitcode(status)
            _LIVE.pop(p.pid, None)
            return p.returncode, ru, timed_out
        now = time.monotonic()
        if now >= deadline:
            # Stop it, but still reap it here: a killed run's CPU and peak RSS count too.
            sig = signal.SIGTERM if not timed_out else signal.SIGKILL
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass
            deadline = now + 3.0
            timed_out = True
        time.sleep(0.05)


def start_hog() -> subprocess.Popen[bytes]:
    """A busy loop pinned to CPU 0: the machine under load the issue asks about."""
    code = "import os\nos.sched_setaffinity(0, {0})\nwhile True:\n    pass\n"
    return spawn([PY, "-c", code])


def start_server(cell: Cell, seed: int, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    cmd = [
        PY,
        str(ROOT / "bench" / "http_sim.py"),
        "--limit",
        str(cell.limit),
        "--window-seconds",
        str(WINDOW),
        "--time-scale",
        str(TIME_SCALE),
        "--foreign-rpm",
        f"{cell.foreign_rpm:g}",
        "--seed",
        str(seed),
    ]
    p = spawn(cmd, stdout=subprocess.PIPE, stderr=open(log, "ab"))  # noqa: SIM115
    assert p.stdout is not None
    deadline = time.monotonic() + 20.0
    buf = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([p.stdout], [], [], 0.2)
        if ready:
            chunk = os.read(p.stdout.fileno(), 4096)
            if not chunk:
                break
            buf += chunk
            for line in buf.decode(errors="replace").splitlines():
                if line.startswith("PORT "):
                    return p, int(line.split()[1])
        elif p.poll() is not None:
            break
    stop(p)
    raise RuntimeError(f"the simulator did not start (see {log})")


def fetch_stats(port: int) -> dict[str, Any]:
    import httpx

    r = httpx.get(f"http://127.0.0.1:{port}/__bench/stats", timeout=60.0)
    r.raise_for_status()
    return r.json()


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAVERA_")}
    env[catalog.API_KEY_ENV] = KEY
    env["PYTHONUNBUFFERED"] = "1"
    return env


def peer_command(
    peer: str, cell: Cell, jobs: Path, url: str, out: Path, summary: Path, ours_args: list[str]
) -> list[str]:
    script = str(ROOT / "bench" / "peers.py")
    if peer == "ours":
        return [
            PY,
            script,
            "ours",
            "--out",
            str(out),
            "--",
            "run",
            str(jobs),
            "--base-url",
            url,
            "--window-seconds",
            f"{WINDOW:g}",
            "--summary",
            str(summary),
            *ours_args,
        ]
    return [
        PY,
        script,
        peer,
        "--jobs",
        str(jobs),
        "--base-url",
        url,
        "--limit",
        str(cell.limit),
        "--window-seconds",
        f"{WINDOW:g}",
        "--time-scale",
        f"{TIME_SCALE:g}",
        "--out",
        str(out),
    ]


# --- one run --------------------------------------------------------------------------------


def sliding_max(times: list[float], window: float) -> int:
    """Most of ``times`` (sorted) inside any ``(t - window, t]``."""
    best = 0
    lo = 0
    for hi, t in enumerate(times):
        while times[lo] <= t - window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def analyse(
    cell: Cell,
    n_jobs: int,
    stats: dict[str, Any],
    result: dict[str, Any] | None,
) -> dict[str, Any]:
    """The run's numbers from the server's records (and the client's own stamps)."""
    cols = stats["columns"]
    recs = [dict(zip(cols, row, strict=True)) for row in stats["records"]]
    recs.sort(key=lambda r: r["t"])
    ok = [r for r in recs if r["status"] == 200 and r["endpoint"] != "billing_credits"]
    out: dict[str, Any] = {"jobs": n_jobs, "ok": len(ok), "requests": len(recs)}
    out["r429"] = sum(1 for r in recs if r["status"] == 429)
    out["r429_window"] = sum(1 for r in recs if r["code"] == catalog.CODE_RATE_LIMIT)
    out["r429_concurrency"] = sum(1 for r in recs if r["code"] == catalog.CODE_CONCURRENCY)
    counted = [r["t"] for r in recs if r["counted"]]
    out["max_in_window"] = sliding_max(counted, WINDOW)
    out["max_offered_in_window"] = sliding_max([r["t"] for r in recs], WINDOW)
    # Foreign arrivals in the window as the server counted it (its window_count minus our
    # own counted arrivals in the same window): checks that foreign took its share.
    # The simulator adds a foreign arrival only when the window has room, so a client that
    # keeps the window full leaves foreign traffic less than its nominal share.
    foreign: list[int] = []
    lo = 0
    for hi, r in enumerate(r for r in recs if r["counted"]):
        while counted[lo] <= r["t"] - WINDOW:
            lo += 1
        foreign.append(r["window_count"] - (hi - lo + 1))
    out["max_foreign_in_window"] = max(foreign, default=0)
    out["mean_foreign_in_window"] = statistics.fmean(foreign) if foreign else 0.0
    if ok:
        lats = [r["latency"] for r in ok]
        capped: dict[str, list[float]] = {}
        for r in ok:
            ep = catalog.ENDPOINTS.get(r["endpoint"] or "")
            if ep is not None and ep.cap:
                capped.setdefault(ep.key, []).append(r["latency"])
        limit = min(cell.limit_left, NO_LIMIT)
        out["bound_s"] = lower_bound(
            lats, limit, WINDOW, [(catalog.ENDPOINTS[k].cap or 1, v) for k, v in capped.items()]
        )
        last = max(r["wall"] + (r["done"] - r["t"]) for r in ok)
        out["makespan_server_s"] = last - min(r["wall"] for r in recs)
        if out["makespan_server_s"] > 0:
            # Also for a run that was killed: how fast it went while it ran.
            out["server_jobs_per_s"] = len(ok) / out["makespan_server_s"]
        if result is not None:
            out["makespan_s"] = last - result["t_start"]
            # (No ratio for the no-limit cells: their bound is one latency; jobs/s counts.)
            if out["bound_s"] > 0 and cell.kind != "flood":
                out["ratio"] = out["makespan_s"] / out["bound_s"]
            out["jobs_per_s"] = len(ok) / out["makespan_s"] if out["makespan_s"] > 0 else None
    if result is not None:
        out["client"] = result
        if recs:
            out["cpu_ms_per_req"] = 1000.0 * result["cpu_s"] / len(recs)
    out["complete"] = len(ok) == n_jobs and result is not None
    return out


def run_one(
    cell: Cell,
    peer: str,
    rep: int,
    work: Path,
    jobs: Path,
    n_jobs: int,
    timeout_factor: tuple[float, float],
    ours_args: list[str],
) -> dict[str, Any]:
    """One client against one fresh server (and a hog, if the cell has one)."""
    tag = f"{cell.name}-{peer}-{rep}"
    log = work / f"{tag}.log"
    out = work / f"{tag}.json"
    summary = work / f"{tag}.summary.json"
    hog = start_hog() if cell.hog else None
    server = client = None
    info: dict[str, Any] = {"cell": cell.name, "peer": peer, "rep": rep}
    try:
        server, port = start_server(cell, seed=rep, log=log)
        url = f"http://127.0.0.1:{port}/api/v1"
        cmd = peer_command(peer, cell, jobs, url, out, summary, ours_args)
        with open(log, "ab") as lf:
            client = spawn(cmd, stdout=lf, stderr=lf, env=_child_env())
        timeout = cell.timeout(*timeout_factor)
        t0 = time.monotonic()
        rc, ru, timed_out = wait_rusage(client, t0 + timeout)
        info.update(exit=rc, timed_out=timed_out, wall_s=time.monotonic() - t0, timeout_s=timeout)
        if ru is not None:
            info["process_cpu_s"] = ru.ru_utime + ru.ru_stime
            info["peak_rss_mb"] = ru.ru_maxrss / 1024.0
        result = None
        if out.exists() and not timed_out:
            result = json.loads(out.read_text())
        stats = fetch_stats(port)
        # The server's own records, for a closer look with --keep.
        (work / f"{tag}.records.json").write_text(json.dumps(stats))
        info.update(analyse(cell, n_jobs, stats, result))
        if "process_cpu_s" in info and info["requests"]:
            info["process_cpu_ms_per_req"] = 1000.0 * info["process_cpu_s"] / info["requests"]
    except (RuntimeError, OSError, ValueError) as exc:
        info.update(error=f"{type(exc).__name__}: {exc}", complete=False)
    finally:
        # The client first (on an interrupt it is still running), then its server.
        for p in (client, server, hog):
            if p is not None:
                stop(p, grace=2.0)
    if not info.get("complete"):
        info["log_tail"] = _tail(log)
    return info


def _tail(path: Path, n: int = 8) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-n:]
    except OSError:
        return []


# --- aggregation and report -----------------------------------------------------------------

#: (result key, label, which way is worse) for the table.
METRICS = (
    ("ratio", "makespan/bound", max),
    ("r429", "429s", max),
    ("max_in_window", "max in window", min),
    ("cpu_ms_per_req", "CPU ms/req", max),
)


def aggregate(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Median and worst per cell and peer, in the order they were first run."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["cell"], r["peer"]), []).append(r)
    out = []
    for (cell, peer), rs in groups.items():
        row: dict[str, Any] = {
            "cell": cell,
            "peer": peer,
            "runs": len(rs),
            "incomplete": sum(1 for r in rs if not r.get("complete")),
        }
        keys = [(k, worse) for k, _, worse in METRICS] + [
            ("jobs_per_s", min),
            ("max_offered_in_window", max),
            ("max_foreign_in_window", max),
            ("mean_foreign_in_window", max),
            ("bound_s", max),
            ("makespan_s", max),
        ]
        for key, worse in keys:
            vals = [r[key] for r in rs if r.get(key) is not None and r.get("complete")]
            if vals:
                row[key] = {"median": statistics.median(vals), "worst": worse(vals)}
        # Over every run, killed ones too: how fast it went while it ran, and its memory.
        for key, worse in (("server_jobs_per_s", min), ("peak_rss_mb", max)):
            vals = [r[key] for r in rs if r.get(key) is not None]
            if vals:
                row[key] = {"median": statistics.median(vals), "worst": worse(vals)}
        out.append(row)
    return out


def _fmt(v: dict[str, float] | None, spec: str) -> str:
    if not v:
        return "-"
    return f"{format(v['median'], spec)} / {format(v['worst'], spec)}"


def table(summary: list[dict[str, Any]]) -> str:
    head = (
        f"{'cell':<18} {'peer':<11} {'runs':>4} {'makespan/bound':>15} {'429s':>11} "
        f"{'max in W':>11} {'CPU ms/req':>12}  {'jobs/s':>11} {'RSS MB':>11}"
    )
    lines = [
        "median / worst per cell and peer (worst: highest ratio, 429s, CPU and RSS; "
        "fewest in a window; lowest jobs/s)",
        head,
        "-" * len(head),
    ]
    for row in summary:
        runs = f"{row['runs'] - row['incomplete']}" + (
            f"!{row['incomplete']}" if row["incomplete"] else ""
        )
        lines.append(
            f"{row['cell']:<18} {row['peer']:<11} {runs:>4} "
            f"{_fmt(row.get('ratio'), '.2f'):>15} {_fmt(row.get('r429'), '.0f'):>11} "
            f"{_fmt(row.get('max_in_window'), '.0f'):>11} "
            f"{_fmt(row.get('cpu_ms_per_req'), '.2f'):>12}  "
            f"{_fmt(row.get('server_jobs_per_s'), '.0f'):>11} "
            f"{_fmt(row.get('peak_rss_mb'), '.0f'):>11}"
        )
    lines.append(
        "runs: complete runs (!N: N more timed out or did not finish every job; they "
        "are left out of the figures except jobs/s, while it ran, and RSS)"
    )
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    def git(*a: str) -> str:
        try:
            return subprocess.run(
                ["git", *a], cwd=ROOT, capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "nproc": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_rev": git("rev-parse", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain")),
        "loadavg_start": os.getloadavg(),
    }


# --- main -----------------------------------------------------------------------------------


def _on_term(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--cells",
        help="comma-separated cells, each with every peer of --peers, or 'all' "
        "(default: every cell; the hog and no-limit cells with ours only; "
        "see --list)",
    )
    ap.add_argument("--peers", help=f"comma-separated peers (default: {','.join(PEERS)})")
    ap.add_argument("--repeat", type=int, default=5, help="runs of ours per cell (default 5)")
    ap.add_argument(
        "--peer-repeat",
        type=int,
        default=None,
        help="runs of each other peer per cell (default 1, so that the default "
        "matrix takes 60-90 minutes; 5 of everything, --cells all "
        "--peer-repeat 5, takes about 5 hours)",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: cells {','.join(QUICK_CELLS)} at {QUICK_SCALE:g} of the "
        "size, once each (a few minutes)",
    )
    ap.add_argument(
        "--scale",
        type=float,
        default=None,
        help=f"multiply every cell's job count (default 1; --quick: {QUICK_SCALE:g})",
    )
    ap.add_argument(
        "--timeout-factor",
        type=float,
        default=10.0,
        help="kill a run after this many times its expected bound (default 10)",
    )
    ap.add_argument(
        "--flood-timeout-factor",
        type=float,
        default=4.0,
        help="the same for the no-limit cells, whose expected time is the jobs at "
        "the 1,000/s target (default 4: a run below 250/s is stopped; its "
        "rate so far is still reported)",
    )
    ap.add_argument(
        "--ours-args",
        default="",
        help="extra options for mavera-tui run, e.g. '--max-in-flight 200'",
    )
    ap.add_argument("--out", help="result file (default bench/results/http-YYYYMMDD-HHMM.json)")
    ap.add_argument("--keep", action="store_true", help="keep job files and logs")
    ap.add_argument("--list", action="store_true", help="list cells and peers and exit")
    ap.add_argument(
        "--dry-run", action="store_true", help="print how many runs and roughly how long, and exit"
    )
    a = ap.parse_args(argv)
    if a.repeat < 1 or (a.peer_repeat is not None and a.peer_repeat < 0):
        ap.error("--repeat must be at least 1 and --peer-repeat at least 0")
    return a


def _choose(a: argparse.Namespace, cells: dict[str, Cell]) -> tuple[list[str], list[str]] | None:
    """The cells and peers to run (--cells, --peers); None after saying what was wrong."""
    default = QUICK_CELLS if a.quick else DEFAULT_CELLS
    if a.cells == "all":
        names = list(DEFAULT_CELLS)
    else:
        names = a.cells.split(",") if a.cells else [n for n in default if n in cells]
    bad = [n for n in names if n not in cells]
    if bad:
        print(f"bench_http: unknown cell(s) {', '.join(bad)}; see --list", file=sys.stderr)
        return None
    peers = a.peers.split(",") if a.peers else list(PEERS)
    badp = [p for p in peers if p not in PEERS]
    if badp:
        print(
            f"bench_http: unknown peer(s) {', '.join(badp)}; known: {', '.join(PEERS)}",
            file=sys.stderr,
        )
        return None
    if "aiolimiter" in peers:
        try:
            import aiolimiter  # noqa: F401
        except ImportError:
            print(
                "bench_http: the aiolimiter peer needs the bench extra: "
                "pip install -e '.[bench]' (or leave it out with --peers)",
                file=sys.stderr,
            )
            return None
    return names, peers


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    scale = a.scale if a.scale is not None else (QUICK_SCALE if a.quick else 1.0)
    cells = _cells(scale)
    if a.list:
        for c in cells.values():
            print(f"{c.name:<18} {c.about}  (peers: {','.join(c.peers)})")
        print(f"peers: {', '.join(PEERS)}")
        return 0
    chosen = _choose(a, cells)
    if chosen is None:
        return 2
    names, peers = chosen
    repeat = 1 if a.quick and a.repeat == 5 else a.repeat
    peer_repeat = a.peer_repeat if a.peer_repeat is not None else 1
    ours_args = shlex.split(a.ours_args)

    plan: list[tuple[int, Cell, str]] = []
    for rep in range(max(repeat, peer_repeat)):
        for name in names:
            cell = cells[name]
            for peer in peers:
                # A cell's own peer list (the flood cells: ours only) is the default;
                # naming cells with --cells runs every peer of --peers on them.
                if (a.cells or peer in cell.peers) and rep < (
                    repeat if peer == "ours" else peer_repeat
                ):
                    plan.append((rep, cell, peer))
    if not plan:
        print(
            "bench_http: nothing to run (check --cells/--peers: the flood cells run only "
            "ours unless listed with --cells)",
            file=sys.stderr,
        )
        return 2
    # Seen on a 2-core machine: ours and the peers at basic take 1.1-2x the bound; the peers
    # that hand hundreds of requests to httpx at once take 2.5-6x it at enterprise.
    eta = sum(
        max(8.0, (1.5 if p == "ours" or c.limit < 600 else 3.5) * c.expected_bound()) + 3.0
        for _, c, p in plan
    )
    print(
        f"{len(plan)} runs, roughly {eta / 60:.0f} min (window {WINDOW:g} s, latencies "
        f"x{TIME_SCALE:g}); results to bench/results/",
        flush=True,
    )
    if a.dry_run:
        return 0

    # Both as KeyboardInterrupt, also when started with SIGINT ignored (a background job).
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGINT, _on_term)
    atexit.register(stop_all)
    work = Path(tempfile.mkdtemp(prefix="bench-http-"))
    job_files: dict[str, tuple[Path, int]] = {}
    for name in names:
        jobs = cells[name].make_jobs(seed=1)
        path = work / f"{name}.jsonl"
        path.write_text("".join(json.dumps(j) + "\n" for j in jobs))
        job_files[name] = (path, len(jobs))
    facts = machine()
    started = dt.datetime.now(dt.UTC)
    out_path = (
        Path(a.out)
        if a.out
        else (
            ROOT
            / "bench"
            / "results"
            / f"http-{'quick-' if a.quick else ''}{started:%Y%m%d-%H%M}.json"
        )
    )
    runs: list[dict[str, Any]] = []
    interrupted = False
    try:
        for i, (rep, cell, peer) in enumerate(plan, 1):
            path, n = job_files[cell.name]
            r = run_one(
                cell,
                peer,
                rep,
                work,
                path,
                n,
                (a.timeout_factor, a.flood_timeout_factor),
                ours_args,
            )
            runs.append(r)
            print(f"[{i}/{len(plan)}] {_line(r)}", flush=True)
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: stopping every child and writing what ran", file=sys.stderr)
    finally:
        stop_all()
    summary = aggregate(runs)
    facts["loadavg_end"] = os.getloadavg()
    doc = {
        "started": started.isoformat(timespec="seconds"),
        "machine": facts,
        "settings": {
            "window_s": WINDOW,
            "time_scale": TIME_SCALE,
            "foreign_share": FOREIGN_SHARE,
            "scale": scale,
            "repeat": repeat,
            "peer_repeat": peer_repeat,
            "timeout_factor": a.timeout_factor,
            "flood_timeout_factor": a.flood_timeout_factor,
            "ours_args": ours_args,
            "argv": sys.argv[1:],
            "interrupted": interrupted,
        },
        "cells": {
            n: {
                "about": cells[n].about,
                "limit": cells[n].limit,
                "limit_left": cells[n].limit_left,
                "jobs": cells[n].jobs,
                "foreign_rpm": cells[n].foreign_rpm,
                "hog": cells[n].hog,
                "expected_bound_s": cells[n].expected_bound(),
            }
            for n in names
        },
        "summary": summary,
        "runs": runs,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(doc, indent=1) + "\n")
    print()
    print(table(summary))
    print(f"\nwritten: {out_path}")
    if a.keep:
        print(f"job files and logs kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 130 if interrupted else 0


def _line(r: dict[str, Any]) -> str:
    head = f"{r['cell']} {r['peer']} #{r['rep'] + 1}:"
    if r.get("error"):
        return f"{head} ERROR {r['error']}"
    parts = []
    if r.get("timed_out"):
        parts.append(
            f"TIMED OUT after {r['timeout_s']:.0f} s "
            f"({r.get('server_jobs_per_s') or 0:.0f} jobs/s while it ran)"
        )
    if "ratio" in r:
        parts.append(
            f"makespan {r['makespan_s']:.1f} s / bound {r['bound_s']:.1f} s = {r['ratio']:.2f}"
        )
    elif "makespan_s" in r:
        parts.append(f"makespan {r['makespan_s']:.1f} s")
    parts.append(
        f"ok {r.get('ok', 0)}/{r.get('jobs', 0)}  429s {r.get('r429', 0)}  "
        f"max in W {r.get('max_in_window', 0)}"
    )
    if r.get("max_foreign_in_window"):
        parts.append(f"foreign {r['max_foreign_in_window']}")
    if "cpu_ms_per_req" in r:
        parts.append(f"cpu {r['cpu_ms_per_req']:.2f} ms/req")
    if r.get("jobs_per_s") and r["cell"].startswith("flood"):
        parts.append(f"{r['jobs_per_s']:.0f} jobs/s  RSS {r.get('peak_rss_mb', 0):.0f} MB")
    return f"{head} " + "  ".join(parts)


if __name__ == "__main__":
    raise SystemExit(main())
