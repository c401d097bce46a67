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
import contextlib
import hashlib
import itertools
import json
import math
from collections import deque
from collections.abc import MutableMapping
from email.utils import formatdate
from typing import Any

import httpx

from .. import catalog
from ..catalog import Endpoint
from ..clock import Clock
from ..estimate import EstimateError, estimate_for
from .config import SimConfig
from .records import Records, RequestRecord, fingerprint
from .state import Account

#: What ``Faults.hostile_text`` puts into messages: a screen clear, a window-title change,
#: a Textual action link and Rich markup.
HOSTILE_TEXT = "\x1b[2J\x1b]0;pwned\x07 [@click=app.quit]x[/] [bold red]boom[/]"

#: Mount prefixes stripped before routing (the root works too).
PREFIXES = ("/api/v1", "/api")

#: Response id prefix and ``object`` per endpoint key (the simulator's own naming).
KINDS: dict[str, tuple[str, str]] = {
    "responses": ("resp", "response"),
    "mave": ("mave", "mave.chat"),
    "focus_groups": ("fg", "focus_group"),
    "video_analyses": ("va", "video_analysis"),
    "generations": ("gen", "generation"),
    "personas_list": ("list", "list"),
    "personas_create": ("persona", "persona"),
    "brand_voices": ("bv", "brand_voice"),
    "news_analyze": ("news", "news_analysis"),
    "billing_credits": ("bal", "credit_balance"),
}

_H_LIMIT = catalog.HEADER_LIMIT.lower().encode()
_H_REMAINING = catalog.HEADER_REMAINING.lower().encode()
_H_RESET = catalog.HEADER_RESET.lower().encode()
_H_RETRY = catalog.HEADER_RETRY_AFTER.lower().encode()
_JSON_CT = (b"content-type", b"application/json")
_HUGE_RETRY_AFTER = "1000000000"


class SimulatedDrop(httpx.RemoteProtocolError):
    """Raised by the app for a dropped connection; the client sees an httpx transport error."""

    def __init__(self) -> None:
        super().__init__(
            "Server disconnected without sending a complete response (simulated drop)."
        )


