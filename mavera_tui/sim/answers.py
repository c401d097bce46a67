"""How the simulator answers: completing the work (slot, charge, record), success bodies,
error envelopes, rate-limit headers, a dropped connection, and an event stream (whose
events and their sending are :mod:`.stream`'s).

A mixin of :class:`~mavera_tui.sim.app.Simulator`, whose request pipeline (the stages in
:mod:`mavera_tui.sim.app`) decides *what* to answer; this says *how*.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
from email.utils import formatdate
from typing import TYPE_CHECKING, Any

import httpx

from .. import catalog
from ..catalog import Endpoint
from ..clock import Clock
from .config import SimConfig
from .records import RequestRecord
from .state import Account
from .stream import response_events, send_events

if TYPE_CHECKING:
    from .window import _KeyState, _Window

#: What ``Faults.hostile_text`` puts into messages: a screen clear, a window-title change,
#: a Textual action link and Rich markup.
HOSTILE_TEXT = "\x1b[2J\x1b]0;pwned\x07 [@click=app.quit]x[/] [bold red]boom[/]"

#: Response id prefix and ``object`` per endpoint key (the simulator's own naming).
KINDS: dict[str, tuple[str, str]] = {
    "responses": ("resp", "response"),
    "mave": ("mave", "mave.chat"),
    "focus_groups": ("fg", "focus_group"),
    "video_analyses": ("va", "video_analysis"),
    "generations": ("gen", "generation"),
    "personas_list": ("list", "list"),
    "personas_get": ("persona", "persona"),
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


class Answering:
    """The simulator's answers (a mixin: the Simulator holds the state named here)."""

    config: SimConfig
    clock: Clock
    state: Account
    _background: set[asyncio.Task[None]]

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
        elif ep.key == "personas_get":
            pid = rec.path.rstrip("/").split("/")[-1]
            name = f"Simulated persona {pid}" + (" " + HOSTILE_TEXT if hostile else "")
            out = {"id": pid, "object": "persona", "name": name}
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
        (:mod:`.stream`: ``response.created`` ... ``response.output_text.delta`` ...
        ``response.completed``, whose response carries the ``usage``), its deltas spread
        over the latency.

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
        events = response_events(final, rec.index)
        try:
            if not await send_events(send, receive, headers, events, latency):
                rec.client_gone = True
        finally:
            ks.inflight[slot] -= 1
            rec.done = self.clock.now()

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
