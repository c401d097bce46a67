"""The governing proxy with clients nobody here wrote: the openai SDK and plain httpx, pointed
at ``mavera-tui proxy`` (its own process), which fronts the simulator on a loopback port.
The simulator's own records are the judge: what reached the API, when, and what it charged.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from conftest import ROOT, LoopbackSim, snapshot_times, unpacked

from mavera_tui.sim import SimConfig, fingerprint

openai = pytest.importorskip("openai")

WINDOW = 2.0
RICH = {"plan": "enterprise", "allocation": 1_000_000, "seed": 3}


class ProxyProc:
    """``mavera-tui proxy`` in its own process on a free loopback port."""

    def __init__(self, target: str, *args: str, env: dict[str, str] | None = None):
        e = {k: v for k, v in os.environ.items() if not k.startswith("MAVERA")}
        e["MAVERA_TUI_CONFIG"] = os.devnull
        e.update(env or {})
        cmd = [sys.executable, "-m", "mavera_tui", "proxy", "--listen", "127.0.0.1:0"]
        cmd += ["--base-url", target, "--window-seconds", str(WINDOW), *args]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e, cwd=ROOT
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("proxy listening on "), line + self.proc.stderr.read()
        self.line = line
        self.url = line.split()[3]
        self.metrics_port: int | None = None
        if "metrics on 127.0.0.1:" in line:
            self.metrics_port = int(line.split("metrics on 127.0.0.1:")[1].split(")")[0])

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            _, err = self.proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return err

    def metrics(self) -> str:
        assert self.metrics_port is not None
        return httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics").text


@pytest.fixture
def proxy() -> Iterator[Callable[..., ProxyProc]]:
    started: list[ProxyProc] = []

    def start(target: str, *args: str, **kw: Any) -> ProxyProc:
        p = ProxyProc(target, *args, **kw)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


class ProcessSim:
    """The simulator in its own process (``bench/http_sim.py``), its records read over
    HTTP: for the heaviest test, where a simulator sharing the test's interpreter (and its
    GIL) with 200 concurrent SDK calls would count arrivals late."""

    def __init__(self, limit: int, time_scale: float) -> None:
        cmd = [sys.executable, str(ROOT / "bench" / "http_sim.py"), "--limit", str(limit)]
        cmd += ["--window-seconds", str(WINDOW), "--time-scale", str(time_scale), "--seed", "3"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        assert line.startswith("PORT "), line
        self.port = int(line.split()[1])
        self.url = f"http://127.0.0.1:{self.port}/api/v1"
        self.limit = limit

    def records(self) -> list[dict[str, Any]]:
        data = httpx.get(f"http://127.0.0.1:{self.port}/__bench/stats", timeout=30).json()
        return [dict(zip(data["columns"], row, strict=True)) for row in data["records"]]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def process_sim() -> Iterator[Callable[..., ProcessSim]]:
    started: list[ProcessSim] = []

    def start(limit: int, time_scale: float) -> ProcessSim:
        p = ProcessSim(limit, time_scale)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


def _check_records(srv: LoopbackSim) -> list[Any]:
    """The server's view: no 429 at all, never over the window, never over a cap."""
    recs = list(srv.sim.records)
    assert Counter(r.status for r in recs)[429] == 0, [
        (r.index, r.path, r.code) for r in recs if r.status == 429
    ]
    limit = srv.sim.limit
    assert max(r.window_count or 0 for r in recs) <= limit
    for ep, cap in (("focus_groups", 5), ("video_analyses", 3)):
        assert max((r.in_flight or 0 for r in recs if r.endpoint == ep), default=0) <= cap
    return recs


def _spent(srv: LoopbackSim) -> int:
    return sum(r.credits or 0 for r in srv.sim.records)


# --- the openai SDK ----------------------------------------------------------------------


