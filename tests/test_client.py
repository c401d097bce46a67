"""The API client: tolerant rate-header parsing, typed errors, safe base URLs, no leaked key."""

from __future__ import annotations

import asyncio
from email.utils import formatdate
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mavera_tui import catalog, fastjson
from mavera_tui import client as api
from mavera_tui.client import (
    ApiClient,
    ConfigError,
    RateHeaders,
    check_base_url,
    classify,
    parse_balance,
    parse_rate_headers,
    parse_retry_after,
)
from mavera_tui.clock import Clock, run_virtual
from mavera_tui.sim import Faults, SimConfig, create_sim, sim_transport
from mavera_tui.states import ErrorKind

NOW = 1_700_000_000.0
LIMIT, REMAINING, RESET, RETRY = (
    catalog.HEADER_LIMIT,
    catalog.HEADER_REMAINING,
    catalog.HEADER_RESET,
    catalog.HEADER_RETRY_AFTER,
)


def parse(**headers: str) -> RateHeaders:
    names = {"limit": LIMIT, "remaining": REMAINING, "reset": RESET, "retry": RETRY}
    return parse_rate_headers({names[k]: v for k, v in headers.items()}, NOW)


# --- rate headers -----------------------------------------------------------------------------


def test_well_formed_headers_are_read() -> None:
    h = parse(limit="60", remaining="12", reset=str(int(NOW) + 30), retry="7")
    assert h == RateHeaders(60, 12, NOW + 30, 7.0)


def test_missing_headers_read_as_unknown() -> None:
    assert parse_rate_headers({}, NOW) == RateHeaders(None, None, None, None)
    assert parse(limit="60") == RateHeaders(60, None, None, None)


@pytest.mark.parametrize(
    "bad",
    [
        "abc",
        "-5",
        "1e400",
        "",
        "  ",
        "12abc",
        "nan",
        "inf",
        "60 per minute",
        "99999999999999999999999",
    ],
)
def test_malformed_values_read_as_unknown_never_as_a_number(bad: str) -> None:
    h = parse(limit=bad, remaining=bad, reset=bad, retry=bad)
    assert (h.limit, h.remaining, h.reset_at) == (None, None, None)
    # Retry-After "-5" means "now"; an absurdly large number is capped, not trusted as is.
    assert h.retry_after in (None, 0.0, api.MAX_SANE_SECONDS)


def test_a_zero_limit_or_a_remaining_above_the_limit_is_distrusted() -> None:
    assert parse(limit="0").limit is None
    h = parse(limit="60", remaining="61")
    assert (h.limit, h.remaining) == (60, None)


def test_reset_in_milliseconds_or_as_seconds_from_now_is_understood() -> None:
    assert parse(reset=str(int((NOW + 30) * 1000))).reset_at == pytest.approx(NOW + 30)
    assert parse(reset="30").reset_at == pytest.approx(NOW + 30)
    assert parse(reset=str(int(NOW) + 5)).reset_at == NOW + 5


def test_a_reset_with_a_fraction_keeps_it() -> None:
    # Truncated, a Reset of now + 5.9 read as now + 5 said the window resets 0.9 s early:
    # at a 6 s window that looked like a calendar boundary and cost a probe's 429.
    assert parse(reset=f"{NOW + 5.9:.3f}").reset_at == pytest.approx(NOW + 5.9, abs=1e-3)
    assert parse(reset=f"{(NOW + 30.25) * 1000:.1f}").reset_at == pytest.approx(
        NOW + 30.25, abs=1e-3
    )
    assert parse(reset="2.5").reset_at == pytest.approx(NOW + 2.5, abs=1e-3)


def test_a_reset_days_away_is_distrusted() -> None:
    assert parse(reset=str(int(NOW) + 3 * 86400)).reset_at is None
    assert parse(reset=str(int(NOW) - 3 * 86400)).reset_at is None


def test_retry_after_as_seconds() -> None:
    assert parse(retry="30").retry_after == 30.0
    assert parse(retry=" 2 ").retry_after == 2.0
    assert parse(retry="0.5").retry_after == 0.5


def test_retry_after_as_an_http_date_in_the_future_and_in_the_past() -> None:
    future = formatdate(NOW + 120, usegmt=True)  # IMF-fixdate: "Tue, 14 Nov 2023 ..."
    assert future.endswith("GMT")
    assert parse(retry=future).retry_after == pytest.approx(120)
    past = formatdate(NOW - 600, usegmt=True)
    assert parse(retry=past).retry_after == 0.0


