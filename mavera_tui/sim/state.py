"""The simulated account's money: plan allocation, purchased credits, transactions, budgets.

One account per simulator (every API key bills the same account). Charges consume the plan
allocation first, then purchased credits (packs page); a refund puts credits back where they
came from. All amounts are positive integers; the transaction ``type`` says the direction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .. import catalog
from .config import SimConfig


def iso_utc(wall: float) -> str:
    """ISO-8601 UTC with milliseconds and a ``Z``: ``2024-01-27T08:54:38.000Z``."""
    return datetime.fromtimestamp(wall, tz=UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


@dataclass(slots=True)
class Transaction:
    """One credit movement. ``from_plan``/``from_purchased`` say which pool a deduction used."""

    id: str
    type: str  # "purchase" | "deduction" | "refund"
    amount: int
    wall: float
    resource: str
    from_plan: int = 0
    from_purchased: int = 0

    @property
    def timestamp(self) -> str:
        return iso_utc(self.wall)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "amount": self.amount,
            "timestamp": self.timestamp,
            "resource": self.resource,
        }


class Account:
    """Balance, spending and history. ``check`` before work, ``deduct`` when it completes."""

    def __init__(self, config: SimConfig):
        self.config = config
        self.plan = config.plan
        self.monthly_allocation = config.monthly_allocation
        self.period_used = config.period_used
        self.purchased = config.purchased
        #: Net credits this simulator charged (deductions minus refunds), all time.
        self.net_charged = 0
        #: Net credits charged this billing period (what the workspace budget caps).
        self.period_spent = 0
        #: Euros spent on auto-recharge this month.
        self.recharge_spent_eur = 0.0
        self.transactions: list[Transaction] = []
        #: Budget alerts that fired: {"kind", "threshold", "value", "timestamp"}.
        self.alerts: list[dict[str, Any]] = []
        self._fired: set[tuple[str, float]] = set()
        self._txn_n = 0

    # --- reading --------------------------------------------------------------------------

    @property
    def plan_remaining(self) -> int:
        return max(0, self.monthly_allocation - self.period_used)

    @property
    def raw_balance(self) -> int:
        return self.plan_remaining + self.purchased

    @property
    def balance(self) -> int:
        """What can still be charged: plan remaining + purchased (capped by the runs-out fault)."""
        bal = self.raw_balance
        cap = self.config.faults.balance_runs_out_after
        if cap is not None:
            bal = min(bal, max(0, cap - self.net_charged))
        return bal

    def check(self, charge: int) -> str | None:
        """None if ``charge`` can be taken now, else the 402 code that refuses it.

        Choice: the workspace budget is checked before the balance (a policy block comes
        first); spending counts only this simulator's net charges this period.
        """
        if charge <= 0:
            return None
        cap = self.config.effective_budget_cap
        if cap is not None and self.period_spent + charge > cap:
            return catalog.CODE_BUDGET_EXCEEDED
        if charge > self.balance:
            return catalog.CODE_CREDITS_EXHAUSTED
        return None

    # --- moving money ---------------------------------------------------------------------

    def _next_id(self) -> str:
        self._txn_n += 1
        return f"txn_{self._txn_n}"

    def deduct(self, charge: int, resource: str, wall: float) -> Transaction:
        """Take ``charge`` (allocation first, then purchased); then maybe auto-recharge."""
        from_plan = min(charge, self.plan_remaining)
        from_purchased = charge - from_plan
        assert from_purchased <= self.purchased, "deduct() without check()"
        self.period_used += from_plan
        self.purchased -= from_purchased
        self.net_charged += charge
        self.period_spent += charge
        txn = Transaction(
            self._next_id(), "deduction", charge, wall, resource, from_plan, from_purchased
        )
        self.transactions.append(txn)
        self._alerts(wall)
        self._maybe_recharge(wall)
        return txn

    def refund(self, deduction: Transaction, wall: float) -> Transaction:
        """Give a deduction back to the pools it came from."""
        self.period_used -= deduction.from_plan
        self.purchased += deduction.from_purchased
        self.net_charged -= deduction.amount
        self.period_spent -= deduction.amount
        txn = Transaction(
            self._next_id(),
            "refund",
            deduction.amount,
            wall,
            deduction.resource,
            deduction.from_plan,
            deduction.from_purchased,
        )
        self.transactions.append(txn)
        return txn

    def purchase(self, credits: int, resource: str, wall: float) -> Transaction:
        self.purchased += credits
        txn = Transaction(self._next_id(), "purchase", credits, wall, resource)
        self.transactions.append(txn)
        return txn

    def _maybe_recharge(self, wall: float) -> None:
        ar = self.config.auto_recharge
        if not ar.enabled or self.raw_balance >= ar.threshold:
            return
        if self.recharge_spent_eur + ar.price_eur > ar.monthly_limit_eur:
            return
        self.recharge_spent_eur += ar.price_eur
        self.purchase(ar.credits, f"auto-recharge {catalog.CREDIT_PACKS[ar.pack].name}", wall)

    def _alerts(self, wall: float) -> None:
        checks: list[tuple[str, float, float]] = []
        if self.monthly_allocation:
            share = self.period_used / self.monthly_allocation
            checks += [("allocation", t, share) for t in catalog.ALERT_THRESHOLDS]
        if self.config.budget_alert is not None:
            checks.append(("budget", float(self.config.budget_alert), float(self.period_spent)))
        for kind, threshold, value in checks:
            if value >= threshold and (kind, threshold) not in self._fired:
                self._fired.add((kind, threshold))
                self.alerts.append(
                    {
                        "kind": kind,
                        "threshold": threshold,
                        "value": value,
                        "timestamp": iso_utc(wall),
                    }
                )

    # --- the billing endpoint -------------------------------------------------------------

    def to_dict(self, limit: int = 100) -> dict[str, Any]:
        """The body of ``GET /billing/credits`` (without ``usage``); newest transaction first."""
        auto = self.config.auto_recharge.to_dict()
        auto["spent_this_month_eur"] = self.recharge_spent_eur
        return {
            "object": "credit_balance",
            "balance": self.balance,
            "plan_credits_remaining": self.plan_remaining,
            "purchased_credits": self.purchased,
            "plan": self.plan,
            "monthly_allocation": self.monthly_allocation,
            "period_used": self.period_used,
            "auto_recharge": auto,
            "transactions": [t.to_dict() for t in reversed(self.transactions[-limit:])],
        }