def test_openai_sdk_many_at_once_zero_429s(
    process_sim: Callable[..., ProcessSim], proxy: Callable[..., ProxyProc]
) -> None:
    """200 concurrent responses.create at the basic tier's 120 a window, plus focus groups,
    video analyses and a Mave chat: all succeed, the API saw no 429 and nothing over the
    window or a cap, and the credits the clients were told add up to what it charged."""
    srv = process_sim(120, 0.02)
    px = proxy(srv.url)
    client = openai.AsyncOpenAI(base_url=px.url, api_key="mvra-key-a", max_retries=0)
    bodies: list[tuple[str, dict[str, Any]]] = [
        ("/focus-groups", {"sample_size": 20, "questions": ["a", "b"]}),
        ("/focus-groups", {"sample_size": 60, "questions": ["c"]}),
        ("/video-analyses", {"video_seconds": 20}),
        ("/video-analyses", {"video_seconds": 45}),
        ("/mave/chat", {"message": "market size?", "complexity": "simple"}),
    ]

    async def main() -> tuple[list[Any], list[Any]]:
        calls = [
            client.responses.create(model="mavera-1", input=f"question {i}") for i in range(200)
        ]
        extra = [client.post(path, body=body, cast_to=object) for path, body in bodies]
        try:
            return await asyncio.gather(*calls), await asyncio.gather(*extra)
        finally:
            await client.close()

    t0 = time.monotonic()
    responses, others = asyncio.run(main())
    assert time.monotonic() - t0 < 20
    assert all(r.status == "completed" and r.output_text for r in responses)
    assert [o["object"] for o in others] == [
        "focus_group",
        "focus_group",
        "video_analysis",
        "video_analysis",
        "mave.chat",
    ]
    recs = srv.records()
    assert [r for r in recs if r["status"] == 429] == []
    assert max(r["window_count"] or 0 for r in recs) <= 120
    for ep, cap in (("focus_groups", 5), ("video_analyses", 3), ("mave", 10)):
        assert max((r["in_flight"] or 0 for r in recs if r["endpoint"] == ep), default=0) <= cap
    assert Counter(r["endpoint"] for r in recs if r["status"] == 200)["responses"] == 200
    told = sum(r.usage.credits_used for r in responses) + sum(
        o["usage"]["credits_used"] for o in others
    )
    assert told == sum(r["credits"] or 0 for r in recs) > 0


def test_openai_sdk_stream_arrives_in_pieces(
    loopback_sim: Callable[..., LoopbackSim], proxy: Callable[..., ProxyProc]
) -> None:
    """responses.create(stream=True) through the proxy: the SDK's events arrive one by one,
    spread over the answer's latency, ending with the usage the API charged."""
    srv = loopback_sim(SimConfig(limit=25, window_seconds=WINDOW, time_scale=0.4, **RICH))
    px = proxy(srv.url)
    client = openai.OpenAI(base_url=px.url, api_key="mvra-key-a", max_retries=0)
    t0 = time.monotonic()
    seen: list[tuple[float, str]] = []
    with client.responses.create(model="mavera-1", input="hello", stream=True) as stream:
        for ev in stream:
            seen.append((time.monotonic() - t0, ev.type))
    types = [t for _, t in seen]
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert types.count("response.output_text.delta") >= 2
    # In pieces: the first event came well before the last (the latency lies between).
    assert seen[-1][0] - seen[0][0] > 0.1
    assert ev.response.usage.credits_used == _spent(srv) > 0  # type: ignore[union-attr]
    _check_records(srv)


# --- plain httpx ---------------------------------------------------------------------------


