"""Secrets and trust: the key never lands in an artefact; files are owner-only; TLS stays on;
plain http only to loopback; server text is shown literally, never as escape sequences.

Runs ``mavera-tui run`` as a subprocess against the simulator served on 127.0.0.1 (hostile
text, 5xx, drops, bad bodies) and against one that rejects the key (401), then searches
every artefact (db, -wal, -shm, summary, debug log, stdout, stderr) for the key.

Decision: the --summary file holds counts and credits only, but it is created 0600 like
the database and the debug log (spending is nobody else's business).
"""

from __future__ import annotations

import os
import ssl
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mavera_tui.cli import printable
from mavera_tui.client import ApiClient, ConfigError, check_base_url
from mavera_tui.sim.app import HOSTILE_TEXT

ROOT = Path(__file__).resolve().parents[1]
SECRET = "mvra_test_SECRET123xyz"


def run_cli(tmp_path: Path, job_file, url: str, name: str, n: int = 12, *extra: str):
    jobs = job_file(
        [
            {"id": f"{name}{i}", "method": "POST", "path": "/responses", "body": {"input": f"x{i}"}}
            for i in range(n)
        ],
        name=f"{name}.jsonl",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAVERA_")}
    env["MAVERA_API_KEY"] = SECRET
    art = {
        "db": tmp_path / f"{name}.db",
        "summary": tmp_path / f"{name}.json",
        "debug": tmp_path / f"{name}.log",
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mavera_tui",
            "run",
            str(jobs),
            "--base-url",
            url,
            "--db",
            str(art["db"]),
            "--summary",
            str(art["summary"]),
            "--debug",
            str(art["debug"]),
            "--window-seconds",
            "2",
            "--timeout",
            "5",
            *extra,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=120,
    )
    return proc, art


def all_artefacts(tmp_path: Path, proc) -> dict[str, bytes]:
    found = {"stdout": proc.stdout, "stderr": proc.stderr}
    for p in tmp_path.iterdir():
        if p.is_file():
            found[p.name] = p.read_bytes()
    return found


@pytest.fixture(scope="module")
def hostile_server(loopback_sim_module):
    srv = loopback_sim_module(
        tier="professional",
        plan="enterprise",
        allocation=1_000_000,
        window_seconds=2.0,
        time_scale=0.0,
        seed=4,
        tap=True,
    )
    f = srv.sim.config.faults
    f.hostile_text, f.error_5xx_rate, f.drop_rate, f.bad_body_rate = True, 0.4, 0.1, 0.2
    return srv


def test_key_in_no_artefact_and_files_owner_only(tmp_path, hostile_server, job_file):
    proc, art = run_cli(tmp_path, job_file, hostile_server.url, "hostile")
    assert proc.returncode in (0, 1), proc.stderr
    assert art["db"].exists() and art["summary"].exists() and art["debug"].exists()
    arts = all_artefacts(tmp_path, proc)
    for name, data in arts.items():
        assert SECRET.encode() not in data, f"the key is in {name}"
        assert b"SECRET123" not in data, f"part of the key is in {name}"
    for key in ("db", "summary", "debug"):
        mode = stat.S_IMODE(art[key].stat().st_mode)
        assert mode == 0o600, (key, oct(mode))
    for side in tmp_path.glob("hostile.db-*"):
        assert stat.S_IMODE(side.stat().st_mode) & 0o077 == 0, side


def test_server_text_is_shown_literally(tmp_path, loopback_sim, job_file):
    """A workspace budget that runs out: the parked jobs' reasons carry the server's 402
    message, which here holds escape sequences and markup."""
    srv = loopback_sim(
        tier="professional",
        plan="enterprise",
        allocation=1_000_000,
        window_seconds=2.0,
        time_scale=0.0,
        seed=4,
        budget_cap=20,
        tap=True,
    )
    srv.sim.config.faults.hostile_text = True
    try:
        proc, art = run_cli(
            tmp_path, job_file, srv.url, "lit", 12, "--credit-wait", "1", "--credit-poll", "0.5"
        )
    finally:
        srv.stop()
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1
    assert b"\x1b" not in out and b"\x07" not in out, "raw escape bytes reached the terminal"
    debug = art["debug"].read_bytes()
    assert b"\x1b" not in debug and b"\x07" not in debug
    assert b"Traceback" not in out
    assert b"\\x1b[2J" in proc.stdout  # the reason is shown, its escapes made visible
    assert b"[bold red]boom[/]" in proc.stdout  # markup shown as text, not interpreted
    assert b"\\x1b[2J" in debug


def test_printable_makes_every_control_character_inert():
    shown = printable(HOSTILE_TEXT + "\r\n\x9b2J\x00")
    assert not any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F for c in shown)
    assert "[@click=app.quit]" in shown and "\\x1b]0;pwned\\x07" in shown


def test_rejected_key_401(tmp_path, loopback_sim, job_file):
    srv = loopback_sim(
        tier="professional",
        plan="enterprise",
        allocation=1_000_000,
        window_seconds=2.0,
        time_scale=0.0,
        seed=4,
        rejected_keys=frozenset({SECRET}),
        tap=True,
    )
    try:
        proc, art = run_cli(tmp_path, job_file, srv.url, "denied")
    finally:
        srv.stop()
    assert proc.returncode != 0
    err = proc.stderr.decode()
    assert "Traceback" not in err
    assert "MAVERA_API_KEY" in proc.stdout.decode() + err
    for name, data in all_artefacts(tmp_path, proc).items():
        assert SECRET.encode() not in data, f"the key is in {name}"


@pytest.mark.parametrize("backend", ["aiohttp", "httpx"])
async def test_tls_verification_stays_on(backend):
    client = ApiClient("https://app.mavera.io/api/v1", SECRET, backend=backend)
    contexts = [client.ssl_context]
    if backend == "aiohttp":
        contexts.append(client._aiohttp_session().connector._ssl)
    else:
        contexts.append(client._httpx._transport._pool._ssl_context)
    for ctx in contexts:
        assert isinstance(ctx, ssl.SSLContext)
        assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert SECRET not in repr(client)
    await client.aclose()


@pytest.mark.parametrize(
    "url",
    [
        "http://app.mavera.io/api/v1",
        "http://10.0.0.5/api",
        "http://127.evil.example/api",
        "http://localhost.evil/api",
    ],
)
def test_plain_http_is_refused_off_loopback(url, tmp_path, job_file):
    with pytest.raises(ConfigError) as exc:
        check_base_url(url)
    assert "http://" in str(exc.value)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAVERA_")}
    env["MAVERA_API_KEY"] = SECRET
    jobs = job_file(
        ['{"id": "a", "method": "POST", "path": "/responses", "body": {}}'], name="j.jsonl"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "mavera_tui", "run", str(jobs), "--base-url", url],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 3
    assert "refusing plain http://" in proc.stderr
    assert SECRET not in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:9/api/v1", "http://localhost:9/api/v1", "https://app.mavera.io/api/v1"],
)
def test_loopback_http_and_https_are_allowed(url):
    assert check_base_url(url) == url
