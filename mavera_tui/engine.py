"""Assembling a running engine: the target (real API or embedded simulator), store, scheduler.

``run``, ``record`` and the monitor all build their engine here, from the same settings
(``config.Config``; ``scheduler_config`` is the one mapping onto the scheduler's),
so they agree on what "no key set" means (the embedded simulator, said out loud) and on
how the key is handled (read from the environment, kept only in the HTTP client).
"""

from __future__ import annotations

import asyncio
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
from .config import Config
from .scheduler import Scheduler, SchedulerConfig
from .store import Store

#: The key the embedded simulator is driven with (not a secret: it never leaves the process).
SIM_KEY = "sim-local-key"
EMBEDDED_TARGET = "embedded simulator"


@dataclass
class Settings:
    """What one engine runs with: the operator's settings (``config.Config``: every default
    and every tunable, from defaults, file, environment and flags) and what this command
    does with them. Never holds the key itself."""

    config: Config = field(default_factory=Config)
    db: str | None = None
    keep_finished: bool = True  # False for long runs (monitor, record)
    force_embedded: bool = False  # use the embedded simulator whatever the env says
    mode: str = "live"
    role: str | None = None  # in a shared key's fleet view (default: from the mode)
    batch: int | None = None  # jobs this command submits as it starts (run: its job file)


def scheduler_config(config: Config, *, keep_finished: bool = True) -> SchedulerConfig:
    """The scheduler's and the budget's settings from the model: the one mapping. What the
    model does not hold (attempts, back-off, cache) keeps SchedulerConfig's own values."""
    eng, bud = config.engine, config.budget
    r = bud.auto_recharge
    return SchedulerConfig(
        window_seconds=eng.window_seconds,
        limit=catalog.TIERS[eng.tier] if eng.tier else None,
        max_retry_after=eng.max_retry_after,
        request_timeout=eng.request_timeout,
        max_in_flight=eng.max_in_flight,
        credit_poll=eng.credit_poll,
        balance_read=eng.balance_read,
        resend_unknown_up_to=eng.resend_unknown_up_to,
        keep_finished=keep_finished,
        budget=BudgetConfig(
            workspace_cap=bud.workspace_cap,
            workspace_alert=bud.workspace_alert,
            single_request=bud.alert_single,
            thresholds=bud.allocation_alerts,
            recharge=RechargeConfig(r.enabled, r.threshold, r.credits, r.pack, r.monthly_limit_eur),
        ),
    )


def api_key_from_env() -> str | None:
    key = os.environ.get(catalog.API_KEY_ENV, "").strip()
    return key or None


def is_local(url: str) -> bool:
    return is_loopback_host(urlsplit(url).hostname or "")