def test_httpx_clients_get_the_api_answer_unchanged(
    loopback_sim: Callable[..., LoopbackSim], proxy: Callable[..., ProxyProc]
) -> None:
    """Raw HTTP: status, body and the X-RateLimit-* headers come back as the API sent them;
    priority and caller headers are accepted; a bad one is the proxy's own 400."""
    srv = loopback_sim(SimConfig(limit=25, window_seconds=WINDOW, time_scale=0.02, **RICH))
    px = proxy(srv.url, "--metrics-port", "0")

    async def main() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=px.url, timeout=30) as c:
            h = {"Authorization": "Bearer mvra-key-b"}
            calls = [
                c.post(
                    "/responses",
                    json={"input": f"q{i}", "ref": f"r{i}"},
                    headers={**h, "X-Mavera-Priority": str(i % 3), "X-Mavera-Caller": "batch"},
                )
                for i in range(40)
            ]
            calls.append(c.get("/billing/credits", headers=h))
            calls.append(c.post("/responses", json={}, headers={**h, "X-Mavera-Priority": "x"}))
            return await asyncio.gather(*calls)

    out = asyncio.run(main())
    *ok, bad = out
    assert all(r.status_code == 200 for r in ok), [r.text for r in ok if r.status_code != 200]
    assert bad.status_code == 400 and "X-Mavera-Priority" in bad.json()["error"]["message"]
    assert all(int(r.headers["X-RateLimit-Limit"]) == 25 for r in ok)
    assert all(r.headers["content-type"] == "application/json" for r in ok)
    *answers, balance = ok
    assert len({r.json()["id"] for r in answers}) == 40  # 40 distinct answers, the API's own
    assert "plan_credits_remaining" in balance.json() or balance.json()
    recs = _check_records(srv)
    assert sum(1 for r in recs if r.endpoint == "responses") == 40  # none repeated
    text = px.metrics()
    assert 'mavera_proxy_caller_requests_total{caller="batch"} 40.0' in text
    assert 'mavera_proxy_refusals_total{reason="auth"} 0.0' in text
    assert "mavera_proxy_upstream_429_total" in text


def test_unaffordable_request_is_402_at_once_and_never_sent(
    loopback_sim: Callable[..., LoopbackSim], proxy: Callable[..., ProxyProc]
) -> None:
    """A focus group the balance can never cover: the proxy's 402 in the documented
    envelope, naming the estimate, the balance and what to reduce; the API never sees it."""
    srv = loopback_sim(
        SimConfig(
            limit=25, window_seconds=WINDOW, time_scale=0.02, plan="basic", allocation=200, seed=3
        )
    )
    px = proxy(srv.url)
    client = openai.OpenAI(base_url=px.url, api_key="mvra-key-a", max_retries=0)
    t0 = time.monotonic()
    with pytest.raises(openai.APIStatusError) as info:
        client.post(
            "/focus-groups",
            body={"sample_size": 1000, "questions": 100},
            cast_to=object,
        )
    assert time.monotonic() - t0 < 3
    err = info.value
    assert err.status_code == 402
    body = err.response.json()["error"]
    assert set(body) == {"message", "type", "code", "param"}
    assert body["type"] == "insufficient_credits" and body["code"] == "credits_exhausted"
    msg = body["message"]
    assert "estimated 400 credits" in msg and "remaining" in msg and "sample_size" in msg
    assert not any(r.endpoint == "focus_groups" for r in srv.sim.records)
    # A small one still goes.
    ok = client.post("/focus-groups", body={"sample_size": 5, "questions": 1}, cast_to=object)
    assert ok["object"] == "focus_group"


def test_overflow_is_429_with_retry_after_never_a_hang(
    loopback_sim: Callable[..., LoopbackSim], proxy: Callable[..., ProxyProc]
) -> None:
    """More than the queue holds, at a limit of 4 a window: the overflow is answered 429
    with a Retry-After at once (or after --max-wait), the rest succeed, the API sees no
    429; coming back after the Retry-After works."""
    srv = loopback_sim(SimConfig(limit=4, window_seconds=WINDOW, time_scale=0.02, **RICH))
    px = proxy(srv.url, "--max-queue", "6", "--max-wait", "1.5")

    async def main() -> tuple[list[httpx.Response], float]:
        async with httpx.AsyncClient(base_url=px.url, timeout=30) as c:
            h = {"Authorization": "Bearer mvra-key-c"}
            t0 = time.monotonic()
            out = await asyncio.gather(
                *[c.post("/responses", json={"input": str(i)}, headers=h) for i in range(20)]
            )
            return out, time.monotonic() - t0

    out, took = asyncio.run(main())
    assert took < 2.5 + WINDOW  # nobody waited past --max-wait for a send
    codes = Counter(r.status_code for r in out)
    # 4 a window, one of them the engine's first balance read; the queue holds 6.
    assert codes[200] >= 3 and codes[429] >= 6 and codes[200] + codes[429] == 20
    refused = [r for r in out if r.status_code == 429]
    for r in refused:
        assert r.headers["X-Mavera-Governor"] in ("queue_full", "max_wait_exceeded")
        assert int(r.headers["Retry-After"]) >= 1
        assert r.json()["error"]["type"] == "rate_limit_error"
    _check_records(srv)
    wait = max(int(r.headers["Retry-After"]) for r in refused)
    time.sleep(min(wait, 2 * WINDOW))
    again = httpx.post(
        px.url + "/responses",
        json={"input": "again"},
        headers={"Authorization": "Bearer mvra-key-c"},
    )
    assert again.status_code == 200