def test_retry_after_in_the_obsolete_rfc_850_and_asctime_formats() -> None:
    # RFC 7231 7.1.1.1: recipients must accept all three date formats.
    wall = 784_111_777.0 - 60  # one minute before Sun, 06 Nov 1994 08:49:37 GMT
    for value in (
        "Sun, 06 Nov 1994 08:49:37 GMT",
        "Sunday, 06-Nov-94 08:49:37 GMT",
        "Sun Nov  6 08:49:37 1994",
    ):
        assert parse_retry_after(value, wall) == pytest.approx(60), value


def test_a_negative_retry_after_means_now_and_a_huge_one_is_capped_not_overflowing() -> None:
    assert parse(retry="-5").retry_after == 0.0
    huge = parse(retry="1000000000").retry_after
    assert huge is not None and 86400 < huge <= api.MAX_SANE_SECONDS
    assert parse(retry="not a date").retry_after is None


@settings(max_examples=400, deadline=None)
@given(
    values=st.dictionaries(
        st.sampled_from([LIMIT, REMAINING, RESET, RETRY, "X-Other"]), st.text(max_size=40)
    ),
    now=st.floats(0, 4e9, allow_nan=False),
)
def test_parse_rate_headers_never_raises_on_arbitrary_text(
    values: dict[str, str], now: float
) -> None:
    h = parse_rate_headers(values, now)
    for v in (h.limit, h.remaining):
        assert v is None or v >= 0
    assert h.retry_after is None or 0 <= h.retry_after <= api.MAX_SANE_SECONDS


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(
        st.tuples(
            st.sampled_from([LIMIT, REMAINING, RESET, RETRY]),
            st.binary(max_size=40).filter(lambda b: b"\r" not in b and b"\n" not in b),
        ),
        max_size=6,
    )
)
def test_parse_rate_headers_never_raises_on_arbitrary_bytes_off_the_wire(
    values: list[tuple[str, bytes]],
) -> None:
    headers = httpx.Headers([(k.encode(), v) for k, v in values])
    parse_rate_headers(headers, NOW)


# --- classify ---------------------------------------------------------------------------------


def envelope(code: str | None, message: str = "m") -> dict[str, Any]:
    return {"error": {"message": message, "type": "t", "code": code}}


def test_a_429_for_the_window_and_one_for_a_concurrency_cap_are_told_apart() -> None:
    h0 = RateHeaders(60, 0, None, 5.0)
    err = classify(429, envelope(catalog.CODE_RATE_LIMIT), h0)
    assert err is not None and err.kind == ErrorKind.RATE_LIMITED
    err = classify(429, envelope(catalog.CODE_CONCURRENCY), RateHeaders(60, 40, None, 1.0))
    assert err is not None and err.kind == ErrorKind.CONCURRENCY


def test_a_429_with_an_unknown_code_is_a_concurrency_limit_only_if_the_window_had_room() -> None:
    assert (
        classify(429, envelope("slow_down"), RateHeaders(60, 3, None, None)).kind
        == ErrorKind.CONCURRENCY
    )  # type: ignore[union-attr]
    assert (
        classify(429, envelope("slow_down"), RateHeaders(60, 0, None, None)).kind
        == ErrorKind.RATE_LIMITED
    )  # type: ignore[union-attr]
    assert classify(429, None, RateHeaders()).kind == ErrorKind.RATE_LIMITED  # type: ignore[union-attr]


def test_402_credits_exhausted_and_budget_exceeded_are_distinct() -> None:
    err = classify(402, envelope(catalog.CODE_CREDITS_EXHAUSTED), RateHeaders())
    assert err is not None and err.kind == ErrorKind.CREDITS and err.code == "credits_exhausted"
    err = classify(402, envelope(catalog.CODE_BUDGET_EXCEEDED), RateHeaders())
    assert err is not None and err.kind == ErrorKind.BUDGET
    err = classify(402, {"error": "no money"}, RateHeaders())
    assert err is not None and err.kind == ErrorKind.CREDITS and err.message == "no money"


