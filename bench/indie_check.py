"""QA: `mavera-tui run` against bench/indie_server.py, judged by the server's own records.

Each case starts the indie server in its own process (loopback, free port), generates a job file
(seeded, different per repeat), runs ``mavera-tui run JOBS --base-url ... --window-seconds W
--summary S --db D`` as its own process with a fake MAVERA_API_KEY, then compares the server's
own records with the tool's summary, its --db ledger and ``mavera-tui report --json``:

- 429s on the key (window and concurrency apart; the target is 0 alone on the key);
- most requests the server saw in any window of W seconds (never over the limit);
- most requests in flight per capped endpoint as the server saw them (never over the cap);
- credits: the summary's credits_used, the ledger's and the report's, against what the server
  charged;
- requests: the summary's, the ledger's against the server's count;
- makespan against the lower bound: with N requests, L per window W, latencies sorted
  ascending, max over j of (j*W + the (N-j*L)-th smallest latency), and for each capped
  endpoint the sum of its latencies over its cap.

Run::

    .venv/bin/python bench/indie_check.py --list
    .venv/bin/python bench/indie_check.py --cases basic,ent --repeat 3 [--hog]
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable
TOOL = str(Path(PY).parent / "mavera-tui")
CAPS = {"/mave/chat": 10, "/focus-groups": 5, "/video-analyses": 3}
TIER_L = {"starter": 60, "basic": 120, "professional": 240, "enterprise": 600}


# ------------------------------------------------------------------ workloads


def job_line(rng: random.Random, i: int, kind: str | None = None) -> dict[str, Any]:
    """One realistic job: the mix is weighted toward cheap calls, as an integration would be."""
    kinds = ["resp", "mave", "fg", "video", "persona", "gen", "news"]
    weights = [45, 20, 7, 4, 8, 8, 8]
    k = kind or rng.choices(kinds, weights)[0]
    jid = f"{k}-{i}"
    if k == "resp":
        return {
            "id": jid,
            "method": "POST",
            "path": "/responses",
            "body": {"model": "mavera-1", "input": "x" * rng.randint(5, 1500)},
        }
    if k == "mave":
        cx = rng.choice(["simple", "simple", "moderate", "complex"])
        return {
            "id": jid,
            "method": "POST",
            "path": "/mave/chat",
            "body": {"message": f"question {i}", "complexity": cx},
        }
    if k == "fg":
        return {
            "id": jid,
            "method": "POST",
            "path": "/focus-groups",
            "body": {
                "sample_size": rng.choice([10, 25, 50, 100]),
                "questions": [f"q{n}" for n in range(rng.randint(1, 8))],
            },
        }
    if k == "video":
        return {
            "id": jid,
            "method": "POST",
            "path": "/video-analyses",
            "body": {"video_seconds": rng.choice([20, 60, 120, 170])},
        }
    if k == "persona":
        return {"id": jid, "method": "GET", "path": "/personas"}
    if k == "persona-one":
        # Credits guide: "/personas (GET) 0 credits, Free to list/retrieve": one persona.
        return {"id": jid, "method": "GET", "path": f"/personas/p{rng.randint(1, 40)}"}
    if k == "gen":
        return {
            "id": jid,
            "method": "POST",
            "path": "/generations",
            "body": {"template": "blog", "prompt": f"p{i}"},
        }
    return {
        "id": jid,
        "method": "POST",
        "path": f"/news/stories/s{i}/analyze",
        "body": {"depth": rng.choice(["basic", "deep"])},
    }


BAD_LINES = [
    "{not json",
    json.dumps({"id": "bad-nopath", "method": "POST", "body": {}}),
    json.dumps({"id": "bad-method", "method": "FETCH", "path": "/responses", "body": {}}),
    json.dumps(
        {
            "id": "bad-fg",
            "method": "POST",
            "path": "/focus-groups",
            "body": {"sample_size": -5, "questions": ["a"]},
        }
    ),
    json.dumps(["a", "list"]),
]


def workload(case: dict[str, Any], seed: int) -> tuple[list[str], int]:
    """(lines of the job file, number of bad lines) for a case and a repeat's seed."""
    rng = random.Random(seed)
    n = case["jobs"]
    kind = case.get("kind")
    lines = [json.dumps(job_line(rng, i, kind)) for i in range(n)]
    bad = 0
    if case.get("bad"):
        for b in BAD_LINES:
            lines.insert(rng.randint(0, len(lines)), b)
            bad += 1
    return lines, bad