def test_client_disconnect_closes_the_stream_and_frees_its_slot(
    loopback_sim: Callable[..., LoopbackSim], proxy: Callable[..., ProxyProc]
) -> None:
    """With one request in flight allowed, an app reads the start of a stream and hangs
    up: the proxy closes the upstream stream (the API sees the client go before the end)
    and the next request goes at once, not after the stream's latency."""
    srv = loopback_sim(SimConfig(limit=25, window_seconds=WINDOW, time_scale=4.0, **RICH))
    px = proxy(srv.url, "--max-in-flight", "1", "--metrics-port", "0")
    h = {"Authorization": "Bearer mvra-key-d"}
    with httpx.Client(base_url=px.url, timeout=30) as c:
        with c.stream(
            "POST", "/responses", json={"input": "long", "stream": True}, headers=h
        ) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            first = next(resp.iter_raw())
            assert b"response.created" in first
        # The stream's connection is closed here, mid-answer.
    t_closed = time.monotonic()
    with httpx.Client(base_url=px.url, timeout=30) as c:
        nxt = c.get("/personas", headers=h)
    assert nxt.status_code == 200
    recs = list(srv.sim.records)
    stream_rec = next(r for r in recs if r.endpoint == "responses")
    after = next(r for r in recs if r.endpoint == "personas_list")
    assert stream_rec.client_gone
    assert after.t < stream_rec.t + stream_rec.latency  # went before the stream would end
    assert time.monotonic() - t_closed < stream_rec.latency
    # The proxy's own count of requests in flight is back to 0 (the slot was released).
    gauge = [
        line for line in px.metrics().splitlines() if line.startswith("mavera_proxy_in_flight{")
    ]
    assert gauge and all(line.endswith(" 0.0") for line in gauge), gauge


