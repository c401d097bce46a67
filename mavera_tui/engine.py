"""Assembling a running engine: the target (real API or embedded simulator), store, scheduler.

``run``, ``record`` and the monitor all build their engine here, from the same settings,
so they agree on what "no key set" means (the embedded simulator, said out loud) and on
how the key is handled (read from the environment, kept only in the HTTP client).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from . import catalog
from .budget import BudgetConfig, RechargeConfig
from .client import ApiClient, ConfigError, check_base_url, is_loopback_host
from .clock import Clock
from .scheduler import Scheduler, SchedulerConfig
from .store import Store

#: The key the embedded simulator is driven with (not a secret: it never leaves the process).
SIM_KEY = "sim-local-key"
EMBEDDED_TARGET = "embedded simulator"


@dataclass
class Settings:
    """Where to send requests and how to pace them. Never holds the key itself."""

    base_url: str | None = None
    db: str | None = None
    window_seconds: float = catalog.WINDOW_SECONDS
    tier: str | None = None               # the key's tier, if known (else learned from headers)
    max_retry_after: float = catalog.MAX_BACKOFF_SECONDS
    request_timeout: float = 300.0
    max_in_flight: int = 256              # requests in flight on endpoints with no cap
    http_backend: str = "aiohttp"         # real sockets: "aiohttp" (default) or "httpx"
    credit_poll: float = 30.0
    resend_unknown_up_to: int = 0
    budget_cap: int | None = None
    budget_alert: int | None = None
    alert_single: int = 300
    recharge: RechargeConfig = field(default_factory=RechargeConfig)
    keep_finished: bool = True
    # The embedded simulator (used when no key and no base URL are given).
    sim_tier: str = "professional"
    sim_plan: str = "professional"
    sim_purchased: int = 250_000             # a demo that can run for hours
    sim_time_scale: float = 1.0
    sim_seed: int = 1
    sim_auto_recharge: bool = True
    force_embedded: bool = False          # use the embedded simulator whatever the env says
    mode: str = "live"


def api_key_from_env() -> str | None:
    key = os.environ.get(catalog.API_KEY_ENV, "").strip()
    return key or None


def is_local(url: str) -> bool:
    return is_loopback_host(urlsplit(url).hostname or "")


class Engine:
    """A started scheduler with its client and store. ``async with Engine(settings) as e``."""

    def __init__(self, settings: Settings, *, clock: Clock | None = None,
                 sim: Any = None):
        self.settings = settings
        self.clock = clock or Clock()
        self.sim = sim
        self.client: ApiClient | None = None
        self.store: Store | None = None
        self.scheduler: Scheduler | None = None
        self.simulated = False
        self.target = ""
        self.notice = ""          # a line to show the user about where requests go

    def _make_client(self) -> ApiClient:
        s = self.settings
        key = api_key_from_env()
        base = s.base_url or os.environ.get(catalog.BASE_URL_ENV, "").strip() or None
        if s.force_embedded or (key is None and base is None):
            from .sim import create_sim, sim_transport
            from .sim.config import AutoRecharge, SimConfig

            if self.sim is None:
                self.sim = create_sim(SimConfig(
                    tier=s.sim_tier, plan=s.sim_plan, purchased=s.sim_purchased,
                    window_seconds=s.window_seconds, seed=s.sim_seed,
                    time_scale=s.sim_time_scale,
                    auto_recharge=AutoRecharge(enabled=s.sim_auto_recharge)), self.clock)
            self.simulated = True
            self.target = EMBEDDED_TARGET
            cfg = self.sim.config
            self.notice = (f"no {catalog.API_KEY_ENV} set: using the embedded simulator "
                           f"(tier {cfg.tier} {cfg.effective_limit}/min, plan {cfg.plan}, "
                           f"window {cfg.window_seconds:g} s)")
            return ApiClient("http://simulator/api/v1", SIM_KEY, clock=self.clock,
                             transport=sim_transport(self.sim),
                             timeout=s.request_timeout)
        if base is None:
            base = catalog.DEFAULT_BASE_URL
        base = check_base_url(base)
        if key is None:
            if not is_local(base):
                raise ConfigError(f"{catalog.API_KEY_ENV} is not set; the API at {base} needs "
                                  "a key (export MAVERA_API_KEY=...)")
            key = "local-no-key"
            self.notice = (f"no {catalog.API_KEY_ENV} set: sending a placeholder key to the "
                           f"local server at {base}")
        self.target = base
        if not self.notice:
            self.notice = f"target: {base}"
        # Enough connections for every request the scheduler may have in flight: the
        # uncapped ones, each capped endpoint's slots, and the engine's own balance reads.
        conns = s.max_in_flight + sum(e.cap or 0 for e in catalog.ENDPOINTS.values()) + 2
        return ApiClient(base, key, clock=self.clock, timeout=s.request_timeout,
                         max_connections=conns, backend=s.http_backend)

    def _scheduler_config(self) -> SchedulerConfig:
        s = self.settings
        return SchedulerConfig(
            window_seconds=s.window_seconds,
            limit=catalog.TIERS[s.tier] if s.tier else None,
            max_retry_after=s.max_retry_after, request_timeout=s.request_timeout,
            max_in_flight=s.max_in_flight, credit_poll=s.credit_poll,
            resend_unknown_up_to=s.resend_unknown_up_to,
            keep_finished=s.keep_finished,
            budget=BudgetConfig(workspace_cap=s.budget_cap, workspace_alert=s.budget_alert,
                                single_request=s.alert_single, recharge=s.recharge))

    async def start(self) -> Scheduler:
        """Open the store, build the client and scheduler, and start dispatching."""
        self.client = self._make_client()
        try:
            if self.settings.db:
                self.store = await Store.open(Path(self.settings.db))
            self.scheduler = Scheduler(
                self.client, clock=self.clock, store=self.store,
                config=self._scheduler_config(),
                mode="demo" if self.simulated and self.settings.mode == "live"
                else self.settings.mode,
                target=self.target, simulated=self.simulated)
            await self.scheduler.start()
        except BaseException:
            await self.stop()
            raise
        return self.scheduler

    async def stop(self, *, abort: bool = False) -> None:
        """Stop the scheduler (waiting for in-flight requests unless ``abort``), close all."""
        if self.scheduler is not None:
            if abort:
                await self.scheduler.abort()
            else:
                await self.scheduler.close()
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.aclose()
        if self.store is not None:
            await self.store.close()

    async def __aenter__(self) -> Engine:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
