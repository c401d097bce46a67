"""The HTTP edge: one httpx.AsyncClient, Bearer auth, tolerant header parsing, typed outcomes.

Every request returns an ``Outcome`` (never raises for HTTP or transport trouble): status,
credits used, the rate headers as parsed (None where missing or malformed) and, for
failures, a typed ``ApiError``. The key lives only in the client's default headers; it is
never put in an error message, a repr or a log line.
"""

from __future__ import annotations

import asyncio
import contextvars
import email.utils
import ipaddress
import json
import math
import re
import ssl
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import httpx

from . import catalog, fastjson
from .api_types import (
    AUTH,
    BAD_RESPONSE,
    BUDGET,
    CLIENT,
    CONCURRENCY,
    CONNECTION,
    CREDITS,
    RATE_LIMITED,
    RETRYABLE,
    SERVER,
    TIMEOUT,
    ApiError,
    Outcome,
    RateHeaders,
    RawAnswer,
    StreamSink,
)
from .clock import Clock
from .errors import ConfigError

__all__ = [
    "AUTH",
    "BAD_RESPONSE",
    "BUDGET",
    "CLIENT",
    "CONCURRENCY",
    "CONNECTION",
    "CREDITS",
    "RATE_LIMITED",
    "RETRYABLE",
    "SERVER",
    "TIMEOUT",
    "ApiClient",
    "ApiError",
    "Balance",
    "ConfigError",
    "Outcome",
    "RateHeaders",
    "RawAnswer",
    "SinkGone",
    "StreamSink",
]


_INT_RE = re.compile(r"^\s*-?\d+(\.\d+)?\s*$")
MAX_SANE_SECONDS = 10 * 365 * 86400.0


def _parse_num(value: str | None) -> float | None:
    """A non-negative decimal number, or None."""
    if value is None or not _INT_RE.match(value):
        return None
    try:
        n = float(value)
    except ValueError:
        return None
    # Up to 1e14: a Reset in Unix milliseconds (1.7e12 today) must get through to the caller.
    if not math.isfinite(n) or n < 0 or n > 1e14:
        return None
    return n


def _parse_int(value: str | None) -> int | None:
    n = _parse_num(value)
    return None if n is None else int(n)