def test_tokens_required_beyond_loopback_and_checked(
    loopback_sim: Callable[..., LoopbackSim], proxy: Callable[..., ProxyProc]
) -> None:
    """Listening beyond loopback without caller tokens does not start (one line, exit 3);
    with --token, a request without it is the proxy's 401, with it the API's answer."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAVERA")}
    env["MAVERA_TUI_CONFIG"] = os.devnull
    bad = subprocess.run(
        [sys.executable, "-m", "mavera_tui", "proxy", "--listen", "0.0.0.0:0"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=30,
    )
    assert bad.returncode == 3
    assert bad.stderr.count("\n") == 1 and "--token" in bad.stderr
    assert "Traceback" not in bad.stderr
    srv = loopback_sim(SimConfig(limit=25, window_seconds=WINDOW, time_scale=0.02, **RICH))
    px = proxy(
        srv.url,
        "--key-from-env",
        "--token",
        "local-t1,local-t2",
        env={"MAVERA_API_KEY": "mvra-real-key"},
    )
    no = httpx.post(px.url + "/responses", json={}, headers={"Authorization": "Bearer nope"})
    assert no.status_code == 401 and no.json()["error"]["code"] == "invalid_proxy_token"
    yes = httpx.post(px.url + "/responses", json={}, headers={"Authorization": "Bearer local-t2"})
    assert yes.status_code == 200
    # The API saw the key from the environment, not the caller's token.
    keys = {r.key for r in srv.sim.records}
    assert keys == {fingerprint("mvra-real-key")}


def test_bad_listen_is_one_line(tmp_path: Any) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAVERA")}
    env["MAVERA_TUI_CONFIG"] = os.devnull
    out = subprocess.run(
        [sys.executable, "-m", "mavera_tui", "proxy", "--listen", "nowhere"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=30,
    )
    assert out.returncode == 2 and "ADDRESS:PORT" in out.stderr and "Traceback" not in out.stderr


def test_record_proxy_records_the_proxied_requests(
    loopback_sim: Callable[..., LoopbackSim], tmp_path: Any, query_db: Callable[..., Any]
) -> None:
    """``record --proxy``: headless, the proxy serves apps with MAVERA_API_KEY and the
    recording holds their jobs and snapshots; it ends by itself after --duration."""
    srv = loopback_sim(SimConfig(limit=25, window_seconds=WINDOW, time_scale=0.02, **RICH))
    db = tmp_path / "rec.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAVERA")}
    env.update(MAVERA_TUI_CONFIG=os.devnull, MAVERA_API_KEY="mvra-recorded")
    cmd = [sys.executable, "-m", "mavera_tui", "record", "--db", str(db), "--proxy"]
    cmd += ["127.0.0.1:0", "--base-url", srv.url, "--duration", "4", "--interval", "0.5"]
    p = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    assert p.stderr is not None
    url = None
    for line in p.stderr:
        if "serving the proxy on " in line:
            url = line.split("serving the proxy on ")[1].split()[0]
            break
    assert url is not None, p.stderr.read()
    with httpx.Client(base_url=url, timeout=30) as c:
        got = [
            c.post(
                "/responses",
                json={"input": str(i)},
                headers={"Authorization": "Bearer local", "X-Mavera-Caller": "app1"},
            )
            for i in range(5)
        ]
    assert [r.status_code for r in got] == [200] * 5
    rest = p.stderr.read()
    assert p.wait(timeout=30) == 0, rest
    rows = query_db(unpacked(db), "SELECT id, state FROM jobs")  # the finished are packed
    assert len(rows) == 5 and all(s == "succeeded" and i.endswith("-app1") for i, s in rows)
    assert len(snapshot_times(db)) >= 4
    assert {r.key for r in srv.sim.records} == {fingerprint("mvra-recorded")}


def test_a_rejected_key_gets_the_api_401_and_others_go_on(
    loopback_sim: Callable[..., LoopbackSim], proxy: Callable[..., ProxyProc]
) -> None:
    """Each key its own engine: the API's 401 for a bad key is passed back (every time,
    not a hang), and a good key beside it is served."""
    srv = loopback_sim(
        SimConfig(
            limit=25,
            window_seconds=WINDOW,
            time_scale=0.02,
            rejected_keys=frozenset({"mvra-revoked"}),
            **RICH,
        )
    )
    px = proxy(srv.url)
    with httpx.Client(base_url=px.url, timeout=30) as c:
        bad = [
            c.post("/responses", json={}, headers={"Authorization": "Bearer mvra-revoked"})
            for _ in range(2)
        ]
        good = c.post("/responses", json={}, headers={"Authorization": "Bearer mvra-fine"})
    assert [r.status_code for r in bad] == [401, 401]
    assert bad[0].json()["error"]["code"] == "invalid_api_key"
    assert "X-Mavera-Governor" not in bad[0].headers  # the API's own answer
    assert good.status_code == 200


def test_the_monitor_engine_serves_the_proxy(
    loopback_sim: Callable[..., LoopbackSim], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``mavera-tui --proxy ADDR``: the monitor's engine is the proxy's; its jobs (with
    their caller in the id) are what the panes show."""
    from mavera_tui.config import Config
    from mavera_tui.engine import Settings
    from mavera_tui.monitor import LiveEngine

    srv = loopback_sim(SimConfig(limit=25, window_seconds=WINDOW, time_scale=0.02, **RICH))
    monkeypatch.setenv("MAVERA_API_KEY", "mvra-monitored")
    cfg = Config()
    cfg.engine.base_url = srv.url
    cfg.engine.window_seconds = WINDOW

    async def main() -> tuple[httpx.Response, Any]:
        live = LiveEngine(
            settings=Settings(config=cfg, keep_finished=False), proxy_listen="127.0.0.1:0"
        )
        await live.boot([], demo=True)
        assert live.error is None and live.proxy is not None
        try:
            async with httpx.AsyncClient(base_url=live.proxy.url) as c:
                r = await c.post(
                    "/responses",
                    json={"input": "x"},
                    headers={"Authorization": "Bearer local", "X-Mavera-Caller": "mon"},
                )
            return r, live.snapshot()
        finally:
            await live.shutdown()

    r, snap = asyncio.run(main())
    assert r.status_code == 200
    assert [j.state for j in snap.jobs if j.id.endswith("-mon")] == ["succeeded"]
    assert any("serving the proxy on" in a.message for a in snap.alerts)
    assert {x.key for x in srv.sim.records} == {fingerprint("mvra-monitored")}


