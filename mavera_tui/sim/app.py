"""The Mavera API simulator: a raw ASGI app that rate-limits, bills and misbehaves on purpose.

Drive it in-process with ``httpx.ASGITransport`` (see :func:`sim_transport`) or serve it with
uvicorn (:mod:`mavera_tui.sim.server`). All time comes from the :class:`~mavera_tui.clock.Clock`
(latencies are ``asyncio.sleep``), so under ``VirtualTimeLoop`` an hour runs in milliseconds.

Routes are every endpoint in :data:`catalog.ENDPOINTS`, served under ``/api/v1``, under
``/api`` (the packs page says ``GET /api/billing/credits``) and at the root.

The order a request goes through, and the documented choices:

1. **Auth.** ``Authorization: Bearer <key>``; a missing/empty key or one in
   ``config.rejected_keys`` gets 401 (``authentication_error`` / ``invalid_api_key``) with no
   X-RateLimit-* headers (there is no key to count against) and is not counted anywhere.
2. **Window** (per key, sliding by default): a request is admitted if fewer than ``limit``
   requests were counted in ``(now - W, now]``. Choice: a window 429 is **not** counted (it
   did no work and the server refused it before any processing). During a 429 storm fault
   every request gets a window 429, also uncounted. Foreign phantom arrivals (fault) are
   counted like ours. Reading ``window_kind="fixed"`` (``--window-kind fixed``): calendar
   windows instead, buckets of W aligned to multiples of W in Unix time (minutes when W is
   60 s); a request is admitted if fewer than ``limit`` were counted in its bucket, and the
   count starts from zero at each boundary.
3. **Everything admitted by the window counts**, whatever happens next: 404s, 400s,
   concurrency 429s (choice: the request arrived and was processed up to the concurrency
   check, so it counts), 402s, 5xx and drops.
4. Headers: every response to a keyed request carries X-RateLimit-Limit, -Remaining and
   -Reset. The docs leave room, so each is a reading (:class:`~.config.Readings`, defaults
   first):

   - ``remaining_counts`` (``--remaining-counts``): ``after``: Remaining is what is left
     after counting this request (0 when it took the last slot, and 0 on a window 429);
     ``before``: what was left when it arrived, one higher for a counted request (still 0
     on a window 429, which is not counted).
   - ``remaining_at`` (``--remaining-at``): ``arrival``: Remaining and Reset are computed
     when the request is admitted (as a rate-limit middleware in front of the handler
     would) and sent unchanged when the response leaves, even after a long latency;
     ``response``: computed again when the answer leaves, so they count every request
     admitted meanwhile (the same client's later ones too) and no longer count those that
     left the window meanwhile (this request itself, if the latency outlasted it).
   - ``reset`` (``--reset``): X-RateLimit-Reset is the Unix time, rounded up to a whole
     second, of ``oldest``: the oldest counted arrival + W, when Remaining next grows in a
     sliding window (now + W if the window is empty; literally the same in a fixed one);
     ``now``: the moment of computing + W; ``minute``: the next multiple of W in Unix time
     (the next minute boundary at W = 60 s; the truth for a fixed-window server).

   The records (:class:`~.records.RequestRecord`) keep the server's own count at arrival
   (``window_count``), and the Remaining/Reset computed for the answer, whatever the reading.
5. 429 for the window: Retry-After = seconds until a request would be admitted, rounded up,
   at least 1: oldest + W - now in a sliding window, the time to the next boundary in a
   fixed one; Remaining and Reset as in 4 (a storm's Reset is its end). Body
   ``rate_limit_error`` / ``rate_limit_exceeded`` with "Please retry after N seconds.".
   Concurrency 429: ``rate_limit_error`` /
   ``concurrency_limit_exceeded`` with a short Retry-After (``concurrency_retry_seconds`` ×
   time_scale, rounded up, at least 1). Caps are per key and per ``Endpoint.slot_key``; the
   slot is held for the whole latency.
6. Route (404 ``invalid_request_error`` / ``not_found``), body (POST: JSON object, an empty
   body reads as ``{}``; otherwise 400 ``invalid_request_error`` / ``invalid_json``), then the
   estimator's field checks (400 ``invalid_parameter`` with ``param`` = the field): a body
   the estimator cannot price is refused, so no charge can ever exceed its upper bound.
7. Billing: the charge is drawn deterministically from (seed, endpoint, path, body) within
   ``max(ep.low, est.low) .. min(ep.high, est.high)`` (see :func:`charge_range`), so a retry
   of the same job costs the same. It is checked at arrival (402, nothing charged) and taken
   when the work completes; if by then the balance or budget cannot cover it (concurrent
   work spent it), the answer is 402 and nothing is charged. Workspace budget before balance.
8. Success: ``{"id": "<prefix>_<n>", "object": ..., "usage": {"credits_used", "input_tokens",
   "output_tokens", "total_tokens"}}``. ``GET /billing/credits`` answers
   :meth:`Account.to_dict` plus a zero ``usage``.
9. If the client gives up while the work runs (cancellation under ASGITransport), the work
   still completes in the background and is charged (``record.client_gone``);
   :meth:`Simulator.drain` waits for such work.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections import deque
from collections.abc import MutableMapping
from typing import Any

import httpx

from .. import catalog
from ..catalog import Endpoint
from ..clock import Clock
from ..estimate import EstimateError, estimate_for
from .answers import (  # noqa: F401  (HOSTILE_TEXT, KINDS, SimulatedDrop: read from here)
    HOSTILE_TEXT,
    KINDS,
    Answering,
    SimulatedDrop,
    _drop,
    _insufficient,
    unit,
)
from .config import SimConfig
from .records import Records, RequestRecord, fingerprint
from .state import Account

#: Mount prefixes stripped before routing (the root works too).
PREFIXES = ("/api/v1", "/api")


def charge_range(ep: Endpoint, body: dict[str, Any]) -> tuple[int, int]:
    """What the simulator may charge for ``body``: inside the endpoint's documented range
    and never above the estimator's upper bound. Raises EstimateError for an unpriceable body.
    """
    if ep.cost == "free":
        return 0, 0
    est = estimate_for(ep, body)
    hi = min(ep.high, est.high)
    lo = min(max(ep.low, est.low), hi)
    return lo, hi


def charge_for(ep: Endpoint, body: dict[str, Any], seed: int, path: str | None = None) -> int:
    """The deterministic charge for this job (same seed, endpoint, path and body: same charge)."""
    lo, hi = charge_range(ep, body)
    if lo == hi:
        return lo
    canon = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    u = unit(seed, "charge", ep.key, path or ep.path, canon)
    return min(hi, lo + int(u * (hi - lo + 1)))


class _Window:
    """One key's sliding window: our counted arrivals and foreign phantom arrivals."""

    __slots__ = ("limit", "w", "real", "phantom", "rpm", "next_phantom")

    def __init__(self, limit: int, w: float):
        self.limit = limit
        self.w = w
        self.real: deque[float] = deque()
        self.phantom: deque[float] = deque()
        self.rpm = 0.0
        self.next_phantom = 0.0

    def _evict(self, t: float) -> None:
        cutoff = t - self.w
        real, phantom = self.real, self.phantom
        while real and real[0] <= cutoff:
            real.popleft()
        while phantom and phantom[0] <= cutoff:
            phantom.popleft()

    def settle(self, now: float, wall: float, foreign_rpm: float) -> None:
        """Bring the window to ``now``: add due phantom arrivals, drop what left the window."""
        if foreign_rpm != self.rpm:
            self.rpm = foreign_rpm
            self.next_phantom = now
        if foreign_rpm > 0:
            interval = 60.0 / foreign_rpm  # per minute
            cutoff = now - self.w
            if self.next_phantom <= cutoff:  # long idle: skip arrivals that already left
                skip = math.floor((cutoff - self.next_phantom) / interval) + 1
                self.next_phantom += skip * interval
            while self.next_phantom <= now:
                tp = self.next_phantom
                self._evict(tp)
                if len(self.real) + len(self.phantom) < self.limit:
                    self.phantom.append(tp)
                self.next_phantom = tp + interval
        self._evict(now)

    @property
    def count(self) -> int:
        return len(self.real) + len(self.phantom)

    def oldest(self) -> float | None:
        if self.real and self.phantom:
            return min(self.real[0], self.phantom[0])
        if self.real:
            return self.real[0]
        if self.phantom:
            return self.phantom[0]
        return None

    def admit_wait(self, now: float, wall: float) -> float:
        """Seconds until a full window admits a request: its oldest entry leaves."""
        oldest = self.oldest()
        assert oldest is not None
        return oldest + self.w - now

    def holds(self, t: float, wall_at: float, now: float) -> bool:
        """Whether an arrival counted at loop time ``t`` (Unix ``wall_at``) is still in."""
        return t > now - self.w


