"""The HTTP edge: one httpx.AsyncClient, Bearer auth, tolerant header parsing, typed outcomes.

Every request returns an ``Outcome`` (never raises for HTTP or transport trouble): status,
credits used, the rate headers as parsed (None where missing or malformed) and, for
failures, a typed ``ApiError``. The key lives only in the client's default headers; it is
never put in an error message, a repr or a log line.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from . import catalog
from .clock import Clock
from .errors import ConfigError

__all__ = ["ApiClient", "ApiError", "Balance", "ConfigError", "Outcome", "RateHeaders"]


@dataclass(frozen=True)
class RateHeaders:
    """X-RateLimit-* and Retry-After as parsed; None where absent or malformed."""

    limit: int | None = None
    remaining: int | None = None
    reset_at: float | None = None     # Unix time
    retry_after: float | None = None  # seconds from receipt, >= 0

    def to_dict(self) -> dict[str, Any]:
        return {"limit": self.limit, "remaining": self.remaining, "reset": self.reset_at,
                "retry_after": self.retry_after}


# Error kinds, the vocabulary the scheduler acts on.
RATE_LIMITED = "rate_limited"          # 429 for the key's window: hold the whole key
CONCURRENCY = "concurrency_limited"    # 429 for an endpoint's cap: hold that endpoint
CREDITS = "credits_exhausted"          # 402
BUDGET = "budget_exceeded"             # 402
AUTH = "unauthorized"                  # 401 / 403
SERVER = "server_error"                # 5xx
TIMEOUT = "timeout"
CONNECTION = "connection_error"        # dropped / refused / reset
BAD_RESPONSE = "bad_response"          # 2xx with a body we cannot read
CLIENT = "client_error"                # other 4xx: the request itself is wrong

RETRYABLE = frozenset({SERVER, TIMEOUT, CONNECTION})


@dataclass(frozen=True)
class ApiError:
    """A failed attempt: what kind, the server's code and message (untrusted text)."""

    kind: str
    status: int | None
    code: str | None = None
    message: str = ""

    def describe(self) -> str:
        head = f"HTTP {self.status}" if self.status else self.kind
        code = f" {self.code}" if self.code else ""
        msg = f": {self.message}" if self.message else ""
        return f"{head}{code}{msg}"


@dataclass(frozen=True)
class Outcome:
    """One attempt's result."""

    status: int | None
    latency: float
    headers: RateHeaders = field(default_factory=RateHeaders)
    credits_used: int | None = None   # usage.credits_used, None when not reported
    tokens: int | None = None
    body: Any = None
    error: ApiError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


_INT_RE = re.compile(r"^\s*-?\d+(\.\d+)?\s*$")
MAX_SANE_SECONDS = 10 * 365 * 86400.0


def _parse_int(value: str | None) -> int | None:
    if value is None or not _INT_RE.match(value):
        return None
    try:
        n = float(value)
    except ValueError:
        return None
    # Up to 1e14: a Reset in Unix milliseconds (1.7e12 today) must get through to the caller.
    if not math.isfinite(n) or n < 0 or n > 1e14:
        return None
    return int(n)


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


def parse_rate_headers(headers: httpx.Headers | dict[str, str], now_wall: float) -> RateHeaders:
    """Parse the rate headers, tolerating absent, malformed, negative and absurd values."""
    if isinstance(headers, httpx.Headers):
        h: Any = headers
    else:  # plain text: httpx.Headers() would raise on non-ASCII values
        h = {str(k).lower(): v for k, v in headers.items()}
        h = {name: h.get(name.lower()) for name in (
            catalog.HEADER_LIMIT, catalog.HEADER_REMAINING, catalog.HEADER_RESET,
            catalog.HEADER_RETRY_AFTER)}
    limit = _parse_int(h.get(catalog.HEADER_LIMIT))
    if limit == 0:
        limit = None  # a zero limit would stop all traffic; treat it as malformed
    remaining = _parse_int(h.get(catalog.HEADER_REMAINING))
    if limit is not None and remaining is not None and remaining > limit:
        remaining = None
    reset_raw = _parse_int(h.get(catalog.HEADER_RESET))
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
            return (str(code)[:100] if code is not None else None,
                    str(msg)[:500] if msg is not None else "")
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
        raise ConfigError(
            f"base URL {url!r} must start with https:// (or http:// for localhost)")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ConfigError(
            f"refusing plain http:// to {parts.hostname}: the API key would travel "
            "unencrypted. Use https://, or http:// only for localhost.")
    if parts.username or parts.password:
        raise ConfigError("base URL must not contain credentials; set MAVERA_API_KEY")
    return url.rstrip("/")


