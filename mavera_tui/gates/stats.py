"""Run statistics: the counters a run keeps (each counted once) and its typed summary.

Credits per endpoint live in the scheduler's :class:`~mavera_tui.estimate.Calibration`
(estimated and actual per endpoint), credits spent in the budget (``Budget.spent``);
``RunStats`` adds only what neither holds.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .. import catalog
from .. import snapshot as S
from ..budget import Budget
from ..client import Outcome
from ..estimate import Calibration
from ..limiter import SlidingWindow
from .model import Job


@dataclass
class RunStats:
    """Cumulative counters of one scheduler, for snapshots and the summary."""

    requests_total: int = 0
    responses_429: int = 0
    retries: int = 0
    count_402: int = 0
    status_counts: dict[str, int] = field(default_factory=dict)
    sent_by_ep: dict[str, int] = field(default_factory=lambda: dict.fromkeys(catalog.ENDPOINTS, 0))
    finished: dict[str, int] = field(default_factory=dict)  # final state -> jobs
    jobs_seen: int = 0  # every job this engine took on
    started_at: float | None = None
    first_send: float | None = None
    last_done: float | None = None
    # Attempts whose charge we cannot know (timeouts, dropped connections, unreadable
    # 2xx bodies: the server may have done and billed the work) and the most they can have
    # cost (their estimates): GET /billing/credits tells the truth (reconciliation).
    credits_unknown_attempts: int = 0
    credits_unknown_max: int = 0
    credits_reconciled: int | None = None
    credits_extra: int = 0  # charges found only by reconciling the balance
    reconcile_note: str = ""
    balance_start: int | None = None  # the first balance read, before any job
    balance_start_wall: float = 0.0

    def sent(self, key: str) -> None:
        """A request went out on endpoint ``key``."""
        self.requests_total += 1
        self.sent_by_ep[key] += 1

    def answered(self, out: Outcome) -> None:
        """Count an answer by status (or error kind when there was no status)."""
        key = (
            str(out.status) if out.status is not None else (out.error.kind if out.error else "none")
        )
        self.status_counts[key] = self.status_counts.get(key, 0) + 1

    def final(self, state: str) -> None:
        """A job reached a final state."""
        self.finished[state] = self.finished.get(state, 0) + 1

    def makespan(self) -> float:
        """From the first send to the last answer."""
        if self.first_send is None or self.last_done is None:
            return 0.0
        return max(0.0, self.last_done - self.first_send)


@dataclass(frozen=True)
class RunSummary:
    """The run summary (``--summary``); ``to_dict`` gives the keys cli.py prints."""

    jobs: int
    succeeded: int
    failed: int
    blocked_preflight: int
    waiting_for_credits: int
    outcome_unknown: int
    cancelled: int
    not_finished: int
    credits_used: int
    credits_reconciled: int | None
    credits_reconcile_note: str
    credits_unknown_attempts: int
    credits_unknown_max: int
    credits_estimated: int
    credits_estimated_all: int
    status_counts: dict[str, int]
    requests: int
    responses_429: int
    count_402: int
    retries: int
    makespan_s: float
    max_in_flight: dict[str, int]
    estimated_vs_actual: dict[str, dict[str, int]]
    balance_end: int | None
    limit: int
    # How late the server counts our sends, as measured, and what the window held.
    window_margin_s: float
    server_count_delay_s: float
    foreign_max_seen: int
    server_counts_at_answer: Any
    # "sliding", or "calendar" once one probe showed the server counts fixed windows.
    window_kind: str
    # When the balance was first read: "start" (before the first job), "during" or "end"
    # (balance_read: auto put it where it cost the batch no window), "none" (never), or
    # "shared" (adopted: another process of the key's fleet had read it, --shared).
    balance_read: str

    def to_dict(self) -> dict[str, Any]:
        """The summary as the JSON object ``--summary`` prints (same keys, same order)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def of(
        cls,
        sel: list[Job],
        stats: RunStats,
        *,
        credits_used: int,
        calibration: Calibration,
        budget: Budget,
        window: SlidingWindow,
        max_seen: dict[str, int],
        balance_read: str = "start",
    ) -> RunSummary:
        """The summary of the jobs ``sel``, with the run's counters."""
        by_state: dict[str, int] = {}
        for j in sel:
            by_state[j.state] = by_state.get(j.state, 0) + 1
        return cls(
            jobs=len(sel),
            succeeded=by_state.get(S.SUCCEEDED, 0),
            failed=by_state.get(S.FAILED, 0),
            blocked_preflight=by_state.get(S.BLOCKED, 0),
            waiting_for_credits=by_state.get(S.WAITING_CREDITS, 0),
            outcome_unknown=by_state.get(S.OUTCOME_UNKNOWN, 0),
            cancelled=by_state.get(S.CANCELLED, 0),
            not_finished=sum(
                v for k, v in by_state.items() if k not in S.FINAL_STATES and k != S.WAITING_CREDITS
            ),
            credits_used=credits_used,
            credits_reconciled=stats.credits_reconciled,
            credits_reconcile_note=stats.reconcile_note,
            credits_unknown_attempts=stats.credits_unknown_attempts,
            credits_unknown_max=stats.credits_unknown_max,
            credits_estimated=sum(j.est.high for j in sel if j.state == S.SUCCEEDED),
            credits_estimated_all=sum(j.est.high for j in sel),
            status_counts=dict(sorted(stats.status_counts.items())),
            requests=stats.requests_total,
            responses_429=stats.responses_429,
            count_402=stats.count_402,
            retries=stats.retries,
            makespan_s=round(stats.makespan(), 3),
            max_in_flight={k: v for k, v in max_seen.items() if v},
            estimated_vs_actual={
                k: {"jobs": n, "estimated": e, "actual": a} for k, n, e, a in calibration.rows()
            },
            balance_end=budget.total,
            limit=window.limit,
            window_margin_s=round(window.margin, 4),
            server_count_delay_s=round(window.delay_seen, 4),
            foreign_max_seen=window.foreign_max_seen,
            server_counts_at_answer=window.reads_at_answer,
            window_kind="calendar" if window.calendar.active else "sliding",
            balance_read=balance_read,
        )