class _FixedWindow(_Window):
    """One key's calendar window: buckets of W aligned to multiples of W in Unix time.

    Entries are loop times, as in the sliding window, but they all belong to the current
    bucket: at each boundary the count starts from zero.
    """

    __slots__ = ("bucket",)

    def __init__(self, limit: int, w: float):
        super().__init__(limit, w)
        self.bucket: int | None = None

    def settle(self, now: float, wall: float, foreign_rpm: float) -> None:
        w = self.w
        bucket = math.floor(wall / w)
        start = now - (wall - bucket * w)  # the bucket's start in loop time
        if bucket != self.bucket:
            self.bucket = bucket
            self.real.clear()
            self.phantom.clear()
        if foreign_rpm != self.rpm:
            self.rpm = foreign_rpm
            self.next_phantom = now
        if foreign_rpm > 0:
            interval = 60.0 / foreign_rpm
            if self.next_phantom < start:  # arrivals in earlier buckets no longer count
                self.next_phantom += math.ceil((start - self.next_phantom) / interval) * interval
            while self.next_phantom <= now:
                if len(self.real) + len(self.phantom) < self.limit:
                    self.phantom.append(self.next_phantom)
                self.next_phantom += interval

    def admit_wait(self, now: float, wall: float) -> float:
        """Seconds until the next boundary, when the count starts from zero."""
        return (math.floor(wall / self.w) + 1) * self.w - wall

    def holds(self, t: float, wall_at: float, now: float) -> bool:
        return math.floor(wall_at / self.w) == self.bucket


