"""A rerun with the same --db reports the whole job file, including what an earlier run did."""

import json

from mavera_tui import cli


def test_a_rerun_counts_jobs_finished_earlier_and_keeps_the_exit_status(
    tmp_path, monkeypatch, capsys, job_file
):
    monkeypatch.delenv("MAVERA_API_KEY", raising=False)
    monkeypatch.delenv("MAVERA_BASE_URL", raising=False)
    lines = [{"id": f"r{i}", "method": "POST", "path": "/responses", "body": {}} for i in range(3)]
    lines.append(
        {"id": "v1", "method": "POST", "path": "/video-analyses", "body": {"video_seconds": 90}}
    )
    jobs = job_file(lines)
    db, s1, s2 = tmp_path / "run.db", tmp_path / "s1.json", tmp_path / "s2.json"
    common = [
        "--db",
        str(db),
        "--window-seconds",
        "2",
        "--sim-time-scale",
        "0.01",
        "--budget-cap",
        "100",
        "--quiet",
    ]

    first = cli.main(["run", str(jobs), "--summary", str(s1), *common])
    second = cli.main(["run", str(jobs), "--summary", str(s2), *common])

    one, two = json.loads(s1.read_text()), json.loads(s2.read_text())
    # The video (up to 350 credits) is over the 100-credit workspace cap: never sent.
    assert (one["jobs"], one["succeeded"], one["blocked_preflight"]) == (4, 3, 1)
    assert first == 1
    assert (two["jobs"], two["succeeded"], two["blocked_preflight"]) == (4, 3, 1)
    assert two["already_finished_in_db"] == 4
    assert two["requests"] == 1  # only the balance read: nothing was sent again
    assert second == 1
    assert "Traceback" not in capsys.readouterr().err
