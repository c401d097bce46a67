"""The fleet hook's balance (a mixin of :class:`.fleet.Fleet`): one balance read per fleet,
not one per process.

Every read a process makes is published to the fleet (``scripts.BALANCE``), and from then
on the fleet keeps it current: each settlement takes what was charged off it. A process
that needs a balance first asks the fleet (``scripts.BALANCE_TAKE``):

* a **fresh** one is adopted instead of read. Fresh means: read by a process of this key's
  fleet within ``shared.balance_fresh`` seconds (the time of its admission, Redis's clock),
  no 402 reached the fleet since (a 402 drops it: the API said the balance is less than it
  thought), and the fleet was never idle for a lease time since (no call at all: nobody
  kept it current, so it expired). Purchases (auto-recharge, the dashboard) and other
  keys' spending on the account show only in a read: the age limit bounds that;
* else exactly one process **claims** the read (``SET NX``, a short expiry renewed while
  it reads) and the others **wait** for its result, reading themselves if the claimer
  dies (its claim expires), gives up (the read failed: the claim is dropped at once) or
  takes longer than a window and a request timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from ..client import Balance
from ..config import SharedSettings
from .state import SharedBalance, SharedState, SharedUnavailable

if TYPE_CHECKING:
    from ..gates.loop import Scheduler

#: Seconds a claim to read the balance lives unless its holder renews it (every third): how
#: long the others wait for a reader that died.
CLAIM_TTL = 3.0


class FleetBalance:
    """The fleet's balance: adopt, claim, publish."""

    state: SharedState
    settings: SharedSettings
    sched: Scheduler | None
    proc: str
    down: str | None
    own_at: dict[str, float]
    _publishing: asyncio.Task[None] | None = None

    if TYPE_CHECKING:  # the Fleet's, used here

        def _went_down(self, why: str) -> None: ...

        def _spawn(self, coro: Any) -> asyncio.Task[None]: ...

    @property
    def shares_balance(self) -> bool:
        """Whether this process adopts the fleet's balance (``shared.balance_fresh`` > 0)."""
        return self.settings.balance_fresh > 0

    async def take_balance(self, *, claim: bool = True) -> SharedBalance | str:
        """The fleet's fresh balance, or "claimed" (read it for the fleet), "wait" (another
        process is reading it), "none" (no claim asked) or "down" (Redis away)."""
        if self.down is not None:
            return "down"
        try:
            return await self.state.take_balance(self.proc, claim_ttl=CLAIM_TTL, claim=claim)
        except SharedUnavailable as e:
            self._went_down(str(e))
            return "down"

    async def drop_claim(self) -> None:
        """Give up the claim to read the balance (the read failed, or the process stops):
        a waiting process claims it next."""
        if self.down is not None:
            return
        try:
            await self.state.drop_claim(self.proc)
        except SharedUnavailable as e:
            self._went_down(str(e))

    async def hold_claim(self, every: float = CLAIM_TTL / 3) -> None:
        """Renew the claim until cancelled (while this process reads for the fleet)."""
        while True:
            await asyncio.sleep(every)
            await self.take_balance(claim=False)

    async def published(self, timeout: float = 1.0) -> None:
        """Until the last balance read is in Redis (a reader for the fleet starts its jobs
        only then: the processes waiting for its read start theirs at the same time)."""
        task = self._publishing
        if task is not None and not task.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(task), timeout)

    def balance(self, bal: Balance, read_at_ms: float | None = None) -> None:
        """A balance read (admitted at Redis time ``read_at_ms``): the fleet's balance
        becomes it, for every process to adopt (sent in the background)."""
        if self.down is not None or bal.total is None:
            return
        fields = {
            "plan_remaining": bal.plan_remaining,
            "purchased": bal.purchased,
            "allocation": bal.allocation,
            "period_used": bal.period_used,
        }
        self._publishing = self._spawn(
            self.state.set_balance(
                bal.total,
                proc=self.proc,
                read_at_ms=read_at_ms,
                fields={k: v for k, v in fields.items() if v is not None},
                fresh=self.settings.balance_fresh,
                idle=self.settings.lease_ttl,
            )
        )


def adopted(sb: SharedBalance) -> Balance:
    """The fleet's balance as a read: the fields as read, less what the fleet was charged
    since (from the plan's allocation first, then purchased credits, as the API takes it)."""

    def num(name: str) -> int | None:
        v = sb.fields.get(name)
        return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    spent = max(0, sb.read - sb.credits)
    plan, purchased, used = num("plan_remaining"), num("purchased"), num("period_used")
    from_plan = spent
    if plan is not None:
        from_plan = min(spent, plan)
        plan -= from_plan
        if purchased is not None:
            purchased = max(0, purchased - (spent - from_plan))
    return Balance(
        sb.credits,
        plan,
        purchased,
        num("allocation"),
        used + from_plan if used is not None else None,
    )