class _KeyState:
    __slots__ = ("fp", "window", "inflight")

    def __init__(self, fp: str, limit: int, w: float, kind: str = "sliding"):
        self.fp = fp
        self.window = (_FixedWindow if kind == "fixed" else _Window)(limit, w)
        self.inflight: dict[str, int] = {}


class _Request:
    """One request on its way through the simulator's stages: what each stage learnt."""

    __slots__ = (
        "receive",
        "send",
        "n",
        "now",
        "wall",
        "method",
        "rel",
        "key",
        "rec",
        "ks",
        "headers",
        "ep",
        "body",
        "charge",
        "fault",
        "latency",
        "status",
        "payload",
    )

    def __init__(
        self,
        receive: Any,
        send: Any,
        n: int,
        now: float,
        wall: float,
        method: str,
        rel: str,
        key: str | None,
    ) -> None:
        self.receive, self.send = receive, send
        self.n, self.now, self.wall = n, now, wall
        self.method, self.rel, self.key = method, rel, key
        self.rec: RequestRecord | None = None  # once the key is known (the window stage)
        self.ks: _KeyState | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.ep: Endpoint | None = None  # once routed
        self.body: dict[str, Any] = {}
        self.charge = 0
        self.fault: str | None = None
        self.latency = 0.0
        self.status = 0
        self.payload: dict[str, Any] = {}

    @property
    def record(self) -> RequestRecord:
        assert self.rec is not None, "the window stage makes the record"
        return self.rec

    @property
    def key_state(self) -> _KeyState:
        assert self.ks is not None, "the window stage finds the key's state"
        return self.ks

    @property
    def endpoint(self) -> Endpoint:
        assert self.ep is not None, "the route stage finds the endpoint"
        return self.ep