def parse_retry_after(value: str | None, now_wall: float) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP-date. None if unusable.

    Negative values and dates in the past mean "now" (0); garbage means "unknown" (None).
    """
    if value is None:
        return None
    v = value.strip()
    if not v:
        return None
    if re.match(r"^-?\d+(\.\d+)?$", v):
        secs = float(v)
        if not math.isfinite(secs):
            return None
        return min(max(0.0, secs), MAX_SANE_SECONDS)
    try:
        dt = email.utils.parsedate_to_datetime(v)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if dt is None:
        return None
    if dt.tzinfo is None:  # RFC 9110 dates are GMT
        import datetime as _dt

        dt = dt.replace(tzinfo=_dt.UTC)
    return min(max(0.0, dt.timestamp() - now_wall), MAX_SANE_SECONDS)


def _is_httpx_headers(headers: Any) -> bool:
    # httpx is imported only where it is used (a test's transport, ``backend="httpx"``):
    # importing it costs a headless run 75 ms of start-up (it pulls in rich for its CLI).
    mod = sys.modules.get("httpx")
    return mod is not None and isinstance(headers, mod.Headers)


def parse_rate_headers(headers: Any, now_wall: float) -> RateHeaders:
    """Parse the rate headers, tolerating absent, malformed, negative and absurd values.

    ``headers``: httpx.Headers or aiohttp's multidict (both case-insensitive), or a plain
    mapping of text."""
    if hasattr(headers, "getall") or _is_httpx_headers(headers):
        h: Any = headers
    else:  # plain text: httpx.Headers() would raise on non-ASCII values
        h = {str(k).lower(): v for k, v in headers.items()}
        h = {
            name: h.get(name.lower())
            for name in (
                catalog.HEADER_LIMIT,
                catalog.HEADER_REMAINING,
                catalog.HEADER_RESET,
                catalog.HEADER_RETRY_AFTER,
            )
        }
    limit = _parse_int(h.get(catalog.HEADER_LIMIT))
    if limit == 0:
        limit = None  # a zero limit would stop all traffic; treat it as malformed
    remaining = _parse_int(h.get(catalog.HEADER_REMAINING))
    if limit is not None and remaining is not None and remaining > limit:
        remaining = None
    # Kept with its fraction: a Reset of 1764000005.9 read as ...005 says the window
    # resets 0.9 s early, which at short windows looks like a calendar boundary
    # (fixed_window.py) and costs a probe's 429 on a sliding server.
    reset_raw = _parse_num(h.get(catalog.HEADER_RESET))
    reset_at: float | None = None
    if reset_raw is not None:
        # Unix seconds per the docs; tolerate milliseconds and small "seconds from now" values.
        if reset_raw > 1e11:
            reset_at = reset_raw / 1000.0
        elif reset_raw < 1e8:
            reset_at = now_wall + reset_raw
        else:
            reset_at = float(reset_raw)
        if abs(reset_at - now_wall) > 86400:
            reset_at = None
    retry_after = parse_retry_after(h.get(catalog.HEADER_RETRY_AFTER), now_wall)
    return RateHeaders(limit, remaining, reset_at, retry_after)


def _error_fields(body: Any) -> tuple[str | None, str]:
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            code = err.get("code")
            msg = err.get("message")
            return (
                str(code)[:100] if code is not None else None,
                str(msg)[:500] if msg is not None else "",
            )
        if isinstance(err, str):
            return None, err[:500]
    return None, ""


def classify(status: int, body: Any, headers: RateHeaders) -> ApiError | None:
    """Turn an HTTP status and error envelope into a typed error (None for success)."""
    if 200 <= status < 300:
        return None
    code, message = _error_fields(body)
    if status == 429:
        if code == catalog.CODE_CONCURRENCY:
            return ApiError(CONCURRENCY, status, code, message)
        if code == catalog.CODE_RATE_LIMIT:
            return ApiError(RATE_LIMITED, status, code, message)
        # Unknown code: if the window still had room, it was not the window.
        if headers.remaining is not None and headers.remaining > 0:
            return ApiError(CONCURRENCY, status, code, message)
        return ApiError(RATE_LIMITED, status, code, message)
    if status == 402:
        kind = BUDGET if code == catalog.CODE_BUDGET_EXCEEDED else CREDITS
        return ApiError(kind, status, code, message)
    if status in (401, 403):
        return ApiError(AUTH, status, code, message)
    if status >= 500:
        return ApiError(SERVER, status, code, message)
    return ApiError(CLIENT, status, code, message)


def is_loopback_host(host: str) -> bool:
    """localhost or a loopback IP address (127.0.0.0/8, ::1); not a name like 127.x.example."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_base_url(url: str) -> str:
    """Validate a base URL: https anywhere, plain http only to localhost / loopback."""
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ConfigError(f"base URL {url!r} is not a URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"base URL {url!r} must start with https:// (or http:// for localhost)")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ConfigError(
            f"refusing plain http:// to {parts.hostname}: the API key would travel "
            "unencrypted. Use https://, or http:// only for localhost."
        )
    if parts.username or parts.password:
        raise ConfigError("base URL must not contain credentials; set MAVERA_API_KEY")
    return url.rstrip("/")


class SinkGone(Exception):
    """The stream sink raised: the caller of a streamed request went away."""


def _is_event_stream(status: int, headers: Any) -> bool:
    ct = headers.get("content-type") or headers.get("Content-Type") or ""
    return 200 <= status < 300 and "text/event-stream" in ct.lower()