def test_sigterm_answers_what_waits_and_exits(
    loopback_sim: Callable[..., LoopbackSim], proxy: Callable[..., ProxyProc]
) -> None:
    """SIGTERM: what is in flight is answered by the API, what still waits gets the
    proxy's 503 at once (never a dropped connection), and the process exits 0."""
    srv = loopback_sim(SimConfig(limit=3, window_seconds=WINDOW, time_scale=0.02, **RICH))
    px = proxy(srv.url)

    async def main() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=px.url, timeout=30) as c:
            h = {"Authorization": "Bearer mvra-key-e"}
            calls = [
                asyncio.ensure_future(c.post("/responses", json={"input": str(i)}, headers=h))
                for i in range(8)
            ]
            await asyncio.sleep(0.7)
            px.proc.terminate()
            return list(await asyncio.gather(*calls))

    t0 = time.monotonic()
    out = asyncio.run(main())
    assert px.proc.wait(timeout=15) == 0
    assert time.monotonic() - t0 < 10
    codes = Counter(r.status_code for r in out)
    assert codes[200] >= 1 and codes[503] >= 1 and codes[200] + codes[503] == 8
    assert all(r.json()["error"]["type"] == "api_error" for r in out if r.status_code == 503)
    assert sum(1 for r in srv.sim.records if r.endpoint == "responses") == codes[200]


def test_the_key_an_app_sends_is_in_no_artefact_of_the_proxy(
    tmp_path: Any, loopback_sim: Callable[..., LoopbackSim], proxy: Callable[..., ProxyProc]
) -> None:
    """Keys pass through the proxy in memory only: not in its output, its database, its
    metrics or an error it answers (a rejected key's 401 included)."""
    key = "mvra_SECRET_app_key_7f3a9c"
    bad = "mvra_SECRET_rejected_key_0d1e"
    srv = loopback_sim(
        SimConfig(
            limit=25, window_seconds=WINDOW, time_scale=0.02, rejected_keys=frozenset({bad}), **RICH
        )
    )
    db = tmp_path / "proxy.db"
    px = proxy(
        srv.url, "--metrics-port", "0", "--db", str(db), "--debug", str(tmp_path / "debug.log")
    )

    async def main() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=px.url, timeout=30) as c:
            calls = [
                c.post(
                    "/responses",
                    json={"input": f"q{i}"},
                    headers={"Authorization": f"Bearer {key}"},
                )
                for i in range(5)
            ]
            calls.append(c.get("/billing/credits", headers={"Authorization": f"Bearer {bad}"}))
            calls.append(c.post("/nowhere", json={}, headers={"Authorization": f"Bearer {key}"}))
            return await asyncio.gather(*calls)

    out = asyncio.run(main())
    assert [r.status_code for r in out[:5]] == [200] * 5
    assert out[5].status_code == 401, out[5].text
    metrics = px.metrics()
    err = px.stop()
    artefacts = {"answers": "".join(r.text + str(dict(r.headers)) for r in out)}
    artefacts |= {"stderr": err, "stdout": px.line, "metrics": metrics}
    for f in tmp_path.iterdir():
        artefacts[f.name] = f.read_bytes().decode("latin-1")
    assert db.exists()
    for name, text in artefacts.items():
        for secret in (key, bad):
            assert secret not in text, f"{secret[:12]}... in {name}"
            assert secret.removeprefix("mvra_") not in text, f"part of a key in {name}"
