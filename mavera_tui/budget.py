"""The money: balance (plan allocation first, then purchased credits), burn rate, alerts, ETA.

Pure bookkeeping over a clock's numbers: the scheduler feeds it the balance from
``GET /billing/credits`` and every response's ``usage.credits_used``; it answers what
remains, how fast it goes, when it runs out (auto-recharge counted) and which alerts fire.
"""

from __future__ import annotations

import bisect
import calendar
import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import catalog
from .config import BudgetSettings

if TYPE_CHECKING:  # budget stays light: the CLI imports it before anything heavy
    from .client import Balance


@dataclass(frozen=True)
class RechargeConfig:
    """Auto-recharge as set in the dashboard (the API does not expose it)."""

    enabled: bool = False
    threshold: int = catalog.DEFAULT_RECHARGE_THRESHOLD
    credits: int = catalog.DEFAULT_RECHARGE_CREDITS
    pack: str = catalog.DEFAULT_RECHARGE_PACK
    monthly_limit_eur: float = catalog.DEFAULT_RECHARGE_MONTHLY_LIMIT_EUR

    @property
    def price_eur(self) -> float:
        return float(catalog.CREDIT_PACKS[self.pack].price_eur)


@dataclass(frozen=True)
class BudgetConfig:
    """Client-side budgets and alert settings."""

    allocation: int | None = None  # monthly allocation; None: from the plan / API
    thresholds: tuple[float, ...] = catalog.ALERT_THRESHOLDS
    # The default is the settings model's (config.BudgetSettings.alert_single).
    single_request: int = BudgetSettings.alert_single
    workspace_alert: int | None = None  # credits spent by this workspace: warn
    workspace_cap: int | None = None  # credits spent by this workspace: hard cap
    spike_factor: float = 3.0  # burn over the recent pattern that raises an alert
    recharge: RechargeConfig = RechargeConfig()


@dataclass(frozen=True)
class Alert:
    level: str
    kind: str
    message: str