async def _pump(
    sink: StreamSink,
    status: int,
    pairs: tuple[tuple[str, str], ...],
    chunks: AsyncIterator[bytes],
) -> bytes:
    """Pass an event stream to ``sink`` as it arrives; returns it whole (small: kept for
    the usage at its end). A sink that raises is the caller gone: ``SinkGone``."""
    try:
        await sink.start(status, pairs)
    except Exception as e:
        raise SinkGone(str(e)) from e
    kept: list[bytes] = []
    async for chunk in chunks:
        kept.append(chunk)
        try:
            await sink.write(chunk)
        except Exception as e:
            raise SinkGone(str(e)) from e
    try:
        await sink.end()
    except Exception as e:
        raise SinkGone(str(e)) from e
    return b"".join(kept)


def sse_final_response(content: bytes) -> Any:
    """The ``response`` object of the last ``response.completed`` (or ``.failed`` /
    ``.incomplete``) event of a Responses API event stream, or None: its ``usage`` is what
    the streamed request was charged."""
    found: Any = None
    for line in content.split(b"\n"):
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if not data or data == b"[DONE]" or b'"response.' not in data:
            continue
        try:
            ev = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
            continue
        if isinstance(ev, dict) and ev.get("type") in (
            "response.completed",
            "response.failed",
            "response.incomplete",
        ):
            found = ev.get("response")
    return found


