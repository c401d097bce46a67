"""The credit gate: reservations, the pre-flight verdict, and jobs waiting for credits.

Admission reserves a job's estimate; its answer settles it. A job goes when the balance
minus what admitted jobs reserve covers its estimate plus 20% (pre-flight) and no budget
cap refuses it. Otherwise it waits for running jobs to settle (if it would fit without
them), waits for a fresh balance read (ours is tracked from answers and may be stale), or
is blocked. After a 402 every job that costs credits is parked until a balance poll says
they can go. The gate decides; the dispatcher changes the job's state and persists it.
"""

from __future__ import annotations

from .. import catalog
from .. import snapshot as S
from ..budget import Budget
from ..estimate import Estimate, Verdict, preflight
from .model import Job

GO = "go"
PARK = "park"  # a 402 holds every job that costs credits
SETTLE = "settle"  # fits once running jobs settle
VERIFY = "verify"  # refused on a balance older than balance_max_age: re-read it first
BLOCK = "block"  # refused (final)

# What the credit poll does next.
POLL_STOP = "stop"  # nothing is parked any more
POLL_PROBE = "probe"  # a workspace budget 402: send the cheapest parked job alone
POLL_RESUME = "resume"  # the balance covers the cheapest parked job: release them all
POLL_WAIT = "wait"  # poll again later


class CreditGate:
    """May a job go now on credits? (There is no time at which it opens by itself: a
    settlement, a balance read or a poll re-opens it.)"""

    def __init__(self, budget: Budget, balance_max_age: float) -> None:
        self.budget = budget
        self.balance_max_age = balance_max_age
        self.reserved = 0
        self.parked: list[Job] = []  # waiting for credits after a 402
        self.settle_wait: list[Job] = []  # affordable once reservations settle
        self.hold: str | None = None  # None, or the 402 code that parked jobs
        self.balance_at = -1e18  # loop time of the last balance we read
        # Charges of jobs already sent when the balance was last read. The docs do not say
        # whether the API takes credits when a request arrives or when it is done: if at
        # arrival, that read already excluded them and we subtracted them again.
        self.ambiguous = 0

    def decide(self, job: Job, now: float) -> tuple[str, str]:
        """The gate's answer for ``job`` now: (GO | PARK | SETTLE | VERIFY | BLOCK, reason)."""
        high = job.est.high
        if high <= 0:
            return GO, ""
        if self.hold is not None:
            return PARK, f"waiting for credits ({self.hold}); polling the balance"
        cap = self.budget.cap_refusal(self.reserved, high)
        if cap is not None:
            if self.reserved > 0 and self.budget.cap_refusal(0, high) is None:
                return SETTLE, "waiting for running jobs to settle: " + cap
            return BLOCK, cap
        if self.budget.total is None:
            return GO, ""
        v = preflight(job.est, self.budget.total, self.reserved)
        if v.ok:
            return GO, ""
        if self.reserved > 0 and preflight(job.est, self.budget.total, 0).ok:
            return SETTLE, "waiting for running jobs to settle: " + v.message
        if self.ambiguous and preflight(job.est, self.budget.total + self.ambiguous, 0).ok:
            return VERIFY, (
                "checking the balance before refusing (charges of jobs running at the last "
                "read may be in it already): " + v.message
            )
        if now - self.balance_at > self.balance_max_age:
            # Our balance is tracked from responses; purchases (auto-recharge, the
            # dashboard) only show in GET /billing/credits. Never refuse on a stale number.
            return VERIFY, "checking the balance before refusing: " + v.message
        return BLOCK, "pre-flight refused: " + v.message

    def next_open(self, now: float) -> list[float]:
        """No time opens this gate by itself: a settlement, a balance read or the credit
        poll does (and wakes the loop)."""
        return []

    def verdict(self, est: Estimate) -> Verdict:
        """The pre-flight verdict for a new job now (the form asks this as the user types)."""
        remaining = self.budget.total
        if remaining is None:
            return Verdict(
                True,
                est.high,
                est.high,
                0,
                0,
                self.reserved,
                "balance unknown: not checked (the API's 402 still protects you)",
            )
        cap = self.budget.cap_refusal(self.reserved, est.high)
        if cap:
            return Verdict(
                False, est.high, est.high, remaining - self.reserved, remaining, self.reserved, cap
            )
        return preflight(est, remaining, self.reserved)

    def read_balance(self, now: float) -> None:
        """A balance was read (or found unreadable) at ``now``: decide on it."""
        self.balance_at = now
        self.ambiguous = 0

    def charged(self, job: Job, credits: int) -> None:
        """A job's answer said what it cost (see ``ambiguous``)."""
        if credits > 0 and job.sent_at < self.balance_at:
            self.ambiguous += credits

    def reserve(self, job: Job) -> None:
        """Admission: the job's estimate is reserved until its answer."""
        job.reserved = job.est.high
        self.reserved += job.reserved

    def settle(self, job: Job) -> None:
        """The job's answer came (or it was not sent): its reservation ends."""
        if job.reserved:
            self.reserved -= job.reserved
            job.reserved = 0

    def wait(self, job: Job, action: str, reason: str) -> None:
        """Put a job among the parked (PARK) or those waiting for settlement."""
        job.state, job.reason = S.WAITING_CREDITS, reason
        (self.parked if action == PARK else self.settle_wait).append(job)

    def remove(self, job: Job) -> None:
        """Forget a waiting job (cancelled)."""
        if job in self.parked:
            self.parked.remove(job)
        if job in self.settle_wait:
            self.settle_wait.remove(job)

    def take_all(self, jobs: list[Job]) -> list[Job]:
        """Empty one of the waiting lists; returns the jobs still waiting for credits."""
        items = [j for j in jobs if j.state == S.WAITING_CREDITS]
        jobs.clear()
        return items

    def refused(self, kind: str, code: str | None, exhausted: bool) -> bool:
        """A 402: hold every job that costs credits. True if this 402 started the hold."""
        first = self.hold is None
        self.hold = code or kind
        if exhausted:
            self.budget.exhausted()
        return first

    def poll(self, balance_read: bool) -> tuple[str, Job | None]:
        """After a balance poll while jobs are parked: what next. PROBE returns the job to
        send alone (already out of the parked list)."""
        parked = [j for j in self.parked if j.state == S.WAITING_CREDITS]
        if not parked:
            self.hold = None
            return POLL_STOP, None
        cheapest = min(parked, key=lambda j: j.est.high)
        if self.hold == catalog.CODE_BUDGET_EXCEEDED:
            # The balance does not show a workspace budget: probe with one job.
            self.hold = None
            self.parked.remove(cheapest)
            return POLL_PROBE, cheapest
        if (
            balance_read
            and self.budget.total is not None
            and preflight(cheapest.est, self.budget.total, self.reserved).ok
        ):
            self.hold = None
            return POLL_RESUME, None
        return POLL_WAIT, None