class Simulator(Answering):
    """The ASGI app. ``config``, ``records`` (the API side's log) and ``state`` (the account)."""

    def __init__(self, config: SimConfig | None = None, clock: Clock | None = None):
        self.config = config or SimConfig()
        self.clock = clock or Clock()
        self.records = Records(self.config.window_seconds, self.config.readings.window_kind)
        self.state = Account(self.config)
        self._keys: dict[str, _KeyState] = {}
        self._n = 0
        self._t0: float | None = None
        self._background: set[asyncio.Task[None]] = set()

    # --- public helpers -------------------------------------------------------------------

    @property
    def limit(self) -> int:
        return self.config.effective_limit

    @property
    def window_seconds(self) -> float:
        return self.config.window_seconds

    def in_flight(self, endpoint: str) -> int:
        """Requests holding ``endpoint``'s slot right now, over all keys (key or slot path)."""
        ep = catalog.ENDPOINTS.get(endpoint)
        slot = ep.slot_key if ep else endpoint
        return sum(ks.inflight.get(slot, 0) for ks in self._keys.values())

    def window_count(self, key: str) -> int:
        """Requests counted in ``key``'s window now (needs a running loop)."""
        ks = self._keys.get(key)
        if ks is None:
            return 0
        ks.window.settle(self.clock.now(), self.clock.wall(), self.config.faults.foreign_rpm)
        return ks.window.count

    async def drain(self) -> None:
        """Wait for work the client abandoned (it still completes and is charged)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    # --- ASGI -----------------------------------------------------------------------------

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Any,
        send: Any,
    ) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await self.drain()
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    async def _http(
        self,
        scope: MutableMapping[str, Any],
        receive: Any,
        send: Any,
    ) -> None:
        """One request through the stages of the module's docstring, in its order. A stage
        that answers (a refusal, an error) ends the request; the rest do the work."""
        req = self._arrive(scope, receive, send)
        for stage in (
            self._stage_auth,
            self._stage_window,
            self._stage_route_and_body,
            self._stage_concurrency,
            self._stage_preflight_billing,
            self._stage_admission_faults,
        ):
            if await stage(req):
                return
        await self._stage_work(req)
        await self._stage_answer(req)

    def _arrive(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> _Request:
        now = self.clock.now()
        if self._t0 is None:
            self._t0 = now
        n = self._n
        self._n += 1
        return _Request(
            receive,
            send,
            n,
            now,
            self.clock.wall(),
            scope["method"],
            _relative(scope["path"]),
            _bearer(scope["headers"]),
        )

    async def _stage_auth(self, req: _Request) -> bool:
        """1. A missing or rejected key: 401, not counted, no rate headers."""
        key = req.key
        if key and key not in self.config.rejected_keys:
            return False
        self.records.append(
            RequestRecord(
                req.n,
                req.now,
                req.wall,
                fingerprint(key) if key else "-",
                req.method,
                req.rel,
                status=401,
                code="invalid_api_key",
                done=req.now,
            )
        )
        await self._send(
            req.send,
            401,
            self._envelope(
                "Invalid API key. Send 'Authorization: Bearer <your API key>'.",
                "authentication_error",
                "invalid_api_key",
            ),
            [],
        )
        return True

    async def _stage_window(self, req: _Request) -> bool:
        """2-5. The key's window: a storm or a full window answers 429 (not counted);
        otherwise the request is counted and its rate headers computed."""
        cfg = self.config
        faults = cfg.faults
        assert req.key  # the auth stage answered keyless requests
        ks = self._keys.get(req.key)
        if ks is None:
            ks = self._keys[req.key] = _KeyState(
                fingerprint(req.key),
                cfg.effective_limit,
                cfg.window_seconds,
                cfg.readings.window_kind,
            )
        req.ks = ks
        now, wall, n = req.now, req.wall, req.n
        rec = req.rec = RequestRecord(n, now, wall, ks.fp, req.method, req.rel)
        self.records.append(rec)
        win = ks.window
        win.settle(now, wall, faults.foreign_rpm)
        if faults.storm_seconds > 0:
            assert self._t0 is not None  # set at arrival
            s0 = self._t0 + faults.storm_start
            s1 = s0 + faults.storm_seconds
            if s0 <= now < s1:
                rec.window_count = win.count
                rec.fault = "storm"
                await self._window_429(
                    req.send, rec, n, s1 - now, self._rate_headers(n, 0, wall + (s1 - now), rec)
                )
                return True
        if win.count >= cfg.effective_limit:
            rec.window_count = win.count
            await self._window_429(
                req.send,
                rec,
                n,
                win.admit_wait(now, wall),
                self._window_headers(rec, win, now, wall, False),
            )
            return True
        win.real.append(now)
        rec.counted = True
        rec.window_count = win.count
        req.headers = self._window_headers(rec, win, now, wall, True)
        return False

    async def _stage_route_and_body(self, req: _Request) -> bool:
        """6. The route (404), the body (400 invalid_json), the estimator's checks (400
        invalid_parameter); prices the request."""
        ep = catalog.find_endpoint(req.method, req.rel)
        if ep is None:
            await self._refuse(
                req,
                404,
                f"Unknown route: {req.method} {req.rel}",
                "invalid_request_error",
                "not_found",
            )
            return True
        req.ep = ep
        req.record.endpoint = ep.key
        body: Any = {}
        if req.method == "POST":
            raw = await _read_body(req.receive)
            problem = ""
            if raw.strip():
                try:
                    body = json.loads(raw)
                except ValueError:
                    problem = "The request body is not valid JSON."
            if not problem and not isinstance(body, dict):
                problem = "The request body must be a JSON object."
            if problem:
                await self._refuse(req, 400, problem, "invalid_request_error", "invalid_json")
                return True
        req.body = body
        try:
            req.charge = charge_for(ep, body, self.config.seed, req.rel)
        except EstimateError as exc:
            await self._refuse(
                req, 400, str(exc), "invalid_request_error", "invalid_parameter", exc.field
            )
            return True
        return False

    async def _stage_concurrency(self, req: _Request) -> bool:
        """5. The endpoint's concurrency cap: 429 with a short Retry-After (counted)."""
        cfg, ep = self.config, req.endpoint
        inflight = req.key_state.inflight.get(ep.slot_key, 0)
        if ep.cap is None or inflight < ep.cap:
            return False
        req.record.in_flight = inflight
        retry = max(1, math.ceil(cfg.concurrency_retry_seconds * cfg.time_scale))
        await self._error(
            req.send,
            req.record,
            req.headers + self._retry_after(retry, req.wall),
            429,
            f"Too many concurrent requests to {ep.path} (at most {ep.cap} at a time). "
            f"Please retry after {retry} seconds.",
            "rate_limit_error",
            catalog.CODE_CONCURRENCY,
        )
        return True

    async def _stage_preflight_billing(self, req: _Request) -> bool:
        """7. The charge checked at arrival: 402, nothing charged."""
        code = self.state.check(req.charge) if req.charge else None
        if code is None:
            return False
        await self._refuse(req, 402, *_insufficient(code))
        return True

    async def _stage_admission_faults(self, req: _Request) -> bool:
        """Faults decided at admission: a 503 answers; a drop before the work hangs up but
        the work still runs; the latency (a slow fault adds to it) takes the slot."""
        cfg, seed, n, rec = self.config, self.config.seed, req.n, req.record
        faults = cfg.faults
        fault: str | None = None
        if faults.error_5xx_rate and unit(seed, "5xx", n) < faults.error_5xx_rate:
            fault = "503" if unit(seed, "5xx-kind", n) < 0.5 else "500"
        elif faults.drop_rate and unit(seed, "drop", n) < faults.drop_rate:
            fault = "drop-before" if unit(seed, "drop-kind", n) < 0.5 else "drop-after"
        if fault == "503":
            rec.fault = fault
            await self._refuse(
                req,
                503,
                "The service is temporarily unavailable. Please try again.",
                "api_error",
                "service_unavailable",
            )
            return True
        if fault == "drop-before":
            rec.fault = fault
            rec.status, rec.code, rec.done = 0, "dropped", req.now
            await _drop(req.send)
        lo, hi = req.endpoint.latency
        latency = (lo + unit(seed, "latency", n) * (hi - lo)) * cfg.time_scale
        if faults.slow_rate and unit(seed, "slow", n) < faults.slow_rate:
            latency += faults.slow_seconds
            fault = fault or "slow"
        rec.fault = req.fault = fault
        rec.latency = req.latency = latency
        ks, slot = req.key_state, req.endpoint.slot_key
        inflight = ks.inflight.get(slot, 0)
        ks.inflight[slot] = inflight + 1
        rec.in_flight = inflight + 1
        return False

    async def _stage_work(self, req: _Request) -> None:
        """The work: the slot is held for the latency; a client that gives up leaves the
        work to complete (and be charged) in the background (9)."""
        ks, slot, rec, ep = req.key_state, req.endpoint.slot_key, req.record, req.endpoint
        if req.latency > 0:
            try:
                await asyncio.sleep(req.latency)
            except asyncio.CancelledError:
                rec.client_gone = True
                self._spawn(
                    self._finish_later(
                        ks, slot, rec, ep, req.body, req.charge, req.fault, req.now + req.latency
                    )
                )
                raise
        req.status, req.payload = self._finish(ks, slot, rec, ep, req.body, req.charge, req.fault)

    async def _stage_answer(self, req: _Request) -> None:
        """8. The answer: rate headers read again if ``remaining_at`` says so; a drop after
        the work, or a bad body, when the faults say so."""
        cfg, faults, rec = self.config, self.config.faults, req.record
        headers = req.headers
        if cfg.readings.remaining_at == "response":
            # Read the window again as the answer leaves: requests admitted meanwhile
            # count, those that left the window meanwhile do not.
            win = req.key_state.window
            later, later_wall = self.clock.now(), self.clock.wall()
            win.settle(later, later_wall, faults.foreign_rpm)
            held = win.holds(req.now, req.wall, later)
            headers = self._window_headers(rec, win, later, later_wall, held)
        if req.fault == "drop-after":
            rec.status, rec.code = 0, "dropped"
            await _drop(req.send)
        data = json.dumps(req.payload).encode()
        seed, n = cfg.seed, req.n
        if (
            req.status == 200
            and faults.bad_body_rate
            and (unit(seed, "bad-body", n) < faults.bad_body_rate)
        ):
            rec.fault = "bad-body"
            if unit(seed, "bad-body-kind", n) < 0.5:
                data = data[: max(1, len(data) // 2)]
            else:
                data = b"<html><body>upstream proxy hiccup</body></html>"
        await self._send(req.send, req.status, data, headers)

    async def _refuse(
        self,
        req: _Request,
        status: int,
        message: str,
        type_: str,
        code: str,
        param: str | None = None,
    ) -> None:
        """An error answer to a counted request, with its rate headers."""
        await self._error(req.send, req.record, req.headers, status, message, type_, code, param)


async def _read_body(receive: Any) -> bytes:
    chunks: list[bytes] = []
    while True:
        msg = await receive()
        if msg["type"] != "http.request":
            break
        chunks.append(msg.get("body", b""))
        if not msg.get("more_body"):
            break
    return b"".join(chunks)


def _bearer(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"authorization":
            text = value.decode("latin-1").strip()
            if text[:7].lower() == "bearer ":
                return text[7:].strip() or None
            return None
    return None


def _relative(path: str) -> str:
    for prefix in PREFIXES:
        if path == prefix or path.startswith(prefix + "/"):
            return path[len(prefix) :] or "/"
    return path


def create_sim(config: SimConfig | None = None, clock: Clock | None = None) -> Simulator:
    """A simulator for ``config`` (defaults: starter tier, basic plan) on ``clock``."""
    return Simulator(config, clock)


def sim_transport(sim: Simulator) -> httpx.ASGITransport:
    """An httpx transport that drives ``sim`` in-process (app exceptions reach the client)."""
    return httpx.ASGITransport(app=sim)