class Budget:
    """Balance, spending and alerts. Times are loop seconds."""

    def __init__(self, config: BudgetConfig | None = None):
        self.config = config or BudgetConfig()
        self.total: int | None = None
        self.plan_remaining: int | None = None
        self.purchased: int | None = None
        self.allocation: int | None = self.config.allocation
        self.period_used: int | None = None
        self.spent = 0  # credits charged to this engine's requests
        self.recharge_spent_eur = 0.0
        self._usage = _Usage()  # (time, credits) of every charge, last 24 h
        self._fired: set[str] = set()
        self._start: float | None = None

    # --- inputs ----------------------------------------------------------------------------

    def set_balance(self, b: Balance) -> list[Alert]:
        """Adopt the server's numbers (GET /billing/credits)."""
        self.total = b.total
        self.plan_remaining = b.plan_remaining
        self.purchased = b.purchased
        if b.allocation is not None and self.config.allocation is None:
            self.allocation = b.allocation
        if b.period_used is not None:
            self.period_used = b.period_used
        elif self.allocation is not None and b.plan_remaining is not None:
            self.period_used = max(0, self.allocation - b.plan_remaining)
        return self._threshold_alerts()

    def charge(self, credits: int, now: float) -> list[Alert]:
        """One response's usage.credits_used: plan allocation first, then purchased."""
        if self._start is None:
            self._start = now
        if credits <= 0:
            return []
        self.spent += credits
        self._usage.add(now, credits)
        self._usage.drop_before(now - 86400)
        if self.total is not None:
            from_plan = credits
            if self.plan_remaining is not None:
                from_plan = min(credits, self.plan_remaining)
                self.plan_remaining -= from_plan
                if self.purchased is not None:
                    self.purchased = max(0, self.purchased - (credits - from_plan))
            self.total = max(0, self.total - credits)
            if self.period_used is not None:
                self.period_used += from_plan
        alerts = self._threshold_alerts()
        if credits > self.config.single_request:
            alerts.append(
                Alert(
                    "warning",
                    "single_request",
                    f"one request used {credits} credits "
                    f"(alert above {self.config.single_request})",
                )
            )
        cfg = self.config
        if (
            cfg.workspace_alert is not None
            and self.spent >= cfg.workspace_alert
            and "workspace_alert" not in self._fired
        ):
            self._fired.add("workspace_alert")
            alerts.append(
                Alert(
                    "warning",
                    "workspace_alert",
                    f"workspace spending reached {self.spent} credits "
                    f"(alert at {cfg.workspace_alert})",
                )
            )
        spike = self._spike(now)
        if spike:
            alerts.append(spike)
        return alerts

    def note_started(self, now: float) -> None:
        if self._start is None:
            self._start = now

    def exhausted(self) -> None:
        """A 402 said there is not enough: the balance is (effectively) zero."""
        self.total = 0 if self.total is None else min(self.total, 0)

    # --- answers ---------------------------------------------------------------------------

    def burn(self, now: float, minutes: float) -> float:
        """Credits per minute over the last ``minutes`` (over the elapsed time if shorter)."""
        span = minutes * 60.0
        total = self._usage.since(now - span)
        elapsed = now - (self._start if self._start is not None else now)
        denom = max(min(span, elapsed), 60.0)
        return total * 60.0 / denom

    def recharges_left(self) -> int:
        r = self.config.recharge
        if not r.enabled or r.price_eur <= 0:
            return 0
        return max(0, int((r.monthly_limit_eur - self.recharge_spent_eur) // r.price_eur))

    def eta_seconds(self, now: float) -> float | None:
        """Seconds until credits run out at the 5-minute burn rate, counting auto-recharge."""
        rate = self.burn(now, 5)
        if self.total is None or rate <= 0:
            return None
        effective = self.total + self.recharges_left() * self.config.recharge.credits
        return effective / rate * 60.0

    def month_projection(self, now: float, wall: float) -> int | None:
        """Allocation used by the end of the calendar month at the current rate."""
        if self.period_used is None:
            return None
        d = dt.datetime.fromtimestamp(wall, dt.UTC)
        last = calendar.monthrange(d.year, d.month)[1]
        end = dt.datetime(d.year, d.month, last, 23, 59, 59, tzinfo=dt.UTC).timestamp()
        return int(self.period_used + self.burn(now, 15) * max(0.0, end - wall) / 60.0)

    def cap_refusal(self, reserved: int, estimate: int) -> str | None:
        """The workspace hard cap's refusal message, or None if within the cap."""
        cap = self.config.workspace_cap
        if cap is None or estimate <= 0:
            return None
        if self.spent + reserved + estimate > cap:
            return (
                f"workspace budget cap {cap} credits: {self.spent} spent, {reserved} "
                f"reserved, this job may use {estimate}; raise --budget-cap or wait"
            )
        return None

    def _threshold_alerts(self) -> list[Alert]:
        out: list[Alert] = []
        if self.allocation is None or self.period_used is None or self.allocation <= 0:
            return out
        share = self.period_used / self.allocation
        for t in self.config.thresholds:
            key = f"budget_{int(t * 100)}"
            if share >= t and key not in self._fired:
                self._fired.add(key)
                out.append(
                    Alert(
                        "warning" if t < 0.9 else "error",
                        key,
                        f"{int(t * 100)}% of the monthly allocation used "
                        f"({self.period_used} of {self.allocation} credits)",
                    )
                )
        return out

    def _spike(self, now: float) -> Alert | None:
        """Usage far above the normal pattern: last 15 min vs the average before it (>= 1 h)."""
        if self._start is None or now - self._start < 3600 or "spike" in self._fired:
            return None
        recent = self.burn(now, 15)
        before = self._usage.before(now - 900)
        hist_span = (now - 900) - max(self._start, now - 86400)
        if hist_span <= 0:
            return None
        normal = before * 60.0 / hist_span
        if normal > 0 and recent > self.config.spike_factor * normal:
            self._fired.add("spike")
            return Alert(
                "warning",
                "usage_spike",
                f"burning {recent:.1f} credits/min, over {self.config.spike_factor:g}x "
                f"the usual {normal:.1f}/min",
            )
        return None


class _Usage:
    """Charges in time order with their running total, so that the credits since (or
    before) a time are one bisect and a subtraction. The burn rates summed every charge of
    the last minutes on each snapshot: at thousands of requests a minute that was 1-2% of
    a flood's client CPU, and the spike check summed a day's on every charge after an hour.
    """

    __slots__ = ("_t", "_cum", "_lo", "_dropped", "total")

    def __init__(self) -> None:
        self._t: list[float] = []
        self._cum: list[int] = []  # the running total through each charge
        self._lo = 0  # the oldest kept charge
        self._dropped = 0  # the running total before self._t[0]
        self.total = 0

    def add(self, t: float, credits: int) -> None:
        self.total += credits
        self._t.append(t)
        self._cum.append(self.total)

    def _before_index(self, i: int) -> int:
        """The running total before the ``i``-th charge of the lists."""
        return self._cum[i - 1] if i > 0 else self._dropped

    def drop_before(self, t: float) -> None:
        """Forget the charges made before ``t``."""
        lo = bisect.bisect_left(self._t, t, self._lo)
        if lo > 1024 and 2 * lo > len(self._t):
            self._dropped = self._cum[lo - 1]
            del self._t[:lo], self._cum[:lo]
            lo = 0
        self._lo = lo

    def since(self, t: float) -> int:
        """Credits charged at ``t`` or later (among those kept)."""
        i = bisect.bisect_left(self._t, t, self._lo)
        return self.total - self._before_index(i)

    def before(self, t: float) -> int:
        """Credits charged before ``t`` (among those kept)."""
        i = bisect.bisect_left(self._t, t, self._lo)
        return self._before_index(i) - self._before_index(self._lo)