CASES: dict[str, dict[str, Any]] = {
    "basic": {"tier": "basic", "jobs": 360, "desc": "basic tier, realistic mix"},
    "ent": {
        "tier": "enterprise",
        "jobs": 1500,
        "credits": 1_000_000,
        "desc": "enterprise tier, realistic mix",
    },
    "burst": {"tier": "basic", "jobs": 600, "kind": "resp", "desc": "600 responses at once, basic"},
    "caps": {
        "tier": "enterprise",
        "jobs": 120,
        "kind": None,
        "mix": "capped",
        "desc": "capped endpoints only, enterprise",
    },
    "credits": {
        "tier": "basic",
        "jobs": 200,
        "credits": 2500,
        "tool": ["--credit-wait", "8", "--credit-poll", "2"],
        "desc": "runs out of credits (2,500), nothing added",
    },
    "topup": {
        "tier": "basic",
        "jobs": 200,
        "credits": 2500,
        "topup_after": 6.0,
        "topup": 30000,
        "tool": ["--credit-wait", "40", "--credit-poll", "2"],
        "desc": "runs out, credits bought 6 s later",
    },
    "malformed": {"tier": "basic", "jobs": 80, "bad": True, "desc": "5 bad lines among 80"},
    # The docs' vague points, read the other way (the tool must cope with each).
    "v-before": {
        "tier": "basic",
        "jobs": 360,
        "srv": ["--remaining", "before"],
        "desc": "Remaining counted before this request",
    },
    "v-resetnow": {
        "tier": "basic",
        "jobs": 360,
        "srv": ["--reset", "now", "--reset-format", "float"],
        "desc": "Reset = now+W, float",
    },
    "v-fixed": {
        "tier": "basic",
        "jobs": 360,
        "srv": ["--window-mode", "fixed"],
        "desc": "fixed calendar windows, Reset = next boundary",
    },
    "v-fixed-burst": {
        "tier": "basic",
        "jobs": 600,
        "kind": "resp",
        "srv": ["--window-mode", "fixed"],
        "desc": "600 responses at once, fixed calendar windows (the window alone bounds it)",
    },
    "v-zero": {
        "tier": "basic",
        "jobs": 200,
        "credits": 2500,
        "srv": ["--credit-mode", "zero"],
        "tool": ["--credit-wait", "8", "--credit-poll", "2"],
        "desc": "402 only at balance 0 (last request takes the rest)",
    },
    "v-nocount": {
        "tier": "basic",
        "jobs": 360,
        "srv": ["--cap-code", "plain"],
        "mix": "capped",
        "desc": "capped mix; concurrency 429 code 'rate_limit_exceeded'",
    },
    "v-completion": {
        "tier": "basic",
        "jobs": 200,
        "credits": 2500,
        "srv": ["--charge-at", "completion"],
        "tool": ["--credit-wait", "8", "--credit-poll", "2"],
        "desc": "runs out; credits charged at completion, not arrival",
    },
    "retrieve": {
        "tier": "basic",
        "jobs": 20,
        "kind": "persona-one",
        "desc": "GET /personas/{id} (docs: free to list/retrieve)",
    },
    "fail": {
        "tier": "basic",
        "jobs": 300,
        "srv": ["--fail-rate", "0.05"],
        "desc": "5% of work answered 500 (refunded)",
    },
}


