"""Bad input: job files, paths, flags, a full disk and a read-only database; property tests.

Runs ``cli.main`` in-process on the embedded simulator (no key) with instant latencies.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mavera_tui import cli
from mavera_tui.client import RateHeaders, parse_rate_headers, parse_retry_after
from mavera_tui.estimate import EstimateError, estimate
from mavera_tui.jobs import LineError, parse_lines
from mavera_tui.states import JobState
from mavera_tui.store import Store, StoreError

ROOT_USER = hasattr(os, "geteuid") and os.geteuid() == 0
FAST = ["--window-seconds", "2", "--sim-time-scale", "0"]


@pytest.fixture(autouse=True)
def _no_key(monkeypatch):
    monkeypatch.delenv("MAVERA_API_KEY", raising=False)
    monkeypatch.delenv("MAVERA_BASE_URL", raising=False)


def good(i: int) -> str:
    return json.dumps(
        {"id": f"ok{i}", "method": "POST", "path": "/responses", "body": {"input": "hi"}}
    )


BAD_LINES = {
    "invalid json": ('{"id": "x", "method": "POST",', None, "invalid JSON"),
    "not an object": ("[1, 2]", None, "JSON object"),
    "unknown endpoint": (
        '{"id": "u", "method": "POST", "path": "/nope", "body": {}}',
        "path",
        "unknown endpoint",
    ),
    "missing id": ('{"method": "POST", "path": "/responses", "body": {}}', "id", "missing"),
    "id wrong type": ('{"id": [1], "method": "POST", "path": "/responses"}', "id", ""),
    "method wrong": ('{"id": "m", "method": "DELETE", "path": "/responses"}', "method", ""),
    "path wrong type": ('{"id": "p", "method": "POST", "path": 5}', "path", ""),
    "body wrong type": (
        '{"id": "b", "method": "POST", "path": "/responses", "body": "x"}',
        "body",
        "JSON object",
    ),
    "sample_size wrong type": (
        '{"id": "f", "method": "POST", "path": "/focus-groups", '
        '"body": {"sample_size": "fifty", "questions": ["a"]}}',
        "body.sample_size",
        "whole number",
    ),
    "huge sample_size": (
        '{"id": "h", "method": "POST", "path": "/focus-groups", '
        '"body": {"sample_size": 100000000000000000000, "questions": []}}',
        "body.sample_size",
        "between",
    ),
    "huge video": (
        '{"id": "v", "method": "POST", "path": "/video-analyses", '
        '"body": {"video_seconds": 1e308}}',
        "body.video_seconds",
        "",
    ),
    "priority wrong": (
        '{"id": "q", "method": "POST", "path": "/responses", "priority": 1e9}',
        "priority",
        "",
    ),
    "duplicate id": (good(0), "id", "duplicate"),
}


@pytest.mark.parametrize("name", list(BAD_LINES))
def test_each_bad_line_names_its_line_and_field(name):
    text, field, words = BAD_LINES[name]
    jobs, errors = parse_lines([good(0), text, good(1)])
    assert [j.id for j in jobs] == ["ok0", "ok1"]
    assert len(errors) == 1
    e = errors[0]
    assert e.line == 2 and e.field == field
    assert words.lower() in e.message.lower()
    assert str(e).startswith("line 2" + (f", field '{field}'" if field else ""))


def test_valid_lines_still_run_and_errors_are_reported(job_file, tmp_path, capfd):
    lines = [good(0)] + [t for t, _, _ in BAD_LINES.values()] + [good(1)]
    jobs = job_file(lines)
    rc = cli.main(["run", str(jobs), *FAST, "--summary", str(tmp_path / "s.json")])
    out, err = capfd.readouterr()
    assert rc == 1, err  # the valid lines ran, but skipped lines are not a success
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["jobs"] == summary["succeeded"] == 2
    assert summary["bad_lines_skipped"] == len(BAD_LINES)
    for n in range(2, len(lines)):
        assert f"line {n}" in err
    assert f"{len(BAD_LINES)} bad line(s) skipped" in err
    assert "Traceback" not in out + err


def test_three_bad_lines_of_four_exit_1_and_say_so(job_file, tmp_path, capfd):
    jobs = job_file([good(0), "{oops", "[1]", '{"id": "x"}'])
    rc = cli.main(["run", str(jobs), *FAST])
    out, err = capfd.readouterr()
    assert rc == cli.EXIT_JOBS_FAILED == 1
    assert "3 bad line(s) skipped; running the 1 valid job(s)" in err
    assert "jobs 1: 1 succeeded" in out and "3 bad line(s)" in out
    ok = job_file([good(0), good(1)])
    assert cli.main(["run", str(ok), *FAST]) == 0  # nothing skipped, all done: still 0


def test_strict_runs_nothing(job_file, tmp_path, capfd):
    jobs = job_file([good(0), "{oops", good(1)])
    db = tmp_path / "s.db"
    rc = cli.main(["run", str(jobs), *FAST, "--strict", "--db", str(db)])
    out, err = capfd.readouterr()
    assert rc == 2
    assert "line 2" in err and "nothing was run (--strict)" in err
    assert not db.exists()  # nothing started, nothing persisted


@pytest.mark.parametrize(
    "kind", ["binary", "empty", "directory", "missing", "unreadable", "only bad lines"]
)
def test_unusable_job_files_are_one_clear_line(kind, tmp_path, capfd):
    p = tmp_path / "jobs.jsonl"
    if kind == "binary":
        p.write_bytes(b"\x00\xff\xfe\x89PNG\r\n\x1a\n" + os.urandom(64))
    elif kind == "empty":
        p.write_text("")
    elif kind == "directory":
        p.mkdir()
    elif kind == "unreadable":
        if ROOT_USER:
            pytest.skip("running as root: chmod 000 does not stop root from reading")
        p.write_text(good(0) + "\n")
        p.chmod(0)
    elif kind == "only bad lines":
        p.write_text("{bad\n[]\n")
    rc = cli.main(["run", str(p), *FAST])
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err
    lines = [ln for ln in err.splitlines() if ln.startswith("mavera-tui: error:")]
    assert len(lines) == 1, err
    expected = {
        "binary": (3, "not UTF-8"),
        "empty": (2, "holds no jobs"),
        "directory": (3, "is a directory"),
        "missing": (3, "not found"),
        "unreadable": (3, "permission denied"),
        "only bad lines": (2, "no valid jobs"),
    }[kind]
    assert rc == expected[0]
    assert expected[1] in lines[0]
    assert str(p) in lines[0]


@pytest.mark.parametrize(
    ("argv", "command", "words"),
    [
        (["run"], "run", "missing JOBS.jsonl"),
        (["run", "x.jsonl", "--window-seconds", "zero"], "run", "--window-seconds: expected a"),
        (["run", "x.jsonl", "--window-seconds", "-3"], "run", "expected a positive number"),
        (["run", "x.jsonl", "--timeout", "nan"], "run", "--timeout"),
        (["run", "x.jsonl", "--resend-unknown-up-to", "-1"], "run", "expected zero or more"),
        (["run", "x.jsonl", "--tier", "platinum"], "run", "'platinum' is not one of"),
        (["run", "x.jsonl", "--no-such-flag"], "run", "unrecognized argument --no-such-flag"),
        (["run", "x.jsonl", "--sim-time-scale", "-1"], "run", "expected zero or more"),
        (["run", "x.jsonl", "--d", "y"], "run", "ambiguous option: --d could match"),
        (["estimate"], "estimate", "missing PATH|KIND"),
        (["estimate", "fg", "--foo"], "estimate", "unrecognized argument --foo"),
        (["estimate", "fg", "--sample-size", "2.5"], "estimate", "expected a whole number"),
        (["estimate", "fg", "--balance", "-5"], "estimate", "expected zero or more"),
        (["sim", "--port", "x"], "sim", "--port: expected a whole number"),
        (["sim", "--port", "1", "--foo"], "sim", "unrecognized argument --foo"),
        (["record"], "record", "missing --db"),
        (["record", "--db", "r.db", "--foo"], "record", "unrecognized argument --foo"),
        (["record", "--db", "r.db", "--duration", "soon"], "record", "not a duration"),
        (["record", "--db", "r.db", "--metrics-port", "99999"], "record", "0 to 65535"),
        (["record", "--db", "r.db", "--window-seconds", "-1"], "record", "positive"),
        (["record", "--db", "r.db", "--grace", "-1"], "record", "zero or more"),
        (["--db", "x.db", "record", "--db", "r.db", "--foo"], "record", "--foo"),
        (["replay"], "replay", "missing file"),
        (["replay", "r.db", "--foo"], "replay", "unrecognized argument --foo"),
        (["replay", "r.db", "--refresh", "-1"], "replay", "--refresh: expected a positive"),
        (["report", "r.db", "--batch-gap", "0"], "report", "--batch-gap: expected a positive"),
        (["report", "r.db", "--foo"], "report", "unrecognized argument --foo"),
        (["screenshots", "--foo"], "screenshots", "unrecognized argument --foo"),
        (["--foo"], "", "unrecognized argument --foo"),
        (["--metrics-port", "99999"], "", "0 to 65535"),
        (["--refresh", "0"], "", "expected a positive number"),
        (["frobnicate"], "", "unknown command 'frobnicate'"),
    ],
)
def test_bad_flags_exit_2_with_one_line_naming_the_help(argv, command, words, capfd):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    out, err = capfd.readouterr()
    prog = f"mavera-tui {command}".strip()
    assert out == ""
    assert err.count("\n") == 1, err  # no usage block, no traceback: one line
    line = err.strip()
    assert line.startswith(f"{prog}: ") and line.endswith(f"; see {prog} --help"), line
    assert words in line


def test_the_shortened_messages_read_as_documented():
    assert cli.usage_line("unrecognized arguments: --foo") == "unrecognized argument --foo"
    assert cli.usage_line("unrecognized arguments: --a 1") == "unrecognized arguments --a 1"
    assert cli.usage_line("the following arguments are required: --db") == "missing --db"


@pytest.mark.parametrize(
    ("port", "code", "words"),
    [
        ("99999", 2, "--port must be from 0 to 65535"),
        ("-1", 2, "--port must be from 0 to 65535"),
        ("busy", 3, "cannot listen on 127.0.0.1:"),
    ],
)
def test_sim_on_a_bad_or_busy_port_is_one_line(port, code, words):
    import socket

    with socket.create_server(("127.0.0.1", 0)) as busy:
        if port == "busy":
            port = str(busy.getsockname()[1])
        done = subprocess.run(
            [sys.executable, "-m", "mavera_tui", "sim", "--port", port],
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
    assert done.returncode == code, done.stderr
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and words in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["--no-demo"],
        ["replay", "r.db"],
        ["run", "x.jsonl"],
    ],
)
def test_an_unwritable_debug_log_is_one_line_before_anything_starts(argv, tmp_path, capfd):
    rc = cli.main([*argv, "--debug", str(tmp_path / "no-such-dir" / "debug.log")])
    out, err = capfd.readouterr()
    assert rc == 3 and out == "", out
    assert err.count("\n") == 1 and "cannot write the debug log" in err


def test_screenshots_into_an_unwritable_folder_is_one_line(tmp_path, capfd):
    blocker = tmp_path / "file"
    blocker.write_text("")
    rc = cli.main(["screenshots", "--out", str(blocker / "shots")])
    out, err = capfd.readouterr()
    assert rc == 3 and err.count("\n") == 1 and "pick another --out" in err


@pytest.mark.parametrize(
    "argv,words",
    [
        (["run", "J", "--base-url", "http://example.com/api/v1"], "refusing plain http://"),
        (["run", "J", "--base-url", "ftp://x"], "must start with https://"),
        (["run", "J", "--auto-recharge", "lots"], "--auto-recharge takes"),
        (["run", "J", "--db", "/nonexistent-dir/x.db"], "does not exist"),
        (["run", "J", "--debug", "/nonexistent-dir/debug.log"], "cannot write the debug log"),
    ],
)
def test_bad_settings_are_one_line_exit_3(argv, words, tmp_path, capfd, job_file):
    jobs = job_file([good(0)])
    argv = [str(jobs) if a == "J" else a for a in argv]
    rc = cli.main(argv + FAST)
    out, err = capfd.readouterr()
    assert rc == 3, err
    assert words in err
    assert len([ln for ln in err.splitlines() if ln.startswith("mavera-tui: error:")]) == 1
    assert "Traceback" not in out + err


def test_db_that_is_a_directory_or_foreign_file(job_file, tmp_path, capfd):
    jobs = job_file([good(0)])
    (tmp_path / "d.db").mkdir()
    assert cli.main(["run", str(jobs), *FAST, "--db", str(tmp_path / "d.db")]) == 3
    foreign = tmp_path / "f.db"
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    assert cli.main(["run", str(jobs), *FAST, "--db", str(foreign)]) == 3
    junk = tmp_path / "j.db"
    junk.write_bytes(b"this is not sqlite at all" * 100)
    assert cli.main(["run", str(jobs), *FAST, "--db", str(junk)]) == 3
    out, err = capfd.readouterr()
    assert "is a directory" in err and "another program" in err
    assert "not a mavera-tui database" in err
    assert "Traceback" not in out + err


def test_read_only_database(job_file, tmp_path, capfd):
    """A database in a read-only place: clear message, exit 3. As root, permission bits
    do not stop writes, so this case is only checked when not running as root."""
    if ROOT_USER:
        pytest.skip("running as root: chmod cannot make a file or directory read-only")
    jobs = job_file([good(0)])
    ro = tmp_path / "ro"
    ro.mkdir()
    db = ro / "x.db"
    assert cli.main(["run", str(jobs), *FAST, "--db", str(db)]) == 0
    db.chmod(0o400)
    ro.chmod(0o500)
    try:
        rc = cli.main(["run", str(jobs), *FAST, "--db", str(db)])
    finally:
        ro.chmod(0o700)
        db.chmod(0o600)
    out, err = capfd.readouterr()
    assert rc == 3
    assert "Traceback" not in out + err


async def test_full_disk_says_so_and_loses_nothing(tmp_path):
    """The store's writes fail as on a full disk (SQLite max_page_count): the error says
    'disk is full', nothing is dropped, and once there is room again it is all written."""
    db = tmp_path / "full.db"
    store = await Store.open(db)
    rows = [
        (
            f"j{i}",
            i,
            "POST",
            "/responses",
            "responses",
            json.dumps({"input": "x" * 2000}),
            0,
            JobState.QUEUED,
            5,
            "",
            1.0,
        )
        for i in range(5)
    ]
    await store.add_jobs(rows)
    (pages,) = (await store.query("PRAGMA page_count"))[0]
    await store._db.execute(f"PRAGMA max_page_count={pages}")
    big = [
        (
            f"k{i}",
            100 + i,
            "POST",
            "/responses",
            "responses",
            json.dumps({"input": "y" * 4000}),
            0,
            JobState.QUEUED,
            5,
            "",
            1.0,
        )
        for i in range(50)
    ]
    with pytest.raises(StoreError) as exc:
        await asyncio.wait_for(store.add_jobs(big), 10)
    assert "disk is full" in str(exc.value)
    assert store.write_error and "disk is full" in store.write_error
    assert len(await store.load_jobs()) == 5  # the earlier rows are intact
    await store._db.execute("PRAGMA max_page_count=1073741823")  # room again
    await asyncio.wait_for(store.flush(), 10)
    assert len(await store.load_jobs()) == 55  # the refused batch was kept and retried
    await store.close()
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()


FULL_DISK_RUN = """
import sys
from mavera_tui import cli, store as store_mod
real_open = store_mod.Store.open.__func__
async def tiny_open(cls, path, **kw):
    s = await real_open(cls, path, **kw)
    (pages,) = (await s.query("PRAGMA page_count"))[0]
    await s._db.execute(f"PRAGMA max_page_count={pages}")
    return s