class ApiClient:
    """Async client for the Mavera API (or anything that speaks its HTTP contract).

    Real sockets go through aiohttp's connection pool; an explicit httpx ``transport`` (the
    in-process simulator, mocks in tests) or ``backend="httpx"`` goes through httpx.
    Measured with ``bench/bench_transport.py`` over loopback (client CPU per request, 2-core
    machine): aiohttp 0.2 ms at 200 in flight, httpx's own pool 1.6 ms at 1 in flight and
    14 ms at 200 (its pool contends), httpx over aiohttp 0.5 ms. The engine's CPU target is
    0.3 ms a request at 600 in flight, so the edge speaks aiohttp directly.

    ``request(..., on_written=f)`` calls ``f()`` as the request's headers go on the wire
    (real sockets only; ``reports_writes`` says whether it will): the window mirror stamps a
    send then, not when its task started, so that a burst's stamps stay close to arrival.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        clock: Clock | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 120.0,
        connect_timeout: float = 10.0,
        max_connections: int = 256,
        backend: str = "aiohttp",
    ):
        if not api_key or not api_key.strip():
            raise ConfigError("no API key: set MAVERA_API_KEY")
        if any(c in api_key for c in "\r\n\x00"):
            raise ConfigError("the API key contains control characters; check MAVERA_API_KEY")
        if backend not in BACKENDS:
            raise ConfigError(f"unknown HTTP backend {backend!r}; choose {', '.join(BACKENDS)}")
        self.base_url = check_base_url(base_url) if transport is None else base_url.rstrip("/")
        self.clock = clock or Clock()
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_connections = max_connections
        self._headers = {
            "Authorization": f"Bearer {api_key.strip()}",
            "User-Agent": "mavera-tui/0.1",
        }
        self._ssl_context: ssl.SSLContext | None = None
        self._httpx: httpx.AsyncClient | None = None
        # What a send may raise for a timeout and for a failed connection (httpx's own
        # exceptions only when httpx is in use: see _is_httpx_headers).
        self._timeouts: tuple[type[BaseException], ...] = (TimeoutError,)
        self._transport_errors: tuple[type[BaseException], ...] = (OSError,)
        self._session: Any = None
        self._urls: dict[str, Any] = {}  # path -> parsed URL (see _url)
        self.backend = "httpx" if transport is not None else backend
        self.reports_writes = transport is None
        if self.backend == "aiohttp":
            import aiohttp

            self._transport_errors = (aiohttp.ClientError, OSError)
        if self.backend == "httpx":
            import httpx

            self._timeouts = (httpx.TimeoutException, TimeoutError)
            self._transport_errors = (httpx.TransportError, OSError)
            limits = httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_connections,
                keepalive_expiry=KEEPALIVE_SECONDS,
            )
            self._httpx = httpx.AsyncClient(
                base_url=self.base_url,
                headers=self._headers,
                timeout=httpx.Timeout(timeout, connect=connect_timeout),
                limits=limits,
                transport=transport
                or httpx.AsyncHTTPTransport(verify=self.ssl_context, limits=limits),
                follow_redirects=False,
            )

    @property
    def ssl_context(self) -> ssl.SSLContext:
        """TLS: certificates verified against certifi's roots (what httpx uses), hostnames
        checked; never turned off. Built on first use: loading the roots costs start-up
        20 ms, for nothing on a plain-HTTP base URL (the simulator, a local proxy)."""
        if self._ssl_context is None:
            import certifi

            self._ssl_context = ssl.create_default_context(cafile=certifi.where())
        return self._ssl_context

    def __repr__(self) -> str:  # never show the key
        return f"ApiClient({self.base_url!r})"

    def origin_path(self, path: str) -> str:
        """An absolute URL for ``path`` on the base URL's host (outside its /api/v1)."""
        parts = urlsplit(self.base_url)
        return f"{parts.scheme}://{parts.netloc}{path}"

    async def aclose(self) -> None:
        if self._httpx is not None:
            await self._httpx.aclose()
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _aiohttp_session(self) -> Any:
        import aiohttp

        if self._session is None:
            # Built inside the running loop: aiohttp binds a session to its loop.
            connector = aiohttp.TCPConnector(
                limit=self.max_connections,
                ssl=self.ssl_context if self.base_url.startswith("https:") else True,
                ttl_dns_cache=300,
                keepalive_timeout=KEEPALIVE_SECONDS,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                # "identity": answers uncompressed, as skip_auto_headers=("Accept-Encoding",)
                # did, without the sorted copy of the headers aiohttp makes per request then.
                headers={**self._headers, "Accept-Encoding": "identity"},
                request_class=_stamped_request_class(),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout),
                # The API sets no cookies we need; the jar's per-request filtering does show
                # in a flood's profile.
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    def _url(self, path: str) -> Any:
        """The parsed URL for ``path``, cached: parsing it again for each request of a
        batch (a few paths, thousands of requests) showed in a flood's profile."""
        url = self._urls.get(path)
        if url is None:
            import yarl

            url = yarl.URL(path if "://" in path else self.base_url + path)
            if len(self._urls) < 256:
                self._urls[path] = url
        return url

    async def _send_aiohttp(
        self, method: str, path: str, kw: dict[str, Any], on_written: Any, sink: Any
    ) -> tuple[int, Any, bytes, bool]:
        token = _ON_WRITTEN.set(on_written)
        try:
            async with self._aiohttp_session().request(
                method, self._url(path), allow_redirects=False, **kw
            ) as resp:
                if sink is None or not _is_event_stream(resp.status, resp.headers):
                    return resp.status, resp.headers, await resp.read(), False
                try:
                    pairs = tuple(resp.headers.items())
                    body = await _pump(sink, resp.status, pairs, resp.content.iter_any())
                except BaseException:
                    resp.close()  # the caller went away (or we were cancelled): close upstream
                    raise
                return resp.status, resp.headers, body, True
        finally:
            _ON_WRITTEN.reset(token)

    async def _send_httpx(
        self, method: str, path: str, kw: dict[str, Any], on_written: Any, sink: Any
    ) -> tuple[int, Any, bytes, bool]:
        assert self._httpx is not None
        if on_written is not None:

            async def trace(event: str, info: dict[str, Any]) -> None:
                if event.endswith("send_request_headers.complete"):
                    on_written()

            kw["extensions"] = {"trace": trace}
        if sink is None:
            resp = await self._httpx.request(method, path, **kw)
            return resp.status_code, resp.headers, resp.content, False
        async with self._httpx.stream(method, path, **kw) as resp:
            if not _is_event_stream(resp.status_code, resp.headers):
                return resp.status_code, resp.headers, await resp.aread(), False
            pairs = tuple(resp.headers.multi_items())
            body = await _pump(sink, resp.status_code, pairs, resp.aiter_raw())
            return resp.status_code, resp.headers, body, True

    async def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        timeout: float | None = None,
        on_written: Any = None,
        *,
        raw: bool = False,
        sink: StreamSink | None = None,
    ) -> Outcome:
        """Send one request; every failure comes back as an Outcome with an ApiError.

        ``raw``: keep the answer as it came (``Outcome.raw``). ``sink``: a 2xx event stream
        is passed to it as it arrives (and kept for its usage); a sink that raises makes a
        CONNECTION error whose ``written`` is True and whose message says the caller went.
        ``Outcome.written`` says whether the request went on the wire (None: unknown)."""
        t0 = self.clock.now()
        wrote: list[float] = []  # when the request went on the wire (real sockets)
        if self._httpx is None or on_written is not None:
            outer = on_written

            def written() -> None:
                if not wrote:
                    wrote.append(self.clock.now())
                if outer is not None:
                    outer()

            on_written = written
        method = method.upper()
        kw = self._body_kw(method, body)
        send = self._send_httpx if self._httpx is not None else self._send_aiohttp
        try:
            # The timeout is for the whole request: per-operation timeouts never cut off a
            # server that trickles bytes, or an in-process app.
            async with asyncio.timeout(timeout if timeout is not None else self.timeout):
                status, raw_headers, content, streamed = await send(
                    method, path, kw, on_written, sink
                )
        except SinkGone:
            return Outcome(
                None,
                self.clock.now() - t0,
                error=ApiError(CONNECTION, None, None, "the caller went away mid-stream"),
                written=True,
            )
        except self._timeouts:
            return Outcome(
                None,
                self.clock.now() - t0,
                error=ApiError(TIMEOUT, None, None, "request timed out"),
                written=self._wrote(wrote),
            )
        except self._transport_errors as e:
            return Outcome(
                None,
                self.clock.now() - t0,
                error=ApiError(CONNECTION, None, None, f"connection failed: {type(e).__name__}"),
                written=self._wrote(wrote),
            )
        except Exception as e:  # an in-process app raising is a dropped connection too
            return Outcome(
                None,
                self.clock.now() - t0,
                error=ApiError(CONNECTION, None, None, f"connection failed: {type(e).__name__}"),
                written=self._wrote(wrote),
            )
        # From the write: connection set-up and pool waits are not the endpoint's latency.
        latency = self.clock.now() - (wrote[0] if wrote else t0)
        headers = parse_rate_headers(raw_headers, self.clock.wall())
        try:
            if streamed:  # the event stream's final response object carries the usage
                body_json: Any = sse_final_response(content)
                readable = body_json is not None
            else:
                body_json = fastjson.loads(content) if content else None
                readable = True
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
            body_json, readable = None, False
        error = classify(status, body_json, headers)
        credits, tokens = _usage(body_json)
        if error is None and (not readable or not isinstance(body_json, dict)):
            error = ApiError(
                BAD_RESPONSE, status, None, "response body is not valid JSON; the charge is unknown"
            )
        answer = None
        if raw:
            pairs = (
                tuple(raw_headers.multi_items())
                if _is_httpx_headers(raw_headers)
                else tuple(raw_headers.items())
            )
            answer = RawAnswer(status, pairs, b"" if streamed else content, streamed)
        return Outcome(
            status, latency, headers, credits, tokens, body_json, error, answer, self._wrote(wrote)
        )

    def _body_kw(self, method: str, body: dict[str, Any] | None) -> dict[str, Any]:
        """The request's body (JSON) or, for a GET, its query parameters, as keywords."""
        if method != "GET":
            if self._httpx is None:  # our own encoding (fastjson), as aiohttp's json=
                from aiohttp import BytesPayload

                return {"data": BytesPayload(fastjson.dumps_bytes(body or {}), content_type=_JSON)}
            return {"json": body or {}}
        if body:
            return {
                "params": {
                    k: v
                    for k, v in body.items()
                    if isinstance(v, (str, int, float)) and not isinstance(v, bool)
                }
            }
        return {}

    def _wrote(self, wrote: list[float]) -> bool | None:
        """Whether the request went on the wire: known on aiohttp (its trace says), else
        None (an in-process transport: assume it may have)."""
        if wrote:
            return True
        return False if self._httpx is None else None