def capped_mix(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        k = rng.choice(["mave", "mave", "fg", "video", "resp"])
        out.append(json.dumps(job_line(rng, i, k)))
    return out


# ------------------------------------------------------------------ analysis


def max_in_window(times: list[float], w: float) -> int:
    """Most of these times inside any half-open interval [t, t+w)."""
    ts = sorted(times)
    best = 0
    for i, t in enumerate(ts):
        j = bisect.bisect_left(ts, t + w)
        best = max(best, j - i)
    return best


def max_in_calendar_window(times: list[float], w: float) -> int:
    """Most of these times inside one calendar window [k*w, (k+1)*w) (a fixed-window
    server's count: it may take L just before a boundary and L more just after)."""
    counts: dict[int, int] = {}
    for t in times:
        k = math.floor(t / w)
        counts[k] = counts.get(k, 0) + 1
    return max(counts.values(), default=0)


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    ev = [(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals]
    ev.sort(key=lambda e: (e[0], e[1]))
    cur = best = 0
    for _, d in ev:
        cur += d
        best = max(best, cur)
    return best


def lower_bound(
    recs: list[dict[str, Any]], limit: int, w: float, calendar_from: float | None = None
) -> float:
    """The makespan no client could beat for these successful requests (see module doc).

    ``calendar_from``: the server counts calendar windows [k*w, (k+1)*w) and the batch's
    first request arrived at this time: the j-th L after the first go at the j-th
    boundary after it (up to a window earlier than a sliding window gives them back)."""
    lats = sorted(r["latency"] for r in recs)
    n = len(lats)
    if n == 0:
        return 0.0
    first_gap = w
    if calendar_from is not None:
        first_gap = (math.floor(calendar_from / w) + 1) * w - calendar_from
    best = lats[-1]
    j = 0
    while n - j * limit > 0:
        k = n - j * limit  # the k-th smallest latency, 1-based
        start = 0.0 if j == 0 else first_gap + (j - 1) * w
        best = max(best, start + lats[k - 1])
        j += 1
    for route, cap in CAPS.items():
        s = sum(r["latency"] for r in recs if r.get("route") == route)
        best = max(best, s / cap)
    return best


def analyse(
    dump: dict[str, Any], summary: dict[str, Any], ledger: dict[str, Any], report: dict[str, Any]
) -> dict[str, Any]:
    cfg = dump["config"]
    L, W = cfg["limit"], cfg["window_seconds"]
    recs = [r for r in dump["records"] if r.get("key")]
    limited = [r for r in recs if r.get("route")]  # requests the window applies to
    w429 = sum(1 for r in limited if r["status"] == 429 and not r["counted"])
    c429 = sum(1 for r in limited if r["status"] == 429 and r["counted"])
    n402 = sum(1 for r in limited if r["status"] == 402)
    charged = sum(r["credits"] for r in recs)
    worked = [
        r for r in limited if r["latency"] > 0 and r["status"] == 200 and r["route"] != "billing"
    ]
    inflight = {}
    for route in CAPS:
        iv = [(r["t"], r["t_end"]) for r in limited if r.get("route") == route and r["latency"] > 0]
        inflight[route] = max_overlap(iv)
    t_first = min((r["t"] for r in recs), default=0.0)
    t_last = max((r.get("t_end") or r["t"] for r in recs), default=0.0)
    job_recs = [r for r in limited if r["route"] != "billing"]
    jt0 = min((r["t"] for r in job_recs), default=0.0)
    jt1 = max((r.get("t_end") or r["t"] for r in job_recs), default=0.0)
    fixed = cfg.get("window_mode") == "fixed"
    bound = lower_bound(worked, L, W, calendar_from=jt0 if fixed else None)
    in_window = max_in_calendar_window if fixed else max_in_window
    mk_server = jt1 - jt0
    out = {
        "server": {
            "requests": len(recs),
            "requests_limited": len(limited),
            "window_429": w429,
            "cap_429": c429,
            "402": n402,
            "status_500": sum(1 for r in limited if r["status"] == 500),
            "charged": charged,
            "max_in_window_all": in_window([r["t"] for r in limited], W),
            "max_in_window_counted": in_window([r["t"] for r in limited if r["counted"]], W),
            "window_mode": cfg.get("window_mode", "sliding"),
            "phase_at_start": round(jt0 % W, 3),
            "max_inflight": inflight,
            "ok_jobs": len(worked),
            "makespan_jobs": round(mk_server, 3),
            "span_all": round(t_last - t_first, 3),
            "bound": round(bound, 3),
            "balance_end": dump["balance"],
        },
        "tool": {
            k: summary.get(k)
            for k in (
                "jobs",
                "succeeded",
                "failed",
                "blocked_preflight",
                "waiting_for_credits",
                "outcome_unknown",
                "not_finished",
                "credits_used",
                "requests",
                "responses_429",
                "count_402",
                "retries",
                "makespan_s",
                "max_in_flight",
                "bad_lines_skipped",
                "balance_end",
                "credits_reconciled",
                "credits_reconcile_note",
                "status_counts",
                "window_kind",
                "balance_read",
            )
        },
        "ledger": ledger,
        "report": {
            k: report.get(k)
            for k in ("429_count", "402_count", "credits_used_total", "requests_by_endpoint")
        },
    }
    out["ratio"] = round(mk_server / bound, 3) if bound else None
    return out


def read_ledger(db: str) -> dict[str, Any]:
    try:
        c = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        rows = c.execute("select status, credits_used, endpoint from ledger").fetchall()
        jobs = dict(c.execute("select state, count(*) from jobs group by state").fetchall())
        # The tool answers an identical GET from its cache: a success with no 2xx of its
        # own in the ledger (after a failed attempt too: a GET that met a 500 and was then
        # answered from the cache has attempts = 1).
        cached = c.execute(
            "select count(*) from jobs j where j.state = 'succeeded' and not exists "
            "(select 1 from ledger l where l.job_id = j.id and l.status between 200 and 299)"
        ).fetchone()[0]
        c.close()
    except sqlite3.Error as e:
        return {"error": str(e)}
    return {
        "rows": len(rows),
        "429": sum(1 for r in rows if r[0] == 429),
        "402": sum(1 for r in rows if r[0] == 402),
        "credits": sum(r[1] or 0 for r in rows),
        "jobs_by_state": jobs,
        "cached": cached,
    }


# ------------------------------------------------------------------ one run


def start_server(args: list[str], out: Path) -> tuple[subprocess.Popen[str], int]:
    p = subprocess.Popen(
        [PY, str(HERE / "indie_server.py"), *args],
        stdout=subprocess.PIPE,
        stderr=open(out / "server.err", "w"),
        text=True,
    )
    assert p.stdout is not None
    line = p.stdout.readline()
    if not line.startswith("PORT "):
        p.kill()
        raise RuntimeError(f"server did not start: {line!r}")
    return p, int(line.split()[1])


def get_json(url: str, method: str = "GET") -> Any:
    req = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def one_run(
    name: str,
    case: dict[str, Any],
    rep: int,
    W: float,
    scale: float,
    hog: bool,
    tmp: Path,
    phase: float | None = None,
) -> dict[str, Any]:
    seed = 1000 * rep + sum(map(ord, name))
    out = tmp / f"{name}-{rep}{'-hog' if hog else ''}"
    out.mkdir(parents=True, exist_ok=True)
    if case.get("mix") == "capped":
        lines, bad = capped_mix(seed, case["jobs"]), 0
    else:
        lines, bad = workload(case, seed)
    jobs = out / "jobs.jsonl"
    jobs.write_text("\n".join(lines) + "\n")
    srv_args = [
        "--tier",
        case["tier"],
        "--window-seconds",
        str(W),
        "--time-scale",
        str(scale),
        "--seed",
        str(seed),
        *case.get("srv", []),
    ]
    if "credits" in case:
        srv_args += ["--credits", str(case["credits"])]
    srv, port = start_server(srv_args, out)
    hog_p = None
    if hog:
        hog_p = subprocess.Popen(["taskset", "-c", "0", PY, "-c", "while True: pass"])
    base = f"http://127.0.0.1:{port}"
    cmd = [
        TOOL,
        "run",
        str(jobs),
        "--base-url",
        f"{base}/api/v1",
        "--window-seconds",
        str(W),
        "--summary",
        str(out / "summary.json"),
        "--db",
        str(out / "run.db"),
        "--quiet",
        *case.get("tool", []),
    ]
    env = dict(os.environ, MAVERA_API_KEY="mvra_test_fake_key_qa_0001")
    if phase is not None:
        # Start the tool at this phase of the calendar window (the server's windows are
        # epoch multiples of W); its first request comes a start-up time later (reported
        # as phase_at_start).
        time.sleep((phase - time.time()) % W)
    t0 = time.time()
    topup_t = None
    try:
        tool = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        if "topup_after" in case:
            time.sleep(case["topup_after"])
            get_json(f"{base}/__topup?credits={case['topup']}", "POST")
            topup_t = time.time()
        try:
            so, se = tool.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            tool.kill()
            so, se = tool.communicate()
        rc = tool.returncode
        wall = time.time() - t0
        dump = get_json(f"{base}/__records")
    finally:
        if hog_p:
            hog_p.kill()
            hog_p.wait()
        srv.terminate()
        srv.wait(timeout=10)
    (out / "records.json").write_text(json.dumps(dump))
    try:
        summary = json.loads((out / "summary.json").read_text())
    except (OSError, ValueError):
        summary = {}
    rep_p = subprocess.run(
        [TOOL, "report", str(out / "run.db"), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    try:
        report = json.loads(rep_p.stdout)
    except ValueError:
        report = {"error": rep_p.stderr.strip()[:300], "rc": rep_p.returncode}
    res = analyse(dump, summary, read_ledger(str(out / "run.db")), report)
    res.update(
        case=name,
        rep=rep,
        hog=hog,
        rc=rc,
        wall=round(wall, 2),
        bad_lines=bad,
        stderr_tail=se.strip().splitlines()[-3:],
        topup_t=topup_t,
        dir=str(out),
        cmd=" ".join(cmd),
        srv_args=srv_args,
    )
    res["findings"] = judge(res, case)
    return res


def judge(r: dict[str, Any], case: dict[str, Any]) -> list[str]:
    """Plain-language discrepancies for one run (empty list: all checks pass)."""
    f = _judge_limits(r, TIER_L[case["tier"]])
    if not r["tool"].get("jobs"):
        return [*f, "no summary written"]
    f += _judge_counts(r)
    s, t = r["server"], r["tool"]
    if t["makespan_s"] and abs(t["makespan_s"] - s["makespan_jobs"]) > 0.5:
        f.append(f"summary makespan {t['makespan_s']} vs server {s['makespan_jobs']}")
    exp_rc = 0 if (t["succeeded"] == t["jobs"] and not r["bad_lines"]) else 1
    if r["rc"] != exp_rc:
        f.append(f"exit status {r['rc']}, expected {exp_rc}")
    cached = r["ledger"].get("cached") or 0
    if t["succeeded"] != s["ok_jobs"] + cached:
        f.append(
            f"summary succeeded {t['succeeded']} != server 200s on jobs {s['ok_jobs']}"
            f" + {cached} served from cache"
        )
    if r["ratio"] and r["ratio"] > 1.25 and not case.get("credits"):
        f.append(f"makespan/bound {r['ratio']}")
    if t.get("blocked_preflight") and s["balance_end"] > 0:
        f.append(
            f"{t['blocked_preflight']} refused by pre-flight with {s['balance_end']} "
            "credits left on the server"
        )
    return f


def _judge_limits(r: dict[str, Any], limit: int) -> list[str]:
    s, f = r["server"], []
    if s["window_429"]:
        f.append(f"{s['window_429']} window 429s alone on the key")
    if s["cap_429"]:
        f.append(f"{s['cap_429']} concurrency 429s")
    if s["max_in_window_all"] > limit:
        f.append(f"{s['max_in_window_all']} requests in one window > limit {limit}")
    for route, cap in CAPS.items():
        if s["max_inflight"][route] > cap:
            f.append(f"{route} {s['max_inflight'][route]} in flight > cap {cap}")
    mif = r["tool"].get("max_in_flight") or {}
    for route, key in (
        ("/mave/chat", "mave"),
        ("/focus-groups", "focus_groups"),
        ("/video-analyses", "video_analyses"),
    ):
        if key in mif and mif[key] > CAPS[route]:
            f.append(f"tool says {key} max in flight {mif[key]} > cap")
    return f


def _judge_counts(r: dict[str, Any]) -> list[str]:
    s, t, led, rep = r["server"], r["tool"], r["ledger"], r["report"]
    n429 = s["window_429"] + s["cap_429"]
    pairs = [
        ("summary credits_used", t["credits_used"], "server charged", s["charged"]),
        ("ledger credits", led.get("credits"), "server charged", s["charged"]),
        ("report credits", rep.get("credits_used_total"), "server charged", s["charged"]),
        ("summary requests", t["requests"], "server saw", s["requests"]),
        ("ledger rows", led.get("rows"), "server saw", s["requests"]),
        ("summary 429s", t["responses_429"], "server", n429),
        ("report 429s", rep.get("429_count"), "server", n429),
        ("summary 402s", t["count_402"], "server", s["402"]),
        ("bad_lines_skipped", t["bad_lines_skipped"], "written", r["bad_lines"]),
    ]
    f = [f"{a} {x} != {b} {y}" for a, x, b, y in pairs if x != y]
    if t["balance_end"] is not None and t["balance_end"] != s["balance_end"]:
        f.append(f"summary balance_end {t['balance_end']} != server {s['balance_end']}")
    return f


# ------------------------------------------------------------------ the proxy (openai SDK)


def _free_port() -> int:
    import socket

    with socket.socket() as so:
        so.bind(("127.0.0.1", 0))
        return int(so.getsockname()[1])


async def _clients(base: str, n: int, seed: int) -> list[dict[str, Any]]:
    """n concurrent calls through the OpenAI SDK (no SDK retries: the proxy must not 429)."""
    import asyncio

    import httpx
    import openai

    rng = random.Random(seed)
    client = openai.AsyncOpenAI(
        base_url=base, api_key="mvra_test_fake_key_qa_0001", max_retries=0, timeout=300
    )
    out: list[dict[str, Any]] = []

    async def one(i: int) -> None:
        k = rng.choices(["resp", "mave", "fg", "video"], [80, 12, 5, 3])[0]
        t = time.time()
        try:
            if k == "resp":
                r = await client.responses.create(model="mavera-1", input=f"hello {i}")
                credits = getattr(r.usage, "credits_used", None) if r.usage else None
                out.append({"k": k, "status": 200, "credits": credits, "t": t})
                return
            job = job_line(rng, i, k)
            raw = await client.post(job["path"], body=job["body"], cast_to=httpx.Response)
            out.append(
                {
                    "k": k,
                    "status": raw.status_code,
                    "credits": raw.json().get("usage", {}).get("credits_used"),
                    "t": t,
                }
            )
        except openai.APIStatusError as e:
            out.append(
                {
                    "k": k,
                    "status": e.status_code,
                    "credits": None,
                    "t": t,
                    "gov": e.response.headers.get("X-Mavera-Governor"),
                }
            )
        except openai.APIError as e:
            out.append({"k": k, "status": f"error {type(e).__name__}", "credits": None, "t": t})

    await asyncio.gather(*(one(i) for i in range(n)))
    await client.close()
    return out


def proxy_run(
    n: int, rep: int, W: float, scale: float, hog: bool, tmp: Path, tier: str = "basic"
) -> dict[str, Any]:
    """`mavera-tui proxy` between n concurrent OpenAI-SDK calls and the indie server."""
    import asyncio
    import socket

    out = tmp / f"proxy-{n}-{rep}{'-hog' if hog else ''}"
    out.mkdir(parents=True, exist_ok=True)
    seed = 7000 + rep
    srv, port = start_server(
        [
            "--tier",
            tier,
            "--window-seconds",
            str(W),
            "--time-scale",
            str(scale),
            "--seed",
            str(seed),
        ],
        out,
    )
    pport = _free_port()
    env = dict(os.environ, MAVERA_API_KEY="mvra_test_fake_key_qa_0001")
    cmd = [
        TOOL,
        "proxy",
        "--listen",
        f"127.0.0.1:{pport}",
        "--base-url",
        f"http://127.0.0.1:{port}/api/v1",
        "--window-seconds",
        str(W),
        "--db",
        str(out / "proxy.db"),
    ]
    px = subprocess.Popen(
        cmd, env=env, stdout=open(out / "proxy.out", "w"), stderr=open(out / "proxy.err", "w")
    )
    hog_p = subprocess.Popen(["taskset", "-c", "0", PY, "-c", "while True: pass"]) if hog else None
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", pport), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        t0 = time.time()
        calls = asyncio.run(_clients(f"http://127.0.0.1:{pport}/api/v1", n, seed))
        wall = time.time() - t0
        dump = get_json(f"http://127.0.0.1:{port}/__records")
    finally:
        if hog_p:
            hog_p.kill()
            hog_p.wait()
        px.terminate()
        try:
            px.wait(timeout=30)
        except subprocess.TimeoutExpired:
            px.kill()
        srv.terminate()
        srv.wait(timeout=10)
    (out / "records.json").write_text(json.dumps(dump))
    res = analyse(dump, {}, read_ledger(str(out / "proxy.db")), {})
    statuses: dict[str, int] = {}
    for c in calls:
        statuses[str(c["status"])] = statuses.get(str(c["status"]), 0) + 1
    seen = sum(c["credits"] or 0 for c in calls)
    s = res["server"]
    f = _judge_limits(res | {"tool": {}}, TIER_L[tier])
    if seen != s["charged"]:
        f.append(f"clients saw credits_used {seen} != server charged {s['charged']}")
    if res["ledger"].get("credits") != s["charged"]:
        f.append(f"proxy ledger credits {res['ledger'].get('credits')} != server {s['charged']}")
    if statuses.get("200", 0) != n:
        f.append(f"client statuses {statuses}")
    res.update(
        case=f"proxy-{n}",
        rep=rep,
        hog=hog,
        rc=px.returncode,
        wall=round(wall, 2),
        client_statuses=statuses,
        client_credits=seen,
        cmd=" ".join(cmd),
        dir=str(out),
        findings=f,
    )
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="basic,ent,burst,caps,credits,topup,malformed")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--hog", choices=["no", "yes", "both"], default="no")
    ap.add_argument("--window-seconds", type=float, default=6.0)
    ap.add_argument("--time-scale", type=float, default=0.1)
    ap.add_argument("--out", default=None, help="results JSON (default bench/results/indie-*)")
    ap.add_argument("--list", action="store_true")
    ap.add_argument(
        "--jobs",
        type=int,
        default=0,
        help="override each case's number of jobs (e.g. 240: an exact multiple of the limit)",
    )
    ap.add_argument(
        "--tool",
        nargs="*",
        default=[],
        help="extra `run` flags for every case, e.g. --tool=--balance-read=start",
    )
    ap.add_argument(
        "--phase",
        type=float,
        default=None,
        help="start each tool run at this many seconds into the (epoch-aligned) window",
    )
    ap.add_argument(
        "--proxy",
        type=int,
        default=0,
        help="instead: N concurrent OpenAI-SDK calls through mavera-tui proxy",
    )
    a = ap.parse_args()
    if a.list:
        for k, c in CASES.items():
            print(f"{k:12} {c['desc']}")
        return 0
    names = a.cases.split(",")
    for n in names:
        if n not in CASES:
            print(f"unknown case {n!r}; see --list", file=sys.stderr)
            return 2
    hogs = {"no": [False], "yes": [True], "both": [False, True]}[a.hog]
    tmp = Path(tempfile.mkdtemp(prefix="indie-"))
    if a.proxy:
        return _main_proxy(a, hogs, tmp)
    results = []
    hdr = (
        f"{'case':11} {'rep':>3} {'hog':>3} {'rc':>2} {'jobs':>5} {'ok':>5} {'w429':>4} "
        f"{'c429':>4} {'402':>4} {'maxW/L':>8} {'inflt m/f/v':>11} {'cred srv/tool':>13} "
        f"{'mk':>6} {'bound':>6} {'ratio':>5} {'window':>8} {'b.read':>6} {'phase':>5}  findings"
    )
    print(hdr, flush=True)
    for n in names:
        for hog in hogs:
            for rep in range(a.repeat):
                case = dict(CASES[n], jobs=a.jobs) if a.jobs else dict(CASES[n])
                case["tool"] = [*case.get("tool", []), *a.tool]
                r = one_run(n, case, rep, a.window_seconds, a.time_scale, hog, tmp, a.phase)
                results.append(r)
                s, t = r["server"], r["tool"]
                mi = s["max_inflight"]
                L = TIER_L[CASES[n]["tier"]]
                print(
                    f"{n:11} {rep:>3} {'y' if hog else 'n':>3} {r['rc']:>2} "
                    f"{t.get('jobs') or 0:>5} {t.get('succeeded') or 0:>5} "
                    f"{s['window_429']:>4} {s['cap_429']:>4} {s['402']:>4} "
                    f"{s['max_in_window_all']:>4}/{L:<3} "
                    f"{mi['/mave/chat']:>3}/{mi['/focus-groups']}/{mi['/video-analyses']:<5} "
                    f"{s['charged']:>6}/{t.get('credits_used')!s:<6} "
                    f"{s['makespan_jobs']:>6.1f} {s['bound']:>6.1f} {r['ratio'] or 0:>5.2f} "
                    f"{t.get('window_kind') or '-':>8} {t.get('balance_read') or '-':>6} "
                    f"{s['phase_at_start']:>5.2f}  "
                    f"{'; '.join(r['findings']) or 'ok'}",
                    flush=True,
                )
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    path = Path(a.out) if a.out else HERE / "results" / f"indie-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {"window_seconds": a.window_seconds, "time_scale": a.time_scale, "runs": results},
            indent=1,
        )
    )
    print(f"results: {path}  (run dirs under {tmp})")
    return 0


def _main_proxy(a: argparse.Namespace, hogs: list[bool], tmp: Path) -> int:
    results = []
    for hog in hogs:
        for rep in range(a.repeat):
            r = proxy_run(a.proxy, rep, a.window_seconds, a.time_scale, hog, tmp)
            results.append(r)
            s = r["server"]
            mi = s["max_inflight"]
            print(
                f"proxy-{a.proxy} rep {rep} hog {'y' if hog else 'n'}: server w429 "
                f"{s['window_429']} c429 {s['cap_429']} maxW {s['max_in_window_all']} "
                f"inflight {mi['/mave/chat']}/{mi['/focus-groups']}/{mi['/video-analyses']} "
                f"charged {s['charged']} clients {r['client_credits']} statuses "
                f"{r['client_statuses']} mk {s['makespan_jobs']} bound {s['bound']} ratio "
                f"{r['ratio']}  {'; '.join(r['findings']) or 'ok'}",
                flush=True,
            )
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    path = Path(a.out) if a.out else HERE / "results" / f"indie-proxy-{stamp}.json"
    path.write_text(json.dumps({"runs": results}, indent=1))
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
