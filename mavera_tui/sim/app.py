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
from collections.abc import MutableMapping
from typing import Any

import httpx

from .. import catalog
from ..clock import Clock

# Read from here by tests and docs: the constants and helpers of the parts.
from .answers import HOSTILE_TEXT, KINDS, SimulatedDrop, unit  # noqa: F401
from .config import SimConfig
from .pipeline import PREFIXES, RequestPipeline, charge_for, charge_range  # noqa: F401
from .records import Records
from .state import Account
from .window import _KeyState


class Simulator(RequestPipeline):
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


def create_sim(config: SimConfig | None = None, clock: Clock | None = None) -> Simulator:
    """A simulator for ``config`` (defaults: starter tier, basic plan) on ``clock``."""
    return Simulator(config, clock)


def sim_transport(sim: Simulator) -> httpx.ASGITransport:
    """An httpx transport that drives ``sim`` in-process (app exceptions reach the client)."""
    return httpx.ASGITransport(app=sim)
