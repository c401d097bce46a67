"""An independent implementation of the Mavera API, written from the vendor docs only.

Written for QA without reading ``mavera_tui/sim/`` or ``mavera_tui/catalog.py``: the point is
that it does not share their readings of the docs (/work/shared/seeds/). Where the docs are
vague the reading taken is written next to it, and the main alternatives are switchable by
flags, so a client can be checked against more than one honest reading.

Run::

    python bench/indie_server.py --tier basic --plan basic --window-seconds 6 --time-scale 0.1

It binds 127.0.0.1 on a free port and prints ``PORT n`` on stdout. It keeps its own record of
every request (arrival time, key hash, method and path, status, credits charged, in-flight
per endpoint at arrival, latency drawn) and serves it at ``GET /__records`` (no auth, not
counted, loopback only); ``--records-out PATH`` also writes it as JSON on exit (SIGTERM,
SIGINT). ``POST /__topup?credits=N`` adds purchased credits (a stand-in for the dashboard's
auto-recharge or a manual purchase, which the API does not expose).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import random
import re
import signal
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

# Rate-limits guide: "Requests per Minute" per tier, "measured in a sliding 60-second window",
# "applied per API key".
TIER_LIMITS = {"starter": 60, "basic": 120, "professional": 240, "enterprise": 600}

# Credits guide: "Monthly Credits" per plan; Enterprise is "Custom" (given by --credits).
PLAN_CREDITS = {"starter": 500, "basic": 2000, "professional": 5000, "enterprise": 20000}

# Rate-limits guide, "Endpoint-Specific Limits": /mave/chat 10 concurrent, /focus-groups 5
# concurrent generations, /video-analyses 3 concurrent analyses.
CONCURRENCY_CAPS = {"/mave/chat": 10, "/focus-groups": 5, "/video-analyses": 3}

# Indie choice: service times (seconds, before --time-scale). The docs give none; these are
# plausible for what each endpoint does (generation, research, many respondents, video).
LATENCY = {
    "/responses": (0.8, 3.0),
    "/chat/completions": (0.8, 3.0),
    "/mave/chat": (4.0, 20.0),
    "/personas GET": (0.2, 0.6),
    "/personas POST": (4.0, 10.0),
    "/focus-groups": (20.0, 60.0),
    "/video-analyses": (15.0, 45.0),
    "/news/stories/{id}/analyze": (2.0, 8.0),
    "/generations": (3.0, 10.0),
    "/brand-voices POST": (3.0, 6.0),
    "/brand-voices GET": (0.2, 0.6),
    "billing": (0.05, 0.15),
}


def _err(message: str, etype: str, code: str, param: str | None = None) -> dict[str, Any]:
    """The error envelope the docs show for 429 and 402 (message, type, code, param)."""
    return {"error": {"message": message, "type": etype, "code": code, "param": param}}


# ---------------------------------------------------------------- pricing (credits guide)


def price(route: str, method: str, body: dict[str, Any], rng: random.Random) -> int:
    """Credits one request costs, drawn inside the documented range for what it asks.

    Readings (indie choices, where the docs give ranges):
    - /responses 1-5 "based on tokens": 1 + len(input)/400 chars, capped at 5, +0..1 noise.
    - /mave/chat 10-50 per the endpoint table; the estimation table says simple 10-15 and
      complex 40-75. We charge by ``complexity`` (simple 10-15, moderate 20-30, complex
      35-50), never above the endpoint table's 50; a missing complexity is 'moderate'.
    - /focus-groups 50-200: base by sample_size (<=25: 50-75, <=50: 90-115, else 150-190)
      plus 2 per question, capped at 200 (the endpoint table's top).
    - /video-analyses 100-500: <30 s 100-150, <=180 s 200-350, longer 350-500. Length from
      ``video_seconds`` (or ``duration_seconds``/``duration``), default 60 s.
    - /news/stories/{id}/analyze 5-20 by ``depth`` (basic 5-10, deep 12-20, default 5-12).
    - /generations 10-30 by ``max_length``/length of the prompt; /personas POST 300;
      /personas GET 0; /brand-voices POST 50.
    """
    if route in ("/responses", "/chat/completions"):
        text = json.dumps(body.get("input", body.get("messages", "")))
        return min(5, 1 + len(text) // 400 + rng.randint(0, 1))
    if route == "/mave/chat":
        cx = str(body.get("complexity", "moderate"))
        lo, hi = {"simple": (10, 15), "complex": (35, 50)}.get(cx, (20, 30))
        return rng.randint(lo, hi)
    if route == "/focus-groups":
        n = _int(body.get("sample_size"), 25)
        q = len(body.get("questions") or [])
        lo, hi = (50, 75) if n <= 25 else (90, 115) if n <= 50 else (150, 190)
        return min(200, rng.randint(lo, hi) + 2 * q)
    if route == "/video-analyses":
        s = _int(body.get("video_seconds", body.get("duration_seconds", body.get("duration"))), 60)
        lo, hi = (100, 150) if s < 30 else (200, 350) if s <= 180 else (350, 500)
        return rng.randint(lo, hi)
    if route == "/news/stories/{id}/analyze":
        d = str(body.get("depth", ""))
        lo, hi = {"basic": (5, 10), "deep": (12, 20)}.get(d, (5, 12))
        return rng.randint(lo, hi)
    if route == "/generations":
        return rng.randint(10, 30)
    if route == "/personas":
        return 300 if method == "POST" else 0
    if route == "/brand-voices":
        return 50 if method == "POST" else 0
    return 0


def _int(v: Any, default: int) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return default


def latency_for(route: str, method: str, body: dict[str, Any], rng: random.Random) -> float:
    """Unscaled service time in seconds (indie choice; video grows with its length)."""
    key = route
    if route in ("/personas", "/brand-voices"):
        key = f"{route} {method}"
    lo, hi = LATENCY.get(key, (0.5, 2.0))
    t = rng.uniform(lo, hi)
    if route == "/video-analyses":
        s = _int(body.get("video_seconds", body.get("duration_seconds", body.get("duration"))), 60)
        t *= max(0.5, min(3.0, s / 60))
    if route == "/mave/chat" and body.get("complexity") == "complex":
        t *= 1.8
    return t


# ------------------------------------------------------------------------ routing

_ROUTES: list[tuple[str, re.Pattern[str], set[str]]] = [
    ("/responses", re.compile(r"^/responses$"), {"POST"}),
    ("/chat/completions", re.compile(r"^/chat/completions$"), {"POST"}),
    ("/mave/chat", re.compile(r"^/mave/chat$"), {"POST"}),
    ("/personas", re.compile(r"^/personas(/[^/]+)?$"), {"GET", "POST"}),
    ("/focus-groups", re.compile(r"^/focus-groups$"), {"POST"}),
    ("/video-analyses", re.compile(r"^/video-analyses$"), {"POST"}),
    ("/news/stories/{id}/analyze", re.compile(r"^/news/stories/[^/]+/analyze$"), {"POST"}),
    ("/generations", re.compile(r"^/generations$"), {"POST"}),
    ("/brand-voices", re.compile(r"^/brand-voices$"), {"GET", "POST"}),
]


def route_of(rel: str, method: str) -> tuple[str | None, bool]:
    """(route template, method allowed) for a path relative to /api/v1."""
    for name, rx, methods in _ROUTES:
        if rx.match(rel):
            return name, method in methods
    return None, False


# ------------------------------------------------------------------------ state


@dataclass
class KeyState:
    """One API key's window and in-flight counts."""

    log: deque[float] = field(default_factory=deque)  # times of counted requests
    fixed_start: float = 0.0
    fixed_count: int = 0
    inflight: dict[str, int] = field(default_factory=dict)


@dataclass
class Account:
    """The account's credits: plan allocation first, then purchased (credit-packs page)."""

    plan_left: int
    purchased: int
    transactions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def balance(self) -> int:
        return self.plan_left + self.purchased

    def deduct(self, n: int, resource: str) -> None:
        take = min(n, self.plan_left)
        self.plan_left -= take
        self.purchased -= n - take
        self.transactions.append(
            {"type": "deduction", "amount": n, "timestamp": time.time(), "resource": resource}
        )


class Indie:
    """The server: window, caps, credits, records."""

    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        self.limit = a.limit or TIER_LIMITS[a.tier]
        self.W = a.window_seconds
        credits = a.credits if a.credits is not None else PLAN_CREDITS[a.plan]
        self.acct = Account(plan_left=credits, purchased=a.purchased)
        self.keys: dict[str, KeyState] = {}
        self.global_inflight: dict[str, int] = {}
        self.records: list[dict[str, Any]] = []
        self.rng = random.Random(a.seed)
        self.t0 = time.time()
        self.seq = 0

    # -- window ------------------------------------------------------------
    def _prune(self, ks: KeyState, now: float) -> None:
        while ks.log and ks.log[0] <= now - self.W:
            ks.log.popleft()

    def window_admit(self, ks: KeyState, now: float) -> tuple[bool, int, float, float]:
        """(admitted, remaining, reset, retry_after) for a request arriving now.

        Sliding (default): admitted if fewer than L counted requests in (now-W, now].
        Fixed (--window-mode fixed): calendar windows of W starting at epoch multiples.
        """
        if self.a.window_mode == "fixed":
            start = math.floor(now / self.W) * self.W
            if start != ks.fixed_start:
                ks.fixed_start, ks.fixed_count = start, 0
            used = ks.fixed_count
            boundary = start + self.W
            if used >= self.limit:
                return False, 0, boundary, boundary - now
            ks.fixed_count += 1
            return True, self._remaining(used), self._reset(now, ks, boundary), 0.0
        self._prune(ks, now)
        used = len(ks.log)
        if used >= self.limit:
            oldest = ks.log[0]
            return False, 0, self._reset(now, ks, oldest + self.W), oldest + self.W - now
        ks.log.append(now)
        return True, self._remaining(used), self._reset(now, ks, None), 0.0

    def _remaining(self, used_before: int) -> int:
        # Docs: "Requests remaining in current window". Reading 'after' (default): this
        # request counted, so the last admissible request sees 0. 'before' shows L - used.
        if self.a.remaining == "before":
            return max(0, self.limit - used_before)
        return max(0, self.limit - used_before - 1)

    def _reset(self, now: float, ks: KeyState, boundary: float | None) -> float:
        # Docs: "Unix timestamp when the window resets". Readings: 'oldest' (default): when
        # the oldest counted request leaves the sliding window (a slot frees); 'now': now+W;
        # 'boundary': the next multiple of W (calendar windows).
        mode = self.a.reset
        if mode == "now":
            return now + self.W
        if mode == "boundary" or self.a.window_mode == "fixed":
            return boundary if boundary is not None else math.floor(now / self.W) * self.W + self.W
        if ks.log:
            return ks.log[0] + self.W
        return now + self.W

    def headers(self, remaining: int, reset: float) -> dict[str, str]:
        r = str(math.ceil(reset)) if self.a.reset_format == "int" else f"{reset:.3f}"
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": r,
        }

    def snapshot_headers(self, ks: KeyState, now: float) -> dict[str, str]:
        """Headers for an answer that did not consume a window slot (e.g. a 429)."""
        self._prune(ks, now)
        rem = max(0, self.limit - len(ks.log))
        return self.headers(rem, self._reset(now, ks, None))

    # -- the request -------------------------------------------------------
    async def handle(self, req: web.Request) -> web.Response:
        now = time.time()
        self.seq += 1
        rec: dict[str, Any] = {
            "seq": self.seq,
            "t": now,
            "method": req.method,
            "path": req.path,
            "key": None,
            "status": None,
            "credits": 0,
            "latency": 0.0,
            "counted": False,
            "inflight_at_arrival": None,
        }
        self.records.append(rec)
        try:
            resp = await self._handle(req, now, rec)
        except asyncio.CancelledError:
            rec["status"] = "cancelled"
            rec["t_end"] = time.time()
            raise
        rec["status"] = resp.status
        rec["t_end"] = time.time()
        return resp

    async def _handle(self, req: web.Request, now: float, rec: dict[str, Any]) -> web.Response:
        auth = req.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            # Indie choice: the docs show no 401 body; OpenAI-style envelope as for 429/402.
            return web.json_response(
                _err("Missing or invalid API key.", "authentication_error", "invalid_api_key"),
                status=401,
            )
        key = auth[7:].strip()
        kh = hashlib.sha256(key.encode()).hexdigest()[:12]
        rec["key"] = kh
        ks = self.keys.setdefault(kh, KeyState())
        # The balance endpoint. Credit-packs page: "GET /api/billing/credits returns balance
        # and transaction history": outside /api/v1. --billing-alias also answers
        # /api/v1/billing/credits (a client joining the base URL with /billing/credits).
        if req.path == "/api/billing/credits" or (
            self.a.billing_alias and req.path == "/api/v1/billing/credits"
        ):
            return await self._billing(req, ks, now, rec)
        if not req.path.startswith("/api/v1/"):
            return web.json_response(
                _err(f"Unknown path {req.path}", "invalid_request_error", "not_found"),
                status=404,
            )
        rel = req.path[len("/api/v1") :]
        route, ok = route_of(rel, req.method)
        rec["route"] = route
        if route is None or not ok:
            # Indie choice: unknown paths don't count against the window (answered first).
            status = 404 if route is None else 405
            return web.json_response(
                _err(f"No route {req.method} {rel}", "invalid_request_error", "not_found"),
                status=status,
            )
        # Window first (docs: every request on the key counts), then concurrency, then credits.
        admitted, remaining, reset, retry_after = self.window_admit(ks, now)
        rec["counted"] = admitted
        inflight_tbl = self.global_inflight if self.a.caps_scope == "account" else ks.inflight
        rec["inflight_at_arrival"] = dict(inflight_tbl)
        if not admitted:
            h = self.headers(0, reset)
            ra = max(1, math.ceil(retry_after))
            h["Retry-After"] = str(ra)
            return web.json_response(
                _err(
                    f"Rate limit exceeded. Please retry after {ra} seconds.",
                    "rate_limit_error",
                    "rate_limit_exceeded",
                ),
                status=429,
                headers=h,
            )
        h = self.headers(remaining, reset)
        try:
            body = await req.json() if req.method == "POST" and req.can_read_body else {}
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
            return web.json_response(
                _err("Body is not valid JSON.", "invalid_request_error", "invalid_json"),
                status=400,
                headers=h,
            )
        if not isinstance(body, dict):
            body = {}
        cap = CONCURRENCY_CAPS.get(route or "")
        if cap is not None and inflight_tbl.get(route, 0) >= cap:
            # Docs: "Max N concurrent" but no body for breaking it. Indie choice: 429 with the
            # documented rate-limit envelope, code 'concurrency_limit_exceeded' (or the plain
            # 'rate_limit_exceeded' with --cap-code plain), Retry-After 1.
            plain = self.a.cap_code == "plain"
            code = "rate_limit_exceeded" if plain else "concurrency_limit_exceeded"
            h["Retry-After"] = "1"
            return web.json_response(
                _err(
                    f"Too many concurrent requests to {route} (max {cap}).",
                    "rate_limit_error",
                    code,
                ),
                status=429,
                headers=h,
            )
        cost = price(route or "", req.method, body, self.rng)
        lat = latency_for(route or "", req.method, body, self.rng) * self.a.time_scale
        rec["cost_drawn"] = cost
        if cost > 0 and self._short(cost):
            h2 = dict(h)
            return web.json_response(
                _err(
                    "Insufficient credits. Please upgrade your subscription or wait for your "
                    "next billing cycle.",
                    "insufficient_credits",
                    "credits_exhausted",
                ),
                status=402,
                headers=h2,
            )
        return await self._work(req, rec, route or "", rel, cost, lat, h, inflight_tbl)

    async def _work(
        self,
        req: web.Request,
        rec: dict[str, Any],
        route: str,
        rel: str,
        cost: int,
        lat: float,
        h: dict[str, str],
        inflight_tbl: dict[str, int],
    ) -> web.Response:
        """Charge, hold the endpoint slot for the latency, answer (or fail and refund)."""
        charged = cost
        if self.a.credit_mode == "zero":
            charged = min(cost, self.acct.balance)
        # The docs don't say when a request is charged. 'arrival' (default): reserved when it
        # is admitted, so concurrent requests can't overspend and a balance read made while it
        # runs already excludes it; 'completion': charged when the work is done (a balance
        # read while it runs still includes it; it takes at most what is left then).
        if charged and self.a.charge_at == "arrival":
            self.acct.deduct(charged, f"{req.method} {rel}")
        rec["credits"] = charged
        inflight_tbl[route] = inflight_tbl.get(route, 0) + 1
        failed = False
        try:
            rec["latency"] = lat
            await asyncio.sleep(lat)
            failed = self.rng.random() < self.a.fail_rate
        finally:
            inflight_tbl[route] -= 1
        if self.a.charge_at == "completion" and not failed and charged:
            charged = min(charged, max(0, self.acct.balance))
            if charged:
                self.acct.deduct(charged, f"{req.method} {rel}")
            rec["credits"] = charged
            return web.json_response(self._body(route or "", req.method, charged), headers=h)
        if failed:
            rec["credits"] = 0
            # Credit-packs page: "Refund — Credits returned for failed operations".
            if charged and self.a.charge_at == "arrival":
                self.acct.plan_left += charged  # indie simplification: refund to plan first
                self.acct.transactions.append(
                    {
                        "type": "refund",
                        "amount": charged,
                        "timestamp": time.time(),
                        "resource": f"{req.method} {rel}",
                    }
                )
            return web.json_response(
                _err("Internal error, please retry.", "api_error", "internal_error"),
                status=500,
                headers=h,
            )
        return web.json_response(self._body(route or "", req.method, charged), headers=h)

    def _short(self, cost: int) -> bool:
        # Docs: "When you run out of credits, API calls return a 402". Readings: 'cost'
        # (default): 402 when the balance can't cover this request; 'zero': only when the
        # balance is 0 (a request that costs more than what is left takes the rest).
        if self.a.credit_mode == "zero":
            return self.acct.balance <= 0
        return self.acct.balance < cost

    def _body(self, route: str, method: str, credits: int) -> dict[str, Any]:
        self.seq_obj = getattr(self, "seq_obj", 0) + 1
        oid = f"{route.strip('/').replace('/', '_')[:12]}_{self.seq_obj:06d}"
        inp = self.rng.randint(20, 400)
        out = self.rng.randint(20, 800)
        return {
            "id": oid,
            "object": route.strip("/").split("/")[0].rstrip("s") or "object",
            "status": "completed",
            "output": [],
            "usage": {
                "credits_used": credits,
                "input_tokens": inp,
                "output_tokens": out,
                "total_tokens": inp + out,
            },
        }

    async def _billing(
        self, req: web.Request, ks: KeyState, now: float, rec: dict[str, Any]
    ) -> web.Response:
        rec["route"] = "billing"
        # Indie choice: the balance endpoint is an API call like any other, so it counts
        # against the key's window ("Every API response includes rate limit information").
        admitted, remaining, reset, retry_after = self.window_admit(ks, now)
        rec["counted"] = admitted
        if not admitted:
            h = self.headers(0, reset)
            ra = max(1, math.ceil(retry_after))
            h["Retry-After"] = str(ra)
            return web.json_response(
                _err(
                    f"Rate limit exceeded. Please retry after {ra} seconds.",
                    "rate_limit_error",
                    "rate_limit_exceeded",
                ),
                status=429,
                headers=h,
            )
        await asyncio.sleep(self.rng.uniform(*LATENCY["billing"]) * self.a.time_scale)
        body = {
            # Docs: "returns balance and transaction history"; field names are our reading.
            "balance": self.acct.balance,
            "plan_credits_remaining": self.acct.plan_left,
            "purchased_credits": self.acct.purchased,
            "transactions": self.acct.transactions[-20:],
            "usage": {"credits_used": 0},
        }
        return web.json_response(body, headers=self.headers(remaining, reset))

    # -- private routes ----------------------------------------------------
    async def records_route(self, req: web.Request) -> web.Response:
        return web.json_response(self.dump())

    async def topup_route(self, req: web.Request) -> web.Response:
        n = _int(req.query.get("credits"), 0)
        self.acct.purchased += n
        self.acct.transactions.append(
            {"type": "purchase", "amount": n, "timestamp": time.time(), "resource": "topup"}
        )
        return web.json_response({"balance": self.acct.balance})

    def dump(self) -> dict[str, Any]:
        return {
            "config": {
                "tier": self.a.tier,
                "limit": self.limit,
                "window_seconds": self.W,
                "time_scale": self.a.time_scale,
                "remaining": self.a.remaining,
                "reset": self.a.reset,
                "reset_format": self.a.reset_format,
                "window_mode": self.a.window_mode,
                "caps_scope": self.a.caps_scope,
                "credit_mode": self.a.credit_mode,
                "charge_at": self.a.charge_at,
                "caps": CONCURRENCY_CAPS,
            },
            "balance": self.acct.balance,
            "records": self.records,
        }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tier", choices=sorted(TIER_LIMITS), default="basic")
    p.add_argument("--limit", type=int, default=0, help="override the tier's limit per window")
    p.add_argument("--plan", choices=sorted(PLAN_CREDITS), default="enterprise")
    p.add_argument("--credits", type=int, default=None, help="plan credits left (default: plan)")
    p.add_argument("--purchased", type=int, default=0)
    p.add_argument("--window-seconds", type=float, default=60.0)
    p.add_argument("--time-scale", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--remaining", choices=["after", "before"], default="after")
    p.add_argument("--reset", choices=["oldest", "now", "boundary"], default="oldest")
    p.add_argument("--reset-format", choices=["int", "float"], default="int")
    p.add_argument("--window-mode", choices=["sliding", "fixed"], default="sliding")
    p.add_argument("--caps-scope", choices=["key", "account"], default="key")
    p.add_argument("--cap-code", choices=["concurrency", "plain"], default="concurrency")
    p.add_argument("--credit-mode", choices=["cost", "zero"], default="cost")
    p.add_argument("--charge-at", choices=["arrival", "completion"], default="arrival")
    p.add_argument(
        "--billing-alias",
        action="store_true",
        help="also answer the balance at /api/v1/billing/credits",
    )
    p.add_argument("--fail-rate", type=float, default=0.0, help="share of work answered 500")
    p.add_argument("--records-out", default=None)
    p.add_argument("--port", type=int, default=0)
    return p.parse_args(argv)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def amain(a: argparse.Namespace) -> None:
    srv = Indie(a)
    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_get("/__records", srv.records_route)
    app.router.add_post("/__topup", srv.topup_route)
    app.router.add_route("*", "/{tail:.*}", srv.handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    port = a.port or _free_port()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=2048)
    await site.start()
    print(f"PORT {port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    if a.records_out:
        with open(a.records_out, "w") as f:
            json.dump(srv.dump(), f)
    await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    try:
        asyncio.run(amain(a))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