def unit(seed: int, *parts: object) -> float:
    """A deterministic number in [0, 1) from the seed and ``parts``."""
    digest = hashlib.blake2b(repr((seed, *parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 18446744073709551616.0


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


class Simulator:
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
        cfg = self.config
        faults = cfg.faults
        seed = cfg.seed
        clock = self.clock
        now = clock.now()
        wall = clock.wall()
        if self._t0 is None:
            self._t0 = now
        n = self._n
        self._n += 1
        method = scope["method"]
        rel = _relative(scope["path"])
        key = _bearer(scope["headers"])

        if not key or key in cfg.rejected_keys:
            self.records.append(
                RequestRecord(
                    n,
                    now,
                    wall,
                    fingerprint(key) if key else "-",
                    method,
                    rel,
                    status=401,
                    code="invalid_api_key",
                    done=now,
                )
            )
            await self._send(
                send,
                401,
                self._envelope(
                    "Invalid API key. Send 'Authorization: Bearer <your API key>'.",
                    "authentication_error",
                    "invalid_api_key",
                ),
                [],
            )
            return

        limit = cfg.effective_limit
        w = cfg.window_seconds
        ks = self._keys.get(key)
        if ks is None:
            ks = self._keys[key] = _KeyState(fingerprint(key), limit, w, cfg.readings.window_kind)
        rec = RequestRecord(n, now, wall, ks.fp, method, rel)
        self.records.append(rec)
        win = ks.window
        win.settle(now, wall, faults.foreign_rpm)

        # --- the window (rejections here are not counted) ---
        if faults.storm_seconds > 0:
            s0 = self._t0 + faults.storm_start
            s1 = s0 + faults.storm_seconds
            if s0 <= now < s1:
                rec.window_count = win.count
                rec.fault = "storm"
                await self._window_429(
                    send, rec, n, s1 - now, self._rate_headers(n, 0, wall + (s1 - now), rec)
                )
                return
        if win.count >= limit:
            rec.window_count = win.count
            await self._window_429(
                send,
                rec,
                n,
                win.admit_wait(now, wall),
                self._window_headers(rec, win, now, wall, False),
            )
            return
        win.real.append(now)
        rec.counted = True
        rec.window_count = win.count
        headers = self._window_headers(rec, win, now, wall, True)

        # --- route and body ---
        ep = catalog.find_endpoint(method, rel)
        if ep is None:
            await self._error(
                send,
                rec,
                headers,
                404,
                f"Unknown route: {method} {rel}",
                "invalid_request_error",
                "not_found",
            )
            return
        rec.endpoint = ep.key
        body: Any = {}
        if method == "POST":
            raw = await _read_body(receive)
            if raw.strip():
                try:
                    body = json.loads(raw)
                except ValueError:
                    await self._error(
                        send,
                        rec,
                        headers,
                        400,
                        "The request body is not valid JSON.",
                        "invalid_request_error",
                        "invalid_json",
                    )
                    return
            if not isinstance(body, dict):
                await self._error(
                    send,
                    rec,
                    headers,
                    400,
                    "The request body must be a JSON object.",
                    "invalid_request_error",
                    "invalid_json",
                )
                return
        try:
            charge = charge_for(ep, body, seed, rel)
        except EstimateError as exc:
            await self._error(
                send,
                rec,
                headers,
                400,
                str(exc),
                "invalid_request_error",
                "invalid_parameter",
                exc.field,
            )
            return

        # --- concurrency (a rejection here is counted) ---
        slot = ep.slot_key
        inflight = ks.inflight.get(slot, 0)
        if ep.cap is not None and inflight >= ep.cap:
            rec.in_flight = inflight
            retry = max(1, math.ceil(cfg.concurrency_retry_seconds * cfg.time_scale))
            await self._error(
                send,
                rec,
                headers + self._retry_after(retry, wall),
                429,
                f"Too many concurrent requests to {ep.path} (at most {ep.cap} at a time). "
                f"Please retry after {retry} seconds.",
                "rate_limit_error",
                catalog.CODE_CONCURRENCY,
            )
            return

        # --- pre-flight billing ---
        if charge:
            code = self.state.check(charge)
            if code is not None:
                await self._error(send, rec, headers, 402, *_insufficient(code))
                return

        # --- faults decided at admission ---
        fault: str | None = None
        if faults.error_5xx_rate and unit(seed, "5xx", n) < faults.error_5xx_rate:
            fault = "503" if unit(seed, "5xx-kind", n) < 0.5 else "500"
        elif faults.drop_rate and unit(seed, "drop", n) < faults.drop_rate:
            fault = "drop-before" if unit(seed, "drop-kind", n) < 0.5 else "drop-after"
        if fault == "503":
            rec.fault = fault
            await self._error(
                send,
                rec,
                headers,
                503,
                "The service is temporarily unavailable. Please try again.",
                "api_error",
                "service_unavailable",
            )
            return
        if fault == "drop-before":
            rec.fault = fault
            rec.status, rec.code, rec.done = 0, "dropped", now
            await _drop(send)
        lo, hi = ep.latency
        latency = (lo + unit(seed, "latency", n) * (hi - lo)) * cfg.time_scale
        if faults.slow_rate and unit(seed, "slow", n) < faults.slow_rate:
            latency += faults.slow_seconds
            fault = fault or "slow"
        rec.fault = fault
        rec.latency = latency
        ks.inflight[slot] = inflight + 1
        rec.in_flight = inflight + 1

        if ep.key == "responses" and body.get("stream") is True and fault in (None, "slow"):
            await self._stream(send, receive, ks, slot, rec, ep, body, charge, latency, headers)
            return

        # --- the work ---
        if latency > 0:
            try:
                await asyncio.sleep(latency)
            except asyncio.CancelledError:
                rec.client_gone = True
                self._spawn(
                    self._finish_later(ks, slot, rec, ep, body, charge, fault, now + latency)
                )
                raise
        status, payload = self._finish(ks, slot, rec, ep, body, charge, fault)
        if cfg.readings.remaining_at == "response":
            # Read the window again as the answer leaves: requests admitted meanwhile
            # count, those that left the window meanwhile do not.
            later, later_wall = clock.now(), clock.wall()
            win.settle(later, later_wall, faults.foreign_rpm)
            headers = self._window_headers(rec, win, later, later_wall, win.holds(now, wall, later))

        if fault == "drop-after":
            rec.status, rec.code = 0, "dropped"
            await _drop(send)
        data = json.dumps(payload).encode()
        if (
            status == 200
            and faults.bad_body_rate
            and (unit(seed, "bad-body", n) < faults.bad_body_rate)
        ):
            rec.fault = "bad-body"
            if unit(seed, "bad-body-kind", n) < 0.5:
                data = data[: max(1, len(data) // 2)]
            else:
                data = b"<html><body>upstream proxy hiccup</body></html>"
        await self._send(send, status, data, headers)

    # --- streaming (server-sent events) ----------------------------------------------------

    async def _stream(
        self,
        send: Any,
        receive: Any,
        ks: _KeyState,
        slot: str,
        rec: RequestRecord,
        ep: Endpoint,
        body: dict[str, Any],
        charge: int,
        latency: float,
        headers: list[tuple[bytes, bytes]],
    ) -> None:
        """``POST /responses`` with ``"stream": true``: the Responses API's event stream
        (``response.created`` ... ``response.output_text.delta`` ... ``response.completed``,
        whose response carries the ``usage``), its deltas spread over the latency.

        Choices: the charge is taken when the stream starts (the work has begun; the usage
        in the final event says it), so a stream the client closes early is charged in
        full; closing it frees the slot at once (the work stops: ``record.client_gone``)."""
        state, wall = self.state, self.clock.wall()
        prefix, obj = KINDS[ep.key]
        rid = f"{prefix}_{rec.index}"
        if charge:
            state.deduct(charge, f"{rec.path} {rid}", wall)
            rec.credits = charge
        rec.status, rec.response_id = 200, rid
        final = self._success(ep, body, rid, obj, charge, rec, wall)
        final["object"] = "response"
        final["created_at"] = final.get("created", int(wall))
        final["model"] = body.get("model", "mavera-1")
        text = final["output"][0]["content"][0]["text"]
        words = [w + " " for w in text.split(" ")]
        words[-1] = words[-1].rstrip()
        msg_id = f"msg_{rec.index}"
        pending = {**final, "status": "in_progress", "output": [], "usage": None}
        events: list[dict[str, Any]] = [
            {"type": "response.created", "response": pending},
            {"type": "response.in_progress", "response": pending},
            {
                "type": "response.output_item.added",
                "output_index": 0,
                "item": {
                    "id": msg_id,
                    "type": "message",
                    "status": "in_progress",
                    "role": "assistant",
                    "content": [],
                },
            },
            {
                "type": "response.content_part.added",
                "item_id": msg_id,
                "output_index": 0,
                "content_index": 0,
                "part": {"type": "output_text", "text": "", "annotations": []},
            },
        ]
        deltas = [
            {
                "type": "response.output_text.delta",
                "item_id": msg_id,
                "output_index": 0,
                "content_index": 0,
                "delta": w,
            }
            for w in words
        ]
        item = {**final["output"][0], "id": msg_id, "status": "completed"}
        item["content"] = [{"type": "output_text", "text": text, "annotations": []}]
        final["output"] = [item]
        tail: list[dict[str, Any]] = [
            {
                "type": "response.output_text.done",
                "item_id": msg_id,
                "output_index": 0,
                "content_index": 0,
                "text": text,
            },
            {
                "type": "response.content_part.done",
                "item_id": msg_id,
                "output_index": 0,
                "content_index": 0,
                "part": item["content"][0],
            },
            {"type": "response.output_item.done", "output_index": 0, "item": item},
            {"type": "response.completed", "response": final},
        ]
        gone = asyncio.Event()

        async def watch() -> None:
            while True:
                msg = await receive()
                if msg.get("type") == "http.disconnect":
                    gone.set()
                    return

        watcher = asyncio.get_running_loop().create_task(watch())
        seq = itertools.count()

        def frame(ev: dict[str, Any]) -> bytes:
            ev["sequence_number"] = next(seq)
            return f"event: {ev['type']}\ndata: {json.dumps(ev)}\n\n".encode()

        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"text/event-stream; charset=utf-8"),
                        (b"cache-control", b"no-cache"),
                        *headers,
                    ],
                }
            )
            await send(
                {
                    "type": "http.response.body",
                    "body": b"".join(map(frame, events)),
                    "more_body": True,
                }
            )
            step = latency / max(1, len(deltas))
            for ev in deltas:
                if step > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(gone.wait(), step)
                if gone.is_set():
                    rec.client_gone = True
                    return
                await send({"type": "http.response.body", "body": frame(ev), "more_body": True})
            await send({"type": "http.response.body", "body": b"".join(map(frame, tail))})
        finally:
            watcher.cancel()
            ks.inflight[slot] -= 1
            rec.done = self.clock.now()

    # --- completing work ------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _finish_later(
        self,
        ks: _KeyState,
        slot: str,
        rec: RequestRecord,
        ep: Endpoint,
        body: dict[str, Any],
        charge: int,
        fault: str | None,
        done_at: float,
    ) -> None:
        await asyncio.sleep(max(0.0, done_at - self.clock.now()))
        self._finish(ks, slot, rec, ep, body, charge, fault)

    def _finish(
        self,
        ks: _KeyState,
        slot: str,
        rec: RequestRecord,
        ep: Endpoint,
        body: dict[str, Any],
        charge: int,
        fault: str | None,
    ) -> tuple[int, dict[str, Any]]:
        """Release the slot, take (or refund) the charge, fill the record, build the answer."""
        ks.inflight[slot] -= 1
        rec.done = self.clock.now()
        wall = self.clock.wall()
        prefix, obj = KINDS[ep.key]
        rid = f"{prefix}_{rec.index}"
        resource = f"{rec.path} {rid}"
        state = self.state
        if fault == "500":
            if charge and state.check(charge) is None:
                state.refund(state.deduct(charge, resource, wall), wall)
                rec.refunded = charge
            rec.status, rec.code, rec.response_id = 500, "internal_error", rid
            return 500, self._envelope_obj(
                "The server had an error while processing your request. "
                "Any credits taken were refunded.",
                "api_error",
                "internal_error",
            )
        if charge:
            code = state.check(charge)
            if code is not None:
                rec.status, rec.code = 402, code
                return 402, self._envelope_obj(*_insufficient(code))
            state.deduct(charge, resource, wall)
            rec.credits = charge
        rec.status, rec.response_id = 200, rid
        return 200, self._success(ep, body, rid, obj, charge, rec, wall)

    def _success(
        self,
        ep: Endpoint,
        body: dict[str, Any],
        rid: str,
        obj: str,
        charge: int,
        rec: RequestRecord,
        wall: float,
    ) -> dict[str, Any]:
        hostile = self.config.faults.hostile_text
        text = "Simulated answer." + (" " + HOSTILE_TEXT if hostile else "")
        out: dict[str, Any]
        if ep.key == "billing_credits":
            out = self.state.to_dict()
        elif ep.key == "personas_list":
            out = {
                "id": rid,
                "object": "list",
                "data": [
                    {
                        "id": f"persona_{i}",
                        "object": "persona",
                        "name": f"Simulated persona {i}" + (" " + HOSTILE_TEXT if hostile else ""),
                    }
                    for i in (1, 2, 3)
                ],
            }
        else:
            out = {"id": rid, "object": obj, "created": int(wall), "status": "completed"}
            if ep.key == "responses":
                out["output"] = [
                    {
                        "type": "message",
                        "role": "assistant",
                        "content": [{"type": "output_text", "text": text}],
                    }
                ]
            elif ep.key == "news_analyze":
                out["story_id"] = rec.path.split("/")[-2]
                out["analysis"] = text
            else:
                out["output"] = text
            for name in ("name", "sample_size", "video_seconds", "complexity", "thread_id"):
                if name in body:
                    out[name] = body[name]
        if charge:
            inp = 16 + len(json.dumps(body, default=str)) // 4
            outp = charge * 32 + int(unit(self.config.seed, "tokens", rec.index) * 32)
        else:
            inp = outp = 0
        out["usage"] = {
            "credits_used": charge,
            "input_tokens": inp,
            "output_tokens": outp,
            "total_tokens": inp + outp,
        }
        return out

    # --- responses ------------------------------------------------------------------------

    def _envelope_obj(
        self, message: str, type_: str, code: str, param: str | None = None
    ) -> dict[str, Any]:
        if self.config.faults.hostile_text:
            message = f"{HOSTILE_TEXT} {message} {HOSTILE_TEXT}"
            param = HOSTILE_TEXT
        return {"error": {"message": message, "type": type_, "code": code, "param": param}}

    def _envelope(self, message: str, type_: str, code: str, param: str | None = None) -> bytes:
        return json.dumps(self._envelope_obj(message, type_, code, param)).encode()

    async def _error(
        self,
        send: Any,
        rec: RequestRecord,
        headers: list[tuple[bytes, bytes]],
        status: int,
        message: str,
        type_: str,
        code: str,
        param: str | None = None,
    ) -> None:
        rec.status, rec.code, rec.done = status, code, rec.t
        await self._send(send, status, self._envelope(message, type_, code, param), headers)

    async def _window_429(
        self, send: Any, rec: RequestRecord, n: int, wait: float, headers: list[tuple[bytes, bytes]]
    ) -> None:
        retry = max(1, math.ceil(wait))
        headers = headers + self._retry_after(retry, rec.wall)
        await self._error(
            send,
            rec,
            headers,
            429,
            f"Rate limit exceeded. Please retry after {retry} seconds.",
            "rate_limit_error",
            catalog.CODE_RATE_LIMIT,
        )

    def _window_headers(
        self, rec: RequestRecord, win: _Window, now: float, wall: float, counted: bool
    ) -> list[tuple[bytes, bytes]]:
        """X-RateLimit-* for the window as it is at ``now``, under the configured readings.

        ``counted``: this request is among the window's entries (so ``before`` adds it back).
        """
        readings = self.config.readings
        count = win.count
        if counted and readings.remaining_counts == "before":
            count -= 1
        w = win.w
        if readings.reset == "now":
            reset_wall = wall + w
        elif readings.reset == "minute":
            reset_wall = (math.floor(wall / w) + 1) * w
        else:
            oldest = win.oldest()
            reset_wall = wall + (w if oldest is None else oldest + w - now)
        return self._rate_headers(rec.index, self.config.effective_limit - count, reset_wall, rec)

    def _rate_headers(
        self, n: int, remaining: int, reset_wall: float, rec: RequestRecord | None = None
    ) -> list[tuple[bytes, bytes]]:
        lim = str(self.config.effective_limit)
        rem = str(max(0, remaining))
        rst = str(math.ceil(reset_wall))
        if rec is not None:
            rec.remaining, rec.reset = max(0, remaining), math.ceil(reset_wall)
        faults = self.config.faults
        seed = self.config.seed
        if faults.bad_headers and unit(seed, "headers", n) < faults.bad_headers:
            variant = int(unit(seed, "headers-kind", n) * 4)
            if variant == 0:  # all missing
                return []
            if variant == 1:  # one missing
                pairs = [(_H_LIMIT, lim), (_H_REMAINING, rem), (_H_RESET, rst)]
                del pairs[int(unit(seed, "headers-which", n) * 3)]
                return [(k, v.encode()) for k, v in pairs]
            if variant == 2:  # malformed
                lim, rem, rst = f"{lim} per minute", "plenty", f"{reset_wall:.3f}s"
            else:  # negative
                lim, rem, rst = f"-{lim}", f"-{int(rem) + 1}", f"-{rst}"
        return [(_H_LIMIT, lim.encode()), (_H_REMAINING, rem.encode()), (_H_RESET, rst.encode())]

    def _retry_after(self, seconds: int, wall: float) -> list[tuple[bytes, bytes]]:
        mode = self.config.faults.retry_after_mode
        if mode == "absent":
            return []
        if mode == "http-date":
            value = formatdate(math.ceil(wall + seconds), usegmt=True)
        elif mode == "negative":
            value = f"-{seconds}"
        elif mode == "huge":
            value = _HUGE_RETRY_AFTER
        else:
            value = str(seconds)
        return [(_H_RETRY, value.encode())]

    @staticmethod
    async def _send(
        send: Any, status: int, data: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [_JSON_CT, (b"content-length", str(len(data)).encode()), *headers],
            }
        )
        await send({"type": "http.response.body", "body": data})


def _insufficient(code: str) -> tuple[str, str, str]:
    if code == catalog.CODE_BUDGET_EXCEEDED:
        return (
            "The workspace budget is exhausted: this request would exceed the workspace's "
            "usage limit for this billing period.",
            "insufficient_credits",
            code,
        )
    return (
        "Insufficient credits. Please upgrade your subscription or wait for your next "
        "billing cycle.",
        "insufficient_credits",
        code,
    )


async def _drop(send: Any) -> None:
    # The status line goes out, then the connection is cut mid-body: uvicorn closes the
    # socket (it cannot send a 500 after a response started); ASGITransport re-raises.
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [_JSON_CT, (b"content-length", b"4096")],
        }
    )
    raise SimulatedDrop()


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