def test_401_5xx_and_other_4xx_are_typed() -> None:
    assert classify(401, envelope("invalid_api_key"), RateHeaders()).kind == ErrorKind.AUTH  # type: ignore[union-attr]
    assert classify(403, None, RateHeaders()).kind == ErrorKind.AUTH  # type: ignore[union-attr]
    for status in (500, 502, 503, 504):
        err = classify(status, "<html>", RateHeaders())
        assert err is not None and err.kind == ErrorKind.SERVER and ErrorKind(err.kind).retryable
    assert classify(404, envelope("not_found"), RateHeaders()).kind == ErrorKind.CLIENT  # type: ignore[union-attr]
    assert classify(200, {}, RateHeaders()) is None


def test_parse_balance_reads_the_documented_and_the_simulated_shapes() -> None:
    b = parse_balance(
        {
            "balance": 1200,
            "plan_credits_remaining": 700,
            "purchased_credits": 500,
            "monthly_allocation": 2000,
        }
    )
    assert b is not None and (b.total, b.plan_remaining, b.purchased, b.allocation) == (
        1200,
        700,
        500,
        2000,
    )
    assert parse_balance({"data": {"credits": 5}}).total == 5  # type: ignore[union-attr]
    assert parse_balance({"nothing": 1}) is None
    assert parse_balance("garbage") is None


# --- base URL -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://app.mavera.io/api/v1",
        "https://app.mavera.io/api/v1/",
        "http://127.0.0.1:8000/api/v1",
        "http://localhost:9/api/v1",
        "http://[::1]:8000/api/v1",
        "https://10.0.0.5/api",
    ],
)
def test_https_anywhere_and_plain_http_to_loopback_are_accepted(url: str) -> None:
    assert check_base_url(url) == url.rstrip("/")


@pytest.mark.parametrize(
    "url",
    [
        "http://app.mavera.io/api/v1",
        "http://10.0.0.5:8000/api/v1",
        "http://example.com",
        "http://127.attacker.example/api/v1",
        "http://localhost.attacker.example/api/v1",
        "ftp://app.mavera.io",
        "app.mavera.io/api/v1",
        "https://user:pw@app.mavera.io/api/v1",
    ],
)
def test_plain_http_to_any_other_host_and_odd_urls_are_refused(url: str) -> None:
    with pytest.raises(ConfigError):
        check_base_url(url)


def test_the_client_refuses_plain_http_to_a_remote_host_without_showing_the_key() -> None:
    key = "mvra_test_SECRET_0123456789"
    with pytest.raises(ConfigError) as info:
        ApiClient("http://app.mavera.io/api/v1", key)
    assert key not in str(info.value)
    with pytest.raises(ConfigError) as info:
        ApiClient("https://app.mavera.io/api/v1", key + "\n")
    assert key not in str(info.value)
    with pytest.raises(ConfigError):
        ApiClient("https://app.mavera.io/api/v1", "  ")


# --- the key never leaks ----------------------------------------------------------------------


def test_the_api_key_never_appears_in_repr_or_in_any_outcome_or_error_text() -> None:
    key = "mvra_test_SECRET_0123456789"
    texts: list[str] = []

    async def main() -> None:
        clock = Clock(wall0=NOW)
        client = ApiClient("https://app.mavera.io/api/v1", key, clock=clock)
        texts.append(repr(client))
        await client.aclose()
        # Every kind of outcome the simulator can produce.
        sim = create_sim(
            SimConfig(
                limit=1000,
                time_scale=0.0,
                seed=3,
                allocation=10**6,
                faults=Faults(
                    error_5xx_rate=0.2,
                    drop_rate=0.2,
                    bad_body_rate=0.2,
                    bad_headers=0.2,
                    hostile_text=True,
                ),
            ),
            clock,
        )
        c = ApiClient("http://sim/api/v1", key, clock=clock, transport=sim_transport(sim))
        texts.append(repr(c))
        outs = []
        for i in range(40):
            outs.append(
                await c.request(
                    "POST", "/focus-groups", {"sample_size": 10 + i, "questions": ["a"]}
                )
            )
        outs.append(await c.request("POST", "/nope", {}))
        await c.aclose()
        small = create_sim(
            SimConfig(limit=2, time_scale=0.0, plan="starter", period_used=490), clock
        )
        c = ApiClient("http://sim/api/v1", key, clock=clock, transport=sim_transport(small))
        outs.append(await c.request("POST", "/video-analyses", {}))  # 10 left: 402
        outs.append(await c.request("GET", "/personas"))
        outs.append(await c.request("GET", "/personas"))  # window 429
        await c.aclose()
        small.config.rejected_keys = frozenset({key})
        c = ApiClient("http://sim/api/v1", key, clock=clock, transport=sim_transport(small))
        outs.append(await c.request("GET", "/personas"))  # 401
        await c.aclose()

        def boom(request: httpx.Request) -> httpx.Response:
            if request.url.path.endswith("/slow"):
                raise httpx.ReadTimeout(f"timed out, headers were {request.headers!r}")
            raise httpx.ConnectError(f"cannot connect, headers were {request.headers!r}")

        c = ApiClient("http://x/api/v1", key, clock=clock, transport=httpx.MockTransport(boom))
        outs.append(await c.request("POST", "/responses", {}))
        outs.append(await c.request("POST", "/slow", {}))
        await c.aclose()
        kinds = {o.error.kind for o in outs if o.error}
        assert {
            ErrorKind.SERVER,
            ErrorKind.CONNECTION,
            ErrorKind.BAD_RESPONSE,
            ErrorKind.AUTH,
            ErrorKind.TIMEOUT,
            ErrorKind.CLIENT,
            ErrorKind.RATE_LIMITED,
            ErrorKind.CREDITS,
        } <= kinds, kinds
        for o in outs:
            texts.append(repr(o))
            if o.error:
                texts.append(o.error.describe())
                texts.append(str(o.error))

    run_virtual(main())
    assert texts
    for t in texts:
        assert key not in t
        assert "SECRET" not in t


