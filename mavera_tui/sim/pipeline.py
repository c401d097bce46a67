"""The simulator's request pipeline: one method per stage, in the order the simulator's
docstring (:mod:`mavera_tui.sim.app`) lists and explains them: auth, window, route and body,
concurrency, pre-flight billing, faults at admission, the work, the answer. A stage that
answers ends the request; :class:`_Request` carries what the stages learnt."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import MutableMapping
from typing import Any

from .. import catalog
from ..catalog import Endpoint
from ..estimate import EstimateError, estimate_for
from .answers import Answering, _drop, _insufficient, unit
from .records import Records, RequestRecord, fingerprint
from .window import _KeyState

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

    @property
    def streams(self) -> bool:
        """Answered as an event stream: ``POST /responses`` asking ``"stream": true``,
        with no fault that would answer otherwise (a slow one only delays it)."""
        return (
            self.endpoint.key == "responses"
            and self.body.get("stream") is True
            and self.fault in (None, "slow")
        )


class RequestPipeline(Answering):
    """The stages (a base of the Simulator, which holds the state named here)."""

    records: Records
    _keys: dict[str, _KeyState]
    _n: int
    _t0: float | None

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
        if req.streams:
            ep, ks = req.endpoint, req.key_state
            await self._stream(
                req.send,
                req.receive,
                ks,
                ep.slot_key,
                req.record,
                ep,
                req.body,
                req.charge,
                req.latency,
                req.headers,
            )
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
            body, problem = _json_object(await _read_body(req.receive))
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


def _json_object(raw: bytes) -> tuple[Any, str]:
    """A POST body parsed (empty: ``{}``), and what is wrong with it ("" if nothing)."""
    body: Any = {}
    if raw.strip():
        try:
            body = json.loads(raw)
        except ValueError:
            return body, "The request body is not valid JSON."
    if not isinstance(body, dict):
        return body, "The request body must be a JSON object."
    return body, ""


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