class Engine:
    """A started scheduler with its client and store. ``async with Engine(settings) as e``."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        sim: Any = None,
        api_key: str | None = None,
        store: Store | None = None,
        resume: bool = True,
    ):
        """``api_key``: use this key instead of MAVERA_API_KEY (the proxy's callers' keys;
        kept only in the HTTP client). ``store``: a store opened by the caller and shared
        with other engines (not closed here); ``resume``: resume its unfinished jobs."""
        self.settings = settings
        self.clock = clock or Clock()
        self.sim = sim
        self._api_key = api_key
        self._shared_store = store
        self._resume = resume
        self.client: ApiClient | None = None
        self.store: Store | None = store
        self.scheduler: Scheduler | None = None
        self.simulated = False
        self.target = ""
        self.notice = ""  # a line to show the user about where requests go
        self.fleet: Any = None  # with --shared: this process in the key's fleet
        self.archive: Any = None  # and, when archiving, the fleet's ledger copied into the store
        self._key_prefix = ""  # the key's Redis prefix (a hash of it, never the key)

    def _make_client(self) -> ApiClient:
        s = self.settings
        eng, sim_cfg = s.config.engine, s.config.sim
        key = self._api_key or api_key_from_env()
        self._set_key_prefix(key or SIM_KEY)
        # MAVERA_BASE_URL is read with the other settings (config.load_config), not here.
        base = (eng.base_url or "").strip() or None
        if (
            s.force_embedded
            or (key is None and base is None)
            or (self.sim is not None and base is None)
        ):
            from .sim import create_sim, sim_transport
            from .sim.config import AutoRecharge, SimConfig

            if self.sim is None:
                self.sim = create_sim(
                    SimConfig(
                        tier=sim_cfg.tier,
                        plan=sim_cfg.plan,
                        purchased=sim_cfg.purchased,
                        window_seconds=eng.window_seconds,
                        seed=sim_cfg.seed,
                        time_scale=sim_cfg.time_scale,
                        auto_recharge=AutoRecharge(enabled=sim_cfg.auto_recharge),
                    ),
                    self.clock,
                )
            self.simulated = True
            self.target = EMBEDDED_TARGET
            cfg = self.sim.config
            self.notice = (
                f"no {catalog.API_KEY_ENV} set: using the embedded simulator "
                f"(tier {cfg.tier} {cfg.effective_limit}/min, plan {cfg.plan}, "
                f"window {cfg.window_seconds:g} s)"
            )
            return ApiClient(
                "http://simulator/api/v1",
                SIM_KEY,
                clock=self.clock,
                transport=sim_transport(self.sim),
                timeout=eng.request_timeout,
            )
        if base is None:
            base = catalog.DEFAULT_BASE_URL
        base = check_base_url(base)
        if key is None:
            if not is_local(base):
                raise ConfigError(
                    f"{catalog.API_KEY_ENV} is not set; the API at {base} needs "
                    "a key (export MAVERA_API_KEY=...)"
                )
            key = "local-no-key"
            self._set_key_prefix(key)
            self.notice = (
                f"no {catalog.API_KEY_ENV} set: sending a placeholder key to the "
                f"local server at {base}"
            )
        self.target = base
        if not self.notice:
            self.notice = f"target: {base}"
        # Enough connections for every request the scheduler may have in flight: the
        # uncapped ones, each capped endpoint's slots, and the engine's own balance reads.
        conns = eng.max_in_flight + sum(e.cap or 0 for e in catalog.ENDPOINTS.values()) + 2
        return ApiClient(
            base,
            key,
            clock=self.clock,
            timeout=eng.request_timeout,
            max_connections=conns,
            backend=eng.http_backend,
        )

    def _set_key_prefix(self, key: str) -> None:
        if self.settings.config.shared.redis_url:
            from .shared.state import key_prefix

            self._key_prefix = key_prefix(key)

    async def _join_fleet(self, sched: Scheduler) -> None:
        """With ``--shared``: the scheduler's window, slots and credits become the key's
        fleet's (Redis), before it sends anything."""
        shared = self.settings.config.shared
        if not shared.redis_url:
            return
        from .shared.fleet import Fleet
        from .shared.state import SharedState

        url = shared.redis_url.strip()
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(
                f"--shared takes a Redis URL such as redis://127.0.0.1:6379/0, got {url[:60]!r}"
            )
        try:
            state = SharedState(url, self._key_prefix, socket_timeout=shared.socket_timeout)
        except ValueError as e:
            raise ConfigError(f"--shared: not a usable Redis URL: {e}") from None
        mode = self.settings.mode
        role = self.settings.role or {"live": "monitor", "demo": "monitor"}.get(mode, mode)
        self.fleet = Fleet(state, shared, role=role, echo=mode in ("run", "record"))
        self.fleet.attach(sched)
        await self.fleet.start()
        if self.fleet.down is None:
            self.notice += f"; sharing the key's limits through {url.split('@')[-1]}"

    async def start_archive(self) -> None:
        """With ``--shared`` and a store: copy the fleet's ledger stream into the store in
        the background (``shared.archive``; a recording always does). Idempotent."""
        if self.fleet is None or self.store is None or self.archive is not None:
            return
        from .shared.archive import LedgerArchive
        from .shared.state import SharedState

        state = self.fleet.state
        own = SharedState(
            state.url, state.prefix, socket_timeout=self.settings.config.shared.socket_timeout
        )
        sched = self.scheduler
        self.archive = LedgerArchive(
            own,
            self.store,
            alert=sched.alert if sched is not None else None,
            wall=self.clock.wall,
        )
        await self.archive.start()

    def _scheduler_config(self) -> SchedulerConfig:
        return scheduler_config(self.settings.config, keep_finished=self.settings.keep_finished)

    async def start(self) -> Scheduler:
        """Open the store, build the client and scheduler, and start dispatching."""
        self.client = self._make_client()
        try:
            if self.settings.db and self._shared_store is None:
                self.store = await Store.open(Path(self.settings.db))
            self.scheduler = Scheduler(
                self.client,
                clock=self.clock,
                store=self.store,
                config=self._scheduler_config(),
                mode="demo"
                if self.simulated and self.settings.mode == "live"
                else self.settings.mode,
                target=self.target,
                simulated=self.simulated,
            )
            await self._join_fleet(self.scheduler)
            await self.scheduler.start(resume=self._resume, batch=self.settings.batch)
            if self.settings.config.shared.archive or self.settings.mode == "record":
                await self.start_archive()
        except BaseException:
            await self.stop()
            raise
        return self.scheduler

    async def start_unless(self, stop: asyncio.Event) -> Scheduler | None:
        """``start()``, or None (stopped again) if ``stop`` is set first. Starting can wait
        a long time (an API that does not answer the balance read; a shared key's Redis
        away, which fails closed): a signal must still end the process."""
        starting = asyncio.ensure_future(self.start())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if starting.done():
            return starting.result()
        starting.cancel()  # start() stops what it had started
        with contextlib.suppress(BaseException):
            await starting
        await self.stop(abort=True)
        return None

    async def stop(self, *, abort: bool = False) -> None:
        """Stop the scheduler (waiting for in-flight requests unless ``abort``), close all."""
        if self.scheduler is not None:
            if abort:
                await self.scheduler.abort()
            else:
                await self.scheduler.close()
        if self.fleet is not None:
            await self.fleet.close()  # its last releases go into the stream first ...
        if self.archive is not None:
            await self.archive.close()  # ... and from there into the archive
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.aclose()
        if self.store is not None and self.store is not self._shared_store:
            await self.store.close()

    async def __aenter__(self) -> Engine:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
