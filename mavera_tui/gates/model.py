"""The scheduler's data: its settings, a job's live state, and what it sends through."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from .. import snapshot as S
from ..budget import BudgetConfig
from ..catalog import Endpoint
from ..client import Outcome
from ..config import EngineSettings
from ..estimate import Estimate
from ..jobs import JobSpec

#: The settings model's defaults are the scheduler's: one source (mavera_tui.config).
_ENGINE = EngineSettings()


class Transport(Protocol):
    """What the scheduler sends requests through (ApiClient, or an instant fake in benches)."""

    async def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        timeout: float | None = None,
        on_written: Any = None,
    ) -> Outcome:
        """Send one request; never raises for HTTP or network failures (see Outcome). A job
        that wants its raw answer or streams also passes ``raw=True`` / ``sink=...``
        (:meth:`mavera_tui.client.ApiClient.request`); other jobs never do."""
        ...


@dataclass
class SchedulerConfig:
    """Scheduler settings. Times are seconds."""

    window_seconds: float = _ENGINE.window_seconds
    limit: int | None = None  # None: the default tier's, until headers say
    max_attempts: int = 5  # for 5xx / timeouts / dropped connections
    backoff_base: float = 1.0
    backoff_cap: float = 60.0  # the longest any back-off (retry, 429 hold) grows
    max_retry_after: float = _ENGINE.max_retry_after
    request_timeout: float = _ENGINE.request_timeout
    # Requests in flight at once on endpoints without a documented cap (responses, ...).
    # Thousands handed to the HTTP client at once starve the loop and make every stamp
    # late; 256 keeps >1,000 requests/s possible over loopback at a 0.2 s latency.
    max_in_flight: int = _ENGINE.max_in_flight
    credit_poll: float = _ENGINE.credit_poll  # balance poll while jobs wait for credits
    balance_refresh: float = 0.0  # periodic balance re-sync (0: off)
    # When a batch's first balance read goes: "start" (before the first job), "end" (once
    # all are sent: pre-flight blind until then), "auto" (start, unless the batch fills
    # its windows exactly and the read would cost it a whole window more: 1.25 of the
    # bound on a 5-window batch). Blind, a batch short of credits met 17-26 402s in the
    # independent server's low-credit case at 240 jobs (bench/indie_check.py).
    balance_read: str = "auto"
    cache_ttl: float = 30.0  # identical GETs inside this are served from cache
    # Re-read the balance before refusing on an older one: a purchase (the dashboard,
    # auto-recharge) shows only there, and a server that charges at arrival makes our
    # tracked balance fall short while jobs run. Short, but a refusal storm still reads
    # at most once per this many seconds (reads count in the window).
    balance_max_age: float = 2.0
    # After a crash, re-send in-flight jobs costing at most this.
    resend_unknown_up_to: int = _ENGINE.resend_unknown_up_to
    storm_threshold: int = 5  # 429s within a minute that make a "429 storm"
    recent_jobs: int = 200
    keep_finished: bool = True  # False for long runs (monitor, record): finished
    # jobs then live only in the store and recent list
    seed: int | None = None
    budget: BudgetConfig = field(default_factory=BudgetConfig)


@dataclass
class SubmitResult:
    """What ``submit_many`` did with each job: accepted (ids), duplicates (ids already known
    in this run or in the database: a rerun's resumed or finished jobs) and invalid ((id,
    why): a body that cannot be priced)."""

    accepted: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    invalid: list[tuple[str, str]] = field(default_factory=list)

    def messages(self, *, duplicates: bool = True) -> list[str]:
        """One line per refused job, for a person."""
        out = [f"job id {i!r} already exists" for i in self.duplicates] if duplicates else []
        return out + [f"job {i!r}: {why}" for i, why in self.invalid]


@dataclass(eq=False)
class Job:
    """A job's live state inside the scheduler."""

    spec: JobSpec
    ep: Endpoint
    est: Estimate
    seq: int
    state: str = S.QUEUED
    attempts: int = 0
    failures: int = 0  # 5xx / timeouts / drops so far (for the backoff)
    not_before: float = 0.0
    reason: str = ""
    actual: int | None = None
    reserved: int = 0
    created: float = 0.0
    updated: float = 0.0
    sent_at: float = 0.0
    in_heap: bool = False
    # --- a caller waits for this job's answer (the proxy, the Governor) ---------------
    # ``passthrough``: the caller gets the real answer, so nothing is repeated that the
    # server may have processed (a 5xx, timeout or drop after the request was written, on
    # anything but a GET), a 401 fails this job only, and a 402 parks it only if
    # ``park_402``. ``keep_raw``: keep the last answer as it came (``last.raw``).
    passthrough: bool = False
    park_402: bool = True
    keep_raw: bool = False
    sink: Any = None  # a StreamSink: a 2xx event stream goes there as it arrives
    last: Outcome | None = None  # the last answer (kept when keep_raw)
    abandoned: bool = False  # the caller went away: finish at the answer, never repeat
    task: Any = None  # the attempt's task while in flight

    @property
    def id(self) -> str:
        """The job's id (its spec's)."""
        return self.spec.id