BACKENDS = ("aiohttp", "httpx")
#: How long an idle connection is kept for reuse. Servers drop idle connections too, and a
#: request written as the server closes its side is lost on the way ("connection failed",
#: its charge unknown, the job sent again) though the window mirror counted it for a whole
#: window: uvicorn closes after 5 s, gunicorn after 2 s, and aiohttp kept them 15 s. At
#: enterprise in compressed time a connection idles about 5 s between windows: 1-8 such
#: losses in most runs of 3,000 jobs in exactly 5 windows, a send or a few spilling into a
#: sixth window (1.28-1.30 of the bound; 1.15-1.17 with this, 0 retries, bench_http ent-5x).
KEEPALIVE_SECONDS = 1.5
_JSON = "application/json"
#: The ``on_written`` of the request this task is sending over aiohttp (see
#: ``_stamped_request_class``): each request runs in its own task, or one after another in it.
_ON_WRITTEN: contextvars.ContextVar[Any] = contextvars.ContextVar("mavera_on_written", default=None)
_REQUEST_CLASS: Any = None


def _stamped_request_class() -> Any:
    """aiohttp's ClientRequest, calling the sending task's ``on_written`` as it sends.

    ``ClientRequest.send(conn)`` runs once a connection is ours and puts the request line
    and headers on it (the body follows in the same step of the loop, or the next). This
    was a TraceConfig's ``on_request_headers_sent``, called at the same point; but any trace
    config makes aiohttp build and send every trace event of every request (start, reused
    connection, chunk sent, end...), which cost 0.02-0.03 ms of CPU a request at 600 in
    flight, a tenth of the client's whole share.
    """
    global _REQUEST_CLASS
    if _REQUEST_CLASS is None:
        import aiohttp

        class StampedRequest(aiohttp.ClientRequest):
            async def send(self, conn: Any) -> Any:
                cb = _ON_WRITTEN.get()
                if cb is not None:
                    cb()
                return await super().send(conn)

        _REQUEST_CLASS = StampedRequest
    return _REQUEST_CLASS