store_mod.Store.open = classmethod(tiny_open)
sys.exit(cli.main(sys.argv[1:]))
"""


def test_full_disk_during_run_is_a_clear_message(job_file, tmp_path):
    """run whose database cannot grow (SQLite max_page_count, as a full disk): one clear
    line, exit 3, no traceback, nothing sent (jobs are persisted before they are sent)."""
    jobs = job_file(
        [
            json.dumps(
                {
                    "id": f"b{i}",
                    "method": "POST",
                    "path": "/responses",
                    "body": {"input": "z" * 3000},
                }
            )
            for i in range(40)
        ]
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAVERA_")}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            FULL_DISK_RUN,
            "run",
            str(jobs),
            *FAST,
            "--db",
            str(tmp_path / "r.db"),
            "--summary",
            str(tmp_path / "s.json"),
        ],
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 3, (proc.stdout, proc.stderr)
    assert "disk is full" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


# ------------------------------------------------------------------ property tests ------

header_text = st.one_of(
    st.none(),
    st.text(max_size=30),
    st.integers(-(10**15), 10**15).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.datetimes().map(lambda d: d.strftime("%a, %d %b %Y %H:%M:%S GMT")),
)


@settings(max_examples=300, deadline=None)
@given(
    limit=header_text,
    remaining=header_text,
    reset=header_text,
    retry=header_text,
    now=st.floats(0, 4e9),
)
def test_rate_header_parser_never_raises_and_stays_sane(limit, remaining, reset, retry, now):
    h = {}
    for name, v in (
        ("X-RateLimit-Limit", limit),
        ("X-RateLimit-Remaining", remaining),
        ("X-RateLimit-Reset", reset),
        ("Retry-After", retry),
    ):
        if v is not None and v.isprintable() and v.isascii() and "\n" not in v:
            h[name] = v
    r = parse_rate_headers(h, now)
    assert isinstance(r, RateHeaders)
    assert r.limit is None or r.limit >= 1
    assert r.remaining is None or r.remaining >= 0
    if r.limit is not None and r.remaining is not None:
        assert r.remaining <= r.limit
    assert r.reset_at is None or abs(r.reset_at - now) <= 86400
    assert r.retry_after is None or 0 <= r.retry_after <= 10 * 365 * 86400


@settings(max_examples=300, deadline=None)
@given(value=st.one_of(st.none(), st.text(max_size=40)), now=st.floats(0, 4e9))
def test_retry_after_parser_never_raises(value, now):
    r = parse_retry_after(value, now)
    assert r is None or (r == r and 0 <= r <= 10 * 365 * 86400)


json_value = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=10)
    ),
    lambda kids: st.one_of(
        st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=12,
)
paths = st.sampled_from(
    [
        "/responses",
        "/mave/chat",
        "/focus-groups",
        "/video-analyses",
        "/generations",
        "/personas",
        "/brand-voices",
        "/news/x/analyze",
        "/nope",
        "",
        "focus-groups",
        "/billing/credits",
    ]
)
bodies = st.one_of(
    st.dictionaries(
        st.sampled_from(["sample_size", "questions", "video_seconds", "complexity", "input", "x"]),
        json_value,
        max_size=4,
    ),
    json_value,
)


@settings(max_examples=400, deadline=None)
@given(method=st.sampled_from(["GET", "POST", "get", "PUT", ""]), path=paths, body=bodies)
def test_estimator_raises_only_estimate_error(method, path, body):
    try:
        est = estimate(method, path, body if isinstance(body, dict) or body is None else body)
    except EstimateError as e:
        assert str(e)
        return
    assert 0 <= est.low <= est.high


line_obj = st.fixed_dictionaries(
    {},
    optional={
        "id": json_value | st.text(max_size=5),
        "method": st.sampled_from(["GET", "POST", "PUT"]) | json_value,
        "path": paths | json_value,
        "body": bodies,
        "priority": json_value | st.integers(-2000, 2000),
    },
)
raw_line = st.one_of(
    line_obj.map(json.dumps),
    st.text(max_size=60),
    st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(raw_line, max_size=12))
def test_job_file_parser_returns_one_error_per_bad_line(lines):
    lines = [ln.replace("\n", " ").replace("\r", " ") for ln in lines]
    jobs, errors = parse_lines(lines)
    assert all(isinstance(e, LineError) for e in errors)
    bad_lines = [e.line for e in errors]
    assert len(bad_lines) == len(set(bad_lines)), "more than one error for a line"
    counted = [i + 1 for i, ln in enumerate(lines) if ln.strip() and not ln.strip().startswith("#")]
    assert len(jobs) + len(errors) == len(counted)
    assert set(bad_lines) <= set(counted)
    assert len({j.id for j in jobs}) == len(jobs)
    for e in errors:
        assert str(e).startswith(f"line {e.line}")
