"""The headless CLI: estimate, run on the embedded simulator (fast: a 2 s window and latencies
scaled by 0.01), exit statuses, one-line errors, the --summary file; and one run over real
loopback HTTP against the simulator served by uvicorn."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from mavera_tui import cli

ROOT = Path(__file__).resolve().parents[1]
SUMMARY_KEYS = {
    "jobs",
    "succeeded",
    "failed",
    "blocked_preflight",
    "waiting_for_credits",
    "credits_used",
    "credits_estimated",
    "status_counts",
    "retries",
    "makespan_s",
    "max_in_flight",
}
FAST = ["--window-seconds", "2", "--sim-time-scale", "0.01"]


@pytest.fixture
def no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAVERA_API_KEY", raising=False)
    monkeypatch.delenv("MAVERA_BASE_URL", raising=False)


def job(
    i: int | str, path: str = "/responses", body: dict[str, Any] | None = None, method: str = "POST"
) -> dict[str, Any]:
    return {"id": str(i), "method": method, "path": path, "body": body or {"input": str(i)}}


# --- estimate ---------------------------------------------------------------------------------


def test_estimate_a_focus_group_in_the_friendly_form_prints_135_as_json(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = cli.main(
        ["estimate", "focus-group", "--sample-size", "50", "--questions", "5", "--json"]
    )
    out = capsys.readouterr().out
    assert code == 0
    data = json.loads(out)
    assert data["high"] == 135 and data["endpoint"] == "focus_groups"


def test_estimate_by_path_with_a_balance_too_small_is_refused_with_exit_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = cli.main(
        ["estimate", "/video-analyses", "--body", '{"video_seconds": 90}', "--balance", "300"]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "REFUSED" in out and "350" in out and "300" in out
    code = cli.main(
        ["estimate", "/video-analyses", "--body", '{"video_seconds": 90}', "--balance", "420"]
    )
    assert code == 0 and "OK" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["estimate", "/focus-groups", "--body", "{not json"], "--body is not valid JSON"),
        (["estimate", "/focus-groups", "--body", "[1, 2]"], "JSON object"),
        (["estimate", "/focus-groups", "--body", '{"sample_size": "many"}'], "sample_size"),
        (["estimate", "/nowhere", "--body", "{}"], "unknown endpoint"),
        (["estimate", "hovercraft"], "unknown kind"),
    ],
)
def test_bad_estimate_input_is_one_line_on_stderr_with_exit_2(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(argv)
    cap = capsys.readouterr()
    assert code == 2
    assert needle in cap.err
    assert len(cap.err.strip().splitlines()) == 1
    assert "Traceback" not in cap.err + cap.out


# --- run on the embedded simulator -----------------------------------------------------------


def test_run_writes_the_summary_json_and_exits_0_when_every_job_succeeds(
    job_file, no_key: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs = job_file(
        [
            *(job(f"r{i}") for i in range(12)),
            job("fg", "/focus-groups", {"sample_size": 20, "questions": ["a", "b"]}),
            job("mave", "/mave/chat", {"message": "hi", "complexity": "simple"}),
            job("personas", "/personas", {}, method="GET"),
        ]
    )
    summary_path = tmp_path / "summary.json"
    t0 = time.monotonic()
    code = cli.main(["run", str(jobs), "--summary", str(summary_path), *FAST])
    assert time.monotonic() - t0 < 15
    cap = capsys.readouterr()
    assert code == 0, cap.err
    assert "embedded simulator" in cap.err
    s = json.loads(summary_path.read_text())
    assert SUMMARY_KEYS <= set(s)
    assert s["jobs"] == 15 and s["succeeded"] == 15 and s["failed"] == 0
    assert s["blocked_preflight"] == 0 and s["waiting_for_credits"] == 0
    assert s["credits_used"] > 0 and s["credits_estimated"] >= s["credits_used"]
    assert set(s["status_counts"]) == {"200"}
    assert s["max_in_flight"]["focus_groups"] == 1
    assert "Traceback" not in cap.err + cap.out


def test_run_reports_each_bad_line_and_runs_the_valid_ones(
    job_file, no_key: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs = job_file(
        [
            job("ok1"),
            "{this is not json",
            job("ok2"),
            job("bad-sample", "/focus-groups", {"sample_size": "lots"}),
            {"id": "no-path", "method": "POST", "body": {}},
            job("ok1"),  # duplicate id
            job("ok3"),
        ]
    )
    summary_path = tmp_path / "summary.json"
    code = cli.main(["run", str(jobs), "--summary", str(summary_path), *FAST])
    cap = capsys.readouterr()
    assert "line 2" in cap.err
    assert "line 4, field 'body.sample_size'" in cap.err
    assert "line 5, field 'path'" in cap.err
    assert "line 6, field 'id'" in cap.err
    assert "Traceback" not in cap.err
    s = json.loads(summary_path.read_text())
    assert (s["jobs"], s["succeeded"]) == (3, 3)
    assert code == 1  # the valid lines ran; the skipped ones make the run not a success


def test_run_strict_with_a_bad_line_runs_nothing_and_exits_2(
    job_file, no_key: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs = job_file([job("ok1"), "{oops", job("ok2")])
    summary_path = tmp_path / "summary.json"
    code = cli.main(["run", str(jobs), "--strict", "--summary", str(summary_path), *FAST])
    cap = capsys.readouterr()
    assert code == 2
    assert "line 2" in cap.err and "--strict" in cap.err
    assert not summary_path.exists()
    assert "embedded simulator" not in cap.err  # never started


def test_run_exits_1_when_a_job_is_refused_by_preflight(
    job_file, no_key: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs = job_file(
        [
            job("cheap"),
            job("fg", "/focus-groups", {"sample_size": 50, "questions": 5}),
        ]
    )
    summary_path = tmp_path / "summary.json"
    # A workspace cap of 100 credits: the 135-credit focus group may not be sent.
    code = cli.main(
        ["run", str(jobs), "--budget-cap", "100", "--summary", str(summary_path), *FAST]
    )
    capsys.readouterr()
    assert code == 1
    s = json.loads(summary_path.read_text())
    assert s["blocked_preflight"] == 1 and s["succeeded"] == 1
    assert s["max_in_flight"].get("focus_groups", 0) == 0


def test_run_with_a_missing_job_file_is_one_line_and_exit_3(
    no_key: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["run", str(tmp_path / "nope.jsonl"), *FAST])
    cap = capsys.readouterr()
    assert code == 3
    assert "not found" in cap.err and len(cap.err.strip().splitlines()) == 1


def test_run_refuses_plain_http_to_a_remote_host(
    job_file, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAVERA_API_KEY", "mvra_test_SECRET_cli")
    jobs = job_file([job("a")])
    code = cli.main(["run", str(jobs), "--base-url", "http://app.mavera.io/api/v1"])
    cap = capsys.readouterr()
    assert code == 3
    assert "http://" in cap.err and "SECRET" not in cap.err + cap.out


def test_run_help_documents_the_exit_statuses(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    out = capsys.readouterr().out
    assert "exit status" in out and "0    every job succeeded" in out


# --- over loopback HTTP ------------------------------------------------------------------------


def test_a_run_over_loopback_http_matches_the_api_sides_own_records(
    tmp_path: Path, loopback_sim: Any, job_file: Any
) -> None:
    limit = 10
    srv = loopback_sim(
        limit=limit, window_seconds=2.0, time_scale=0.02, seed=5, plan="professional"
    )
    sim = srv.sim
    jobs = job_file(
        [
            *(job(f"r{i}") for i in range(22)),
            *(
                job(f"m{i}", "/mave/chat", {"message": "x", "complexity": "simple"})
                for i in range(3)
            ),
            *(
                job(f"f{i}", "/focus-groups", {"sample_size": 10, "questions": ["a"]})
                for i in range(2)
            ),
            job("v", "/video-analyses", {"video_seconds": 20}),
            job("p", "/personas", {}, method="GET"),
        ]
    )
    summary_path = tmp_path / "summary.json"
    env = {**os.environ, "MAVERA_API_KEY": "mvra_test_loopback"}
    env.pop("MAVERA_BASE_URL", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mavera_tui",
            "run",
            str(jobs),
            "--base-url",
            srv.url,
            "--window-seconds",
            "2",
            "--summary",
            str(summary_path),
            "--db",
            str(tmp_path / "run.db"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "mvra_test_loopback" not in proc.stderr + proc.stdout
    s = json.loads(summary_path.read_text())
    recs = sim.records
    assert s["succeeded"] == s["jobs"] == 29
    assert s["credits_used"] == recs.total_charged() > 0
    assert s["responses_429"] == recs.count(status=429)
    assert recs.max_window_count() <= limit
    assert recs.max_arrivals_in_window() <= limit
    for ep, cap in (("mave", 10), ("focus_groups", 5), ("video_analyses", 3)):
        assert recs.max_in_flight(ep) <= cap
    # One request per job (plus the engine's balance reads), none sent twice.
    job_requests = [r for r in recs if r.endpoint != "billing_credits"]
    assert len(job_requests) == 29
    # The window was used: 30 requests at 10 per 2 s take at least 2 windows, and the
    # run did not dawdle far beyond the bound.
    assert 4.0 <= s["makespan_s"] < 4.0 + 6.0
    srv.stop()  # asserts that uvicorn stopped
    # Alone on the key: not a single 429. (Each send is stamped by its own task as it is
    # written; stamping a whole burst at once let the last requests arrive after their
    # stamp + window, and about one run in three collected a 429 here.)
    assert recs.count(status=429) == 0