def _usage(body: Any) -> tuple[int | None, int | None]:
    if not isinstance(body, dict):
        return None, None
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return None, None
    credits = usage.get("credits_used")
    tokens = usage.get("total_tokens")
    c = (
        int(credits)
        if isinstance(credits, (int, float))
        and not isinstance(credits, bool)
        and math.isfinite(credits)
        and credits >= 0
        else None
    )
    t = (
        int(tokens)
        if isinstance(tokens, (int, float))
        and not isinstance(tokens, bool)
        and math.isfinite(tokens)
        and tokens >= 0
        else None
    )
    return c, t


@dataclass(frozen=True)
class Balance:
    """GET /billing/credits, read tolerantly (the docs give no shape)."""

    total: int | None
    plan_remaining: int | None = None
    purchased: int | None = None
    allocation: int | None = None
    period_used: int | None = None


def parse_balance(body: Any) -> Balance | None:
    """Find the balance in a billing response; None if there is none we can trust."""
    if not isinstance(body, dict):
        return None
    if isinstance(body.get("data"), dict):
        body = body["data"]

    def num(*names: str) -> int | None:
        for n in names:
            v = body.get(n)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                return int(v)
        return None

    nested = body.get("balance")
    if isinstance(nested, dict):  # {"balance": {"total": ..., "purchased": ...}}
        body = {**body, **nested, "balance": nested.get("total", nested.get("available"))}
    plan = num("plan_credits_remaining", "plan_remaining", "allocation_remaining")
    purchased = num("purchased_credits", "purchased", "credits_purchased")
    total = num("balance", "credits", "remaining", "available", "credits_remaining")
    if total is None and plan is not None:
        total = plan + (purchased or 0)
    if total is None:
        return None
    return Balance(
        total,
        plan,
        purchased,
        num("monthly_allocation", "allocation"),
        num("period_used", "used_this_period", "credits_used"),
    )