def test_requests_carry_the_bearer_key_and_json_and_read_usage() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200,
            json={"id": "r1", "usage": {"credits_used": 4, "total_tokens": 99}},
            headers={LIMIT: "60", REMAINING: "59", RESET: "30"},
        )

    async def main() -> api.Outcome:
        c = ApiClient("https://x/api/v1", "k1", transport=httpx.MockTransport(handler))
        try:
            return await c.request("POST", "/responses", {"input": "hi"})
        finally:
            await c.aclose()

    out = asyncio.run(main())
    assert out.ok and out.status == 200 and out.credits_used == 4 and out.tokens == 99
    assert out.headers.limit == 60 and out.headers.remaining == 59
    assert seen[0].headers["Authorization"] == "Bearer k1"
    assert seen[0].url.path == "/api/v1/responses"
    assert seen[0].content == b'{"input":"hi"}'


def test_over_a_socket_each_request_reports_its_own_write_once_before_the_server_counts_it(
    loopback_sim: Any,
) -> None:
    """``on_written`` (the window mirror's stamp) over aiohttp: called once per request,
    for that request only (concurrent sends in their own tasks), before the server has it;
    a request that never reached a server reports no write."""
    srv = loopback_sim(limit=100, window_seconds=2.0, time_scale=0.01, seed=1)

    async def main() -> tuple[list[api.Outcome], list[list[int]], api.Outcome, list[int]]:
        c = ApiClient(srv.url, "mvra_test_written")
        assert c.reports_writes
        calls: list[list[int]] = [[] for _ in range(5)]

        def stamp(i: int) -> Any:
            return lambda: calls[i].append(len(srv.sim.records))

        try:
            outs = await asyncio.gather(
                *(
                    c.request("POST", "/responses", {"input": f"q{i}"}, on_written=stamp(i))
                    for i in range(5)
                )
            )
        finally:
            await c.aclose()
        # A port nobody listens on (the server's, once it is stopped, is not ours to stop).
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        dead = ApiClient(f"http://127.0.0.1:{port}/api/v1", "mvra_test_written")
        refused: list[int] = []
        try:
            gone = await dead.request(
                "POST", "/responses", {"input": "x"}, on_written=lambda: refused.append(1)
            )
        finally:
            await dead.aclose()
        return outs, calls, gone, refused

    outs, calls, gone, refused = asyncio.run(main())
    assert [o.status for o in outs] == [200] * 5
    assert all(o.written is True for o in outs)
    assert all(len(c) == 1 for c in calls), calls  # once each, none for another's send
    assert all(c[0] < 5 for c in calls)  # before the server had recorded all five
    assert len(srv.sim.records) == 5
    assert gone.error is not None and gone.error.kind == api.CONNECTION
    assert gone.written is False and refused == []


_JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats()
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(_JSON_VALUES)
def test_the_fast_json_reads_and_writes_every_value_as_the_json_module_does(value: Any) -> None:
    import json

    text = json.dumps(value).encode()
    # Read: the same value (NaN, infinities, integers past 64 bits included); compared by
    # repr, as NaN != NaN.
    assert repr(fastjson.loads(text)) == repr(json.loads(text))
    # Written: a body that reads back as json.dumps's own does.
    assert repr(json.loads(fastjson.dumps_bytes(value))) == repr(json.loads(text))


def test_the_fast_json_falls_back_where_orjson_would_differ() -> None:
    import json

    for raw in (b"\xef\xbb\xbf{}", b"1e400", b"[18446744073709551616]", b'{"a": NaN}'):
        assert repr(fastjson.loads(raw)) == repr(json.loads(raw))
    assert fastjson.dumps_bytes({"x": float("nan")}) == b'{"x": NaN}'
    assert fastjson.dumps_bytes({1: 2}) == b'{"1": 2}'
    assert fastjson.dumps_bytes({"input": "hi"}) == b'{"input":"hi"}'  # the fast path itself


_CREDITS_BODY = b'{"credits": 1}'
#: One fixed HTTP/1.1 answer, for the raw loopback servers below.
_RAW_ANSWER = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
    + b"content-length: %d\r\n\r\n" % len(_CREDITS_BODY)
    + _CREDITS_BODY
)


def _raw_server(delay: float = 0.0, on_connect: Any = None) -> Any:
    """A keep-alive server's connection handler: ``_RAW_ANSWER`` ``delay`` seconds after
    each request's headers; ``on_connect()`` is called for each new connection."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if on_connect is not None:
            on_connect()
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                if delay:
                    await asyncio.sleep(delay)
                writer.write(_RAW_ANSWER)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return serve


@pytest.mark.parametrize("backend", ["aiohttp", "httpx"])
def test_a_connection_idle_past_the_keepalive_is_not_reused(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server drops idle connections (uvicorn after 5 s, gunicorn after 2 s); a request
    written as it does is lost on the way while the window mirror counts it. The client
    keeps an idle connection only ``KEEPALIVE_SECONDS``: reused within it, not past it.
    Real loopback sockets; the keepalive is shortened so that the test takes two seconds."""
    monkeypatch.setattr(api, "KEEPALIVE_SECONDS", 1.0)
    connections: list[int] = []

    async def main() -> None:
        serve = _raw_server(on_connect=lambda: connections.append(1))
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        c = ApiClient(f"http://127.0.0.1:{port}/api/v1", "mvra_test_keepalive", backend=backend)
        try:
            for pause in (0.0, 0.05, 1.6):  # reused, reused, then idle past the keepalive
                await asyncio.sleep(pause)
                out = await c.request("GET", "/billing/credits")
                assert out.status == 200
        finally:
            await c.aclose()
            server.close()
            await server.wait_closed()

    asyncio.run(main())
    assert len(connections) == 2


@pytest.mark.parametrize("backend", ["aiohttp", "httpx"])
def test_latency_runs_from_the_request_on_the_wire_not_from_a_wait_for_a_connection(
    backend: str,
) -> None:
    """The plan's latency prior scales every endpoint's by the answers seen so far, so a
    request's latency must be the server's: two requests share one pooled connection to a
    server that answers in 0.3 s; the second waits 0.3 s for the connection and its latency
    is still about 0.3 s. Real loopback sockets."""

    async def main() -> list[tuple[float, float]]:
        server = await asyncio.start_server(_raw_server(delay=0.3), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        c = ApiClient(
            f"http://127.0.0.1:{port}/api/v1",
            "mvra_test_latency",
            backend=backend,
            max_connections=1,
        )
        loop = asyncio.get_running_loop()

        async def one() -> tuple[float, float]:
            t0 = loop.time()
            out = await c.request("GET", "/billing/credits", on_written=lambda: None)
            assert out.status == 200
            return out.latency, loop.time() - t0

        try:
            return list(await asyncio.gather(one(), one()))
        finally:
            await c.aclose()
            server.close()
            await server.wait_closed()

    got = sorted(asyncio.run(main()), key=lambda r: r[1])
    (lat1, _), (lat2, total2) = got
    assert total2 >= 0.55  # the second did wait for the first's connection
    assert 0.28 <= lat1 < 0.45 and 0.28 <= lat2 < 0.45
