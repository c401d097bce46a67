"""What the simulator is told to be: the account (tier, plan, credits) and the faults to inject.

Every documented number comes from :mod:`mavera_tui.catalog`; the defaults here only pick
which documented tier/plan/pack to imitate. Numbers that are the simulator's own inventions
(latency scaling, the concurrency Retry-After, the slow-response delay) are fields here so
that nothing in the request path hard-codes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import catalog

RETRY_AFTER_MODES = ("seconds", "http-date", "negative", "huge", "absent")
REMAINING_COUNTS = ("after", "before")
REMAINING_AT = ("arrival", "response")
RESET_MEANINGS = ("oldest", "now", "minute")
WINDOW_KINDS = ("sliding", "fixed")


@dataclass
class AutoRecharge:
    """Auto-recharge as the credits guide and the packs page describe it.

    After a deduction, if ``enabled`` and the balance (plan allocation left + purchased) is
    below ``threshold`` and this month's recharge spending plus the pack's price stays within
    ``monthly_limit_eur``, one ``purchase`` of ``credits`` is added to the purchased credits.
    The price is the catalog's price of ``pack`` (the docs sell packs in "tokens" and give no
    token-to-credit conversion, so the credits a recharge adds are configured separately).
    """

    enabled: bool = False
    threshold: int = catalog.DEFAULT_RECHARGE_THRESHOLD
    credits: int = catalog.DEFAULT_RECHARGE_CREDITS
    pack: str = catalog.DEFAULT_RECHARGE_PACK
    monthly_limit_eur: float = catalog.DEFAULT_RECHARGE_MONTHLY_LIMIT_EUR

    @property
    def price_eur(self) -> int:
        return catalog.CREDIT_PACKS[self.pack].price_eur

    def to_dict(self) -> dict[str, object]:
        return {
            "enabled": self.enabled,
            "threshold": self.threshold,
            "credits": self.credits,
            "pack": self.pack,
            "pack_price_eur": self.price_eur,
            "monthly_limit_eur": self.monthly_limit_eur,
        }


@dataclass
class Faults:
    """Misbehaviour to inject. All off by default; every random choice is drawn from the seed.

    Fields are plain attributes, so a running simulator's faults can be switched live
    (``sim.config.faults.drop_rate = 0.1``).

    ``error_5xx_rate``
        Share of admitted requests that fail. Half of them (by a second seeded draw) are an
        immediate ``503`` (``service_unavailable``, nothing charged, no latency); the other
        half are a ``500`` (``internal_error``) *after* the work ran: the charge is deducted
        and then refunded (a ``deduction`` and a ``refund`` transaction), net zero.
    ``drop_rate``
        Share of admitted requests whose connection is dropped without a complete response.
        In-process the app raises :class:`~mavera_tui.sim.app.SimulatedDrop` (an
        ``httpx.RemoteProtocolError``, so the client sees a transport error); under uvicorn
        the status line goes out and the connection is closed mid-body. Half of the drops
        happen before any work (nothing charged), half after the work completed and was
        charged (the client cannot know the charge).
    ``slow_rate`` / ``slow_seconds``
        Share of admitted requests that take ``slow_seconds`` longer (not scaled by
        ``time_scale``: meant to exceed the client's timeout even in instant mode). The
        concurrency slot stays held; if the client gives up, the work still completes and is
        charged.
    ``bad_headers``
        Share of responses whose X-RateLimit-* headers are wrong, one variant per response:
        all missing, one missing, malformed (non-integer text), or negative.
    ``retry_after_mode``
        How 429s carry Retry-After: ``seconds`` (correct integer), ``http-date`` (an
        IMF-fixdate of the same moment), ``negative`` (``-N``), ``huge`` (a billion
        seconds), ``absent`` (no header). The body's message always states the true N.
    ``storm_start`` / ``storm_seconds``
        A 429 storm: for ``storm_seconds`` starting ``storm_start`` seconds after the
        simulator's first request, every authenticated request gets a window 429
        (Remaining 0, Reset and Retry-After at the storm's end). Not counted in the window.
    ``foreign_rpm``
        Someone else's traffic on the same key: phantom arrivals at this steady rate per
        minute are added to every key's window (only when the window has room, as a real
        client would also be refused), so fewer requests are left for us.
    ``balance_runs_out_after``
        The account can pay at most this many credits in total (net of refunds), whatever
        the plan, purchased credits or recharges say: then every paid request gets 402
        ``credits_exhausted``. The billing endpoint's ``balance`` reports the capped figure.
    ``budget_cap``
        Overrides :attr:`SimConfig.budget_cap` (the workspace hard cap) when not None.
    ``hostile_text``
        Error messages (and ``param``) and success texts carry terminal escape sequences
        and Textual/Rich markup (:data:`~mavera_tui.sim.app.HOSTILE_TEXT`); codes and types
        stay intact.
    ``bad_body_rate``
        Share of 200 responses whose body is not JSON or is truncated JSON. The work was
        done and charged: the client must treat it as a failed attempt with unknown charge.
    """

    error_5xx_rate: float = 0.0
    drop_rate: float = 0.0
    slow_rate: float = 0.0
    slow_seconds: float = 120.0
    bad_headers: float = 0.0
    retry_after_mode: str = "seconds"
    storm_start: float = 0.0
    storm_seconds: float = 0.0
    foreign_rpm: float = 0.0
    balance_runs_out_after: int | None = None
    budget_cap: int | None = None
    hostile_text: bool = False
    bad_body_rate: float = 0.0

    def __post_init__(self) -> None:
        if self.retry_after_mode not in RETRY_AFTER_MODES:
            raise ValueError(
                f"retry_after_mode must be one of {', '.join(RETRY_AFTER_MODES)}, "
                f"got {self.retry_after_mode!r}"
            )
        for name in ("error_5xx_rate", "drop_rate", "slow_rate", "bad_headers", "bad_body_rate"):
            value = getattr(self, name)
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
        for name in ("slow_seconds", "storm_start", "storm_seconds", "foreign_rpm"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")


@dataclass(frozen=True)
class Readings:
    """How this server reads the rate-limit docs where they leave room (002: "Requests
    remaining in current window", "Unix timestamp when the window resets", "a sliding
    60-second window"). The defaults are the simulator's original choices; the others are
    servers a client must also cope with. See the numbered list in :mod:`mavera_tui.sim.app`.

    ``remaining_counts``
        ``after``: X-RateLimit-Remaining is what is left once this request is counted (0
        when the last slot was just taken); ``before``: what was left when it arrived, one
        higher for a counted request.
    ``remaining_at``
        ``arrival``: Remaining and Reset are computed when the request is admitted (a
        limiter in front of the handler); ``response``: when the answer leaves, after the
        latency, so they also count requests admitted meanwhile (the same client's later
        ones too) and no longer count those that left the window meanwhile.
    ``reset``
        X-RateLimit-Reset is ``oldest``: the oldest counted arrival + W (when Remaining next
        grows in a sliding window); ``now``: the moment of computing + W; ``minute``: the
        next multiple of W in Unix time (the next minute boundary when W is 60 s).
    ``window_kind``
        ``sliding``: a request is admitted if fewer than the limit arrived in the last W
        seconds; ``fixed``: calendar windows, buckets of W aligned to multiples of W in Unix
        time: the count starts from zero at each boundary, and a window 429's Retry-After is
        the time to the next boundary.
    """

    remaining_counts: str = "after"
    remaining_at: str = "arrival"
    reset: str = "oldest"
    window_kind: str = "sliding"

    def __post_init__(self) -> None:
        for name, choices in (
            ("remaining_counts", REMAINING_COUNTS),
            ("remaining_at", REMAINING_AT),
            ("reset", RESET_MEANINGS),
            ("window_kind", WINDOW_KINDS),
        ):
            value = getattr(self, name)
            if value not in choices:
                raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")

    def describe(self) -> str:
        """The non-default readings as ``name=value`` words ("" for the defaults)."""
        default = Readings()
        return " ".join(
            f"{name}={getattr(self, name)}"
            for name in ("remaining_counts", "remaining_at", "reset", "window_kind")
            if getattr(self, name) != getattr(default, name)
        )


@dataclass
class SimConfig:
    """The simulated account.

    ``limit`` overrides the tier's requests per window. ``allocation`` overrides the plan's
    monthly credits (required for ``enterprise``, whose allocation is custom).
    ``period_used`` is allocation already used this month; ``purchased`` is purchased
    credits at start (no transaction is recorded for them: they predate the history).
    ``time_scale`` multiplies the catalog latencies (0 = instant). ``budget_cap`` is the
    workspace hard cap in credits spent by this simulator (net of refunds); ``budget_alert``
    a spending level (credits) at which an alert is recorded in ``sim.state.alerts``.
    ``rejected_keys`` get 401 (every other non-empty key is valid).
    ``concurrency_retry_seconds`` (× time_scale, rounded up, at least 1) is the Retry-After
    of a concurrency-limit 429. ``readings``: how the rate-limit headers and the window are
    read (:class:`Readings`; the defaults are the simulator's original choices).
    """

    tier: str = catalog.DEFAULT_TIER
    limit: int | None = None
    window_seconds: float = catalog.WINDOW_SECONDS
    plan: str = catalog.DEFAULT_PLAN
    allocation: int | None = None
    period_used: int = 0
    purchased: int = 0
    seed: int = 0
    time_scale: float = 1.0
    auto_recharge: AutoRecharge = field(default_factory=AutoRecharge)
    budget_cap: int | None = None
    budget_alert: int | None = None
    rejected_keys: frozenset[str] = frozenset()
    concurrency_retry_seconds: float = 1.0
    faults: Faults = field(default_factory=Faults)
    readings: Readings = field(default_factory=Readings)

    def __post_init__(self) -> None:
        if self.tier not in catalog.TIERS:
            raise ValueError(f"unknown tier {self.tier!r}; known: {', '.join(catalog.TIERS)}")
        if self.plan not in catalog.PLANS:
            raise ValueError(f"unknown plan {self.plan!r}; known: {', '.join(catalog.PLANS)}")
        if self.allocation is None and catalog.PLANS[self.plan] is None:
            raise ValueError(f"plan {self.plan!r} has a custom allocation: set allocation")
        if self.limit is not None and self.limit < 1:
            raise ValueError("limit must be at least 1")
        if self.window_seconds <= 0:
            raise ValueError("window_seconds must be positive")
        if self.time_scale < 0:
            raise ValueError("time_scale must not be negative")
        if self.auto_recharge.pack not in catalog.CREDIT_PACKS:
            raise ValueError(
                f"unknown credit pack {self.auto_recharge.pack!r}; known: "
                f"{', '.join(catalog.CREDIT_PACKS)}"
            )
        if self.period_used < 0 or self.purchased < 0:
            raise ValueError("period_used and purchased must not be negative")
        self.rejected_keys = frozenset(self.rejected_keys)

    @property
    def effective_limit(self) -> int:
        return self.limit if self.limit is not None else catalog.TIERS[self.tier]

    @property
    def monthly_allocation(self) -> int:
        if self.allocation is not None:
            return self.allocation
        alloc = catalog.PLANS[self.plan]
        assert alloc is not None
        return alloc

    @property
    def effective_budget_cap(self) -> int | None:
        if self.faults.budget_cap is not None:
            return self.faults.budget_cap
        return self.budget_cap
