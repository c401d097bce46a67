"""QA: three `mavera-tui run --shared` processes and a `record --shared` on one key of the
indie server, judged by the server's own records.

Starts ``bench/indie_server.py`` (basic tier by default, window 6 s, latencies x0.1), a
``redis-server`` on a free loopback port (no persistence), ``mavera-tui record --shared``
(no jobs of its own: it archives the fleet's ledger stream), then three ``run --shared``
processes with a third of a realistic batch each. When they are done the recorder gets
SIGTERM, and ``mavera-tui report --json`` on its recording gives the fleet's totals. Each
is compared with the server's records: requests, credits charged, window and concurrency
429s, 402s, the most counted in a window; per process, the summaries' credits and
requests; the makespan over one client's bound for the whole batch.

Run::

    .venv/bin/python bench/indie_fleet.py [--jobs 360] [--repeat 2] [--hog] [--credits N]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import indie_check as IC  # noqa: E402
from bench_shared import start_redis  # noqa: E402

PROCS = 3


def fleet_run(a: argparse.Namespace, rep: int, tmp: Path) -> dict[str, Any]:
    out = tmp / f"fleet-{rep}{'-hog' if a.hog else ''}"
    out.mkdir(parents=True, exist_ok=True)
    seed = 5000 + rep
    case = {"tier": a.tier, "jobs": a.jobs}
    lines, _ = IC.workload(case, seed)
    W = a.window_seconds
    srv_args = [
        "--tier",
        a.tier,
        "--window-seconds",
        str(W),
        "--time-scale",
        str(a.time_scale),
        "--seed",
        str(seed),
        *([] if a.credits is None else ["--credits", str(a.credits)]),
        *a.srv,
    ]
    srv, port = IC.start_server(srv_args, out)
    redis_p, redis_url = start_redis(out)
    base = f"http://127.0.0.1:{port}/api/v1"
    env = dict(os.environ, MAVERA_API_KEY="mvra_test_fake_key_qa_0001")
    common = ["--base-url", base, "--window-seconds", str(W), "--shared", redis_url]
    hog_p = None
    rec_p = None
    procs: list[subprocess.Popen[str]] = []
    try:
        rec_cmd = [
            IC.TOOL,
            "record",
            "--db",
            str(out / "rec.db"),
            "--interval",
            "0.5",
            "--grace",
            "5",
            "--host-id",
            "recorder",
            *common,
        ]
        rec_p = subprocess.Popen(
            rec_cmd,
            env=env,
            stdout=open(out / "rec.out", "w"),
            stderr=open(out / "rec.err", "w"),
            text=True,
        )
        time.sleep(2.0)  # the recorder joins the fleet first
        if a.hog:
            hog_p = subprocess.Popen(["taskset", "-c", "0", IC.PY, "-c", "while True: pass"])
        t0 = time.time()
        for i in range(PROCS):
            f = out / f"jobs-{i}.jsonl"
            f.write_text("\n".join(lines[i::PROCS]) + "\n")
            cmd = [
                IC.TOOL,
                "run",
                str(f),
                *common,
                "--host-id",
                f"qa-{i}",
                "--summary",
                str(out / f"summary-{i}.json"),
                "--db",
                str(out / f"run-{i}.db"),
                "--quiet",
                *a.tool,
            ]
            procs.append(
                subprocess.Popen(
                    cmd,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=open(out / f"run-{i}.err", "w"),
                    text=True,
                )
            )
        rcs = []
        for p in procs:
            try:
                p.communicate(timeout=600)
            except subprocess.TimeoutExpired:
                p.kill()
                p.communicate()
            rcs.append(p.returncode)
        wall = time.time() - t0
        time.sleep(2.0)  # the recorder archives the last entries
        rec_p.send_signal(signal.SIGTERM)
        try:
            rec_p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            rec_p.kill()
            rec_p.wait()
        dump = IC.get_json(f"http://127.0.0.1:{port}/__records")
    finally:
        if hog_p:
            hog_p.kill()
            hog_p.wait()
        for p in procs + ([rec_p] if rec_p else []):
            if p.poll() is None:
                p.kill()
                p.wait()
        srv.terminate()
        srv.wait(timeout=10)
        redis_p.terminate()
        redis_p.wait(timeout=10)
    (out / "records.json").write_text(json.dumps(dump))
    rep_p = subprocess.run(
        [IC.TOOL, "report", str(out / "rec.db"), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    try:
        report = json.loads(rep_p.stdout)
    except ValueError:
        report = {"error": rep_p.stderr.strip()[:300]}
    sums = []
    for i in range(PROCS):
        try:
            sums.append(json.loads((out / f"summary-{i}.json").read_text()))
        except (OSError, ValueError):
            sums.append({})
    res = IC.analyse(dump, {}, {}, {})
    fleet = report.get("fleet") or {}
    res.update(
        rep=rep,
        hog=a.hog,
        rcs=rcs,
        rec_rc=rec_p.returncode if rec_p else None,
        wall=round(wall, 2),
        dir=str(out),
        summaries=[
            {
                k: x.get(k)
                for k in (
                    "jobs",
                    "succeeded",
                    "credits_used",
                    "requests",
                    "responses_429",
                    "count_402",
                    "balance_read",
                    "balance_end",
                    "window_kind",
                )
            }
            for x in sums
        ],
        fleet=fleet,
        report_error=report.get("error"),
    )
    res["findings"] = _judge(res, sums, rcs, fleet, a)
    return res


def _judge(
    res: dict[str, Any],
    sums: list[dict[str, Any]],
    rcs: list[int | None],
    fleet: dict[str, Any],
    a: argparse.Namespace,
) -> list[str]:
    """The fleet run's discrepancies with the server's records (empty: all agree)."""
    s = res["server"]
    f = IC._judge_limits(res | {"tool": {}}, IC.TIER_L[a.tier])
    tot = {
        "credits": sum(x.get("credits_used") or 0 for x in sums),
        "requests": sum(x.get("requests") or 0 for x in sums),
        "succeeded": sum(x.get("succeeded") or 0 for x in sums),
        "429": sum(x.get("responses_429") or 0 for x in sums),
        "402": sum(x.get("count_402") or 0 for x in sums),
    }
    res["summaries_total"] = tot
    if tot["credits"] != s["charged"]:
        f.append(f"summaries' credits {tot['credits']} != server charged {s['charged']}")
    if tot["succeeded"] != a.jobs:
        f.append(f"succeeded {tot['succeeded']} of {a.jobs}")
    if any(rc != 0 for rc in rcs):
        f.append(f"exit statuses {rcs}")
    if not fleet:
        f.append(f"report has no fleet totals ({res.get('report_error') or 'not recorded'})")
    else:
        n429 = s["window_429"] + s["cap_429"]
        for name, theirs, ours in (
            ("requests", fleet.get("requests_total"), s["requests"]),
            ("credits", fleet.get("credits_used_total"), s["charged"]),
            ("429s", fleet.get("429_count"), n429),
            ("402s", fleet.get("402_count"), s["402"]),
        ):
            if theirs != ours:
                f.append(f"fleet {name} {theirs} != server {ours}")
        if fleet.get("credits_unknown"):
            f.append(f"fleet credits_unknown {fleet['credits_unknown']} (no timeout or drop)")
    return f


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=360)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--tier", default="basic")
    ap.add_argument("--credits", type=int, default=None)
    ap.add_argument("--hog", action="store_true")
    ap.add_argument("--window-seconds", type=float, default=6.0)
    ap.add_argument("--time-scale", type=float, default=0.1)
    ap.add_argument("--srv", nargs="*", default=[], help="extra indie_server flags")
    ap.add_argument("--tool", nargs="*", default=[], help="extra run flags")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="indie-fleet-"))
    results = []
    for rep in range(a.repeat):
        r = fleet_run(a, rep, tmp)
        results.append(r)
        s = r["server"]
        print(
            f"rep {rep} hog {'y' if a.hog else 'n'} rcs {r['rcs']} rec {r['rec_rc']}: server "
            f"req {s['requests']} w429 {s['window_429']} c429 {s['cap_429']} 402 {s['402']} "
            f"maxW {s['max_in_window_all']} charged {s['charged']} | summaries "
            f"{r['summaries_total']} | fleet {json.dumps(r['fleet'])[:300]} | mk "
            f"{s['makespan_jobs']} bound {s['bound']} ratio {r['ratio']}  "
            f"{'; '.join(r['findings']) or 'ok'}",
            flush=True,
        )
    if a.out:
        Path(a.out).write_text(json.dumps({"runs": results}, indent=1))
    print(f"run dirs under {tmp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