class ApiClient:
    """Async client for the Mavera API (or anything that speaks its HTTP contract)."""

    def __init__(self, base_url: str, api_key: str, *, clock: Clock | None = None,
                 transport: httpx.AsyncBaseTransport | None = None,
                 timeout: float = 120.0, connect_timeout: float = 10.0,
                 max_connections: int = 100):
        if not api_key or not api_key.strip():
            raise ConfigError("no API key: set MAVERA_API_KEY")
        if any(c in api_key for c in "\r\n\x00"):
            raise ConfigError("the API key contains control characters; check MAVERA_API_KEY")
        self.base_url = check_base_url(base_url) if transport is None else base_url.rstrip("/")
        self.clock = clock or Clock()
        self.timeout = timeout
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {api_key.strip()}",
                     "User-Agent": "mavera-tui/0.1"},
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=max_connections,
                                max_keepalive_connections=max_connections),
            transport=transport,
            follow_redirects=False,
        )

    def __repr__(self) -> str:  # never show the key
        return f"ApiClient({self.base_url!r})"

    def origin_path(self, path: str) -> str:
        """An absolute URL for ``path`` on the base URL's host (outside its /api/v1)."""
        parts = urlsplit(self.base_url)
        return f"{parts.scheme}://{parts.netloc}{path}"

    async def aclose(self) -> None:
        await self._client.aclose()

    async def request(self, method: str, path: str, body: dict[str, Any] | None = None,
                      timeout: float | None = None) -> Outcome:
        """Send one request; every failure comes back as an Outcome with an ApiError."""
        t0 = self.clock.now()
        kw: dict[str, Any] = {}
        if method.upper() != "GET":
            kw["json"] = body or {}
        elif body:
            kw["params"] = {k: v for k, v in body.items()
                            if isinstance(v, (str, int, float))}
        if timeout is not None:
            kw["timeout"] = timeout
        try:
            # httpx's timeouts are per operation (connect, each read): a server that
            # trickles bytes, or an in-process app, is never cut off. The timeout is for the
            # whole request.
            async with asyncio.timeout(timeout if timeout is not None else self.timeout):
                resp = await self._client.request(method.upper(), path, **kw)
        except (httpx.TimeoutException, TimeoutError):
            return Outcome(None, self.clock.now() - t0,
                           error=ApiError(TIMEOUT, None, None, "request timed out"))
        except httpx.TransportError as e:
            return Outcome(None, self.clock.now() - t0,
                           error=ApiError(CONNECTION, None, None,
                                          f"connection failed: {type(e).__name__}"))
        except Exception as e:  # an in-process app raising is a dropped connection too
            return Outcome(None, self.clock.now() - t0,
                           error=ApiError(CONNECTION, None, None,
                                          f"connection failed: {type(e).__name__}"))
        latency = self.clock.now() - t0
        headers = parse_rate_headers(resp.headers, self.clock.wall())
        try:
            body_json: Any = resp.json() if resp.content else None
            readable = True
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
            body_json, readable = None, False
        error = classify(resp.status_code, body_json, headers)
        credits, tokens = _usage(body_json)
        if error is None and (not readable or not isinstance(body_json, dict)):
            error = ApiError(BAD_RESPONSE, resp.status_code, None,
                             "response body is not valid JSON; the charge is unknown")
        return Outcome(resp.status_code, latency, headers, credits, tokens, body_json, error)


def _usage(body: Any) -> tuple[int | None, int | None]:
    if not isinstance(body, dict):
        return None, None
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return None, None
    credits = usage.get("credits_used")
    tokens = usage.get("total_tokens")
    c = int(credits) if isinstance(credits, (int, float)) and not isinstance(credits, bool) \
        and math.isfinite(credits) and credits >= 0 else None
    t = int(tokens) if isinstance(tokens, (int, float)) and not isinstance(tokens, bool) \
        and math.isfinite(tokens) and tokens >= 0 else None
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
    return Balance(total, plan, purchased, num("monthly_allocation", "allocation"),
                   num("period_used", "used_this_period", "credits_used"))
