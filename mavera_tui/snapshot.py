"""The snapshot: one immutable value holding everything a person looks at, and job states.

The engine builds a Snapshot a few times a second; the Textual panes, the recorder, the
replay and the reports read only this. Counters are cumulative (requests_total,
credits_used_total, ...) so that any consumer can turn two snapshots into a rate, and a
recording of snapshots alone is enough to redraw every chart.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .states import JobState

# Job states: the names every module has used, bound to the enum (see states.py for what each
# means). A member equals its string, so comparisons with stored text keep working.
QUEUED = JobState.QUEUED
WAITING_WINDOW = JobState.WAITING_WINDOW
WAITING_SLOT = JobState.WAITING_SLOT
BACKOFF = JobState.BACKOFF
WAITING_CREDITS = JobState.WAITING_CREDITS
PAUSED = JobState.PAUSED
IN_FLIGHT = JobState.IN_FLIGHT
SUCCEEDED = JobState.SUCCEEDED
FAILED = JobState.FAILED
CANCELLED = JobState.CANCELLED
BLOCKED = JobState.BLOCKED
OUTCOME_UNKNOWN = JobState.OUTCOME_UNKNOWN

# Typed as str tuples: a dict built from them is keyed by the text a job's state is read as.
WAITING_STATES: tuple[str, ...] = (
    QUEUED,
    WAITING_WINDOW,
    WAITING_SLOT,
    BACKOFF,
    WAITING_CREDITS,
    PAUSED,
)
ACTIVE_STATES: tuple[str, ...] = WAITING_STATES + (IN_FLIGHT,)
FINAL_STATES: tuple[str, ...] = (SUCCEEDED, FAILED, CANCELLED, BLOCKED, OUTCOME_UNKNOWN)


@dataclass(frozen=True)
class EndpointState:
    """One endpoint as the slots pane shows it."""

    key: str
    path: str
    cap: int | None
    in_flight: int = 0
    waiting: int = 0
    hold_s: float = 0.0  # seconds left of a concurrency-429 hold on this endpoint
    sent_total: int = 0
    credits_used_total: int = 0
    estimated_total: int = 0  # sum of estimates of settled jobs (calibration)
    max_in_flight: int = 0


@dataclass(frozen=True)
class JobView:
    """One job as the jobs pane shows it."""

    id: str
    endpoint: str
    method: str
    path: str
    state: str
    priority: int = 0
    estimate: int = 0
    actual: int | None = None
    attempts: int = 0
    created: float = 0.0  # wall-clock unix time
    updated: float = 0.0
    reason: str = ""  # why it waits or failed; may hold server text: render literally


@dataclass(frozen=True)
class AlertView:
    """One alert or event: budget thresholds, 402s, 429 storms, parked/resumed jobs."""

    t: float  # wall-clock unix time
    level: str  # "info" | "warning" | "error"
    kind: str  # e.g. "budget_50", "credits_exhausted", "429_storm"
    message: str  # may hold server text: render literally


@dataclass(frozen=True)
class FleetProcess:
    """One process on a shared key (``--shared``), as its last heartbeat said. ``host`` is
    another process's word: render literally."""

    proc: str  # "host:pid"
    host: str
    pid: int
    role: str  # run, record, monitor, proxy
    in_flight: int = 0
    queued: int = 0
    last_seen: float = 0.0  # seconds since its last heartbeat (Redis time)
    alive: bool = True  # seen within a lease time
    window_share: int = 0  # its admissions in the shared window now


@dataclass(frozen=True)
class FleetAlert:
    """An alert any process on the key raised; ``proc`` says which ("host:pid")."""

    t: float
    proc: str
    level: str
    kind: str
    message: str  # may hold server text: render literally


@dataclass(frozen=True)
class FleetState:
    """The key's fleet as last read from Redis (``--shared``): every process, the shared
    window with each one's share, the key's hold, credits and capped slots, and the fleet's
    recent alerts. When a read fails, ``error`` says why and the rest is the last good read
    (``at`` 0: none yet)."""

    redis: str = ""  # the Redis URL without its password
    me: str = ""  # this process's "host:pid"
    at: float = 0.0  # wall-clock time of the last good read
    error: str = ""  # why the last read failed ("": it answered)
    processes: tuple[FleetProcess, ...] = ()
    window_used: int = 0  # the fleet's admissions in the shared window
    limit: int | None = None  # the key's limit, once an answer said it
    foreign: int = 0  # what the server counted beyond the fleet
    hold_s: float = 0.0  # seconds the key is still held after a 429
    parked: bool = False  # a 402 parks paid work fleet-wide
    balance: int | None = None
    reserved: int = 0  # credits reserved by live leases
    slots: tuple[tuple[str, int], ...] = ()  # capped endpoint key -> leases held
    alerts: tuple[FleetAlert, ...] = ()  # newest first

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FleetState:
        """Inverse of to_dict; unknown keys are ignored."""
        kw = _known(cls, d)
        kw["processes"] = tuple(
            FleetProcess(**_known(FleetProcess, p)) for p in d.get("processes", ())
        )
        kw["alerts"] = tuple(FleetAlert(**_known(FleetAlert, a)) for a in d.get("alerts", ()))
        kw["slots"] = tuple((str(k), int(n)) for k, n in d.get("slots", ()))
        return cls(**kw)


@dataclass(frozen=True)
class Snapshot:
    """Everything the panes show, at one instant. Build with ``Snapshot(...)``; never mutate."""

    t: float = 0.0  # wall-clock unix time
    elapsed: float = 0.0  # seconds since the engine started
    mode: str = "live"  # live | demo | replay | record
    target: str = ""  # base URL (never the key) or "embedded simulator"
    simulated: bool = False
    paused: bool = False
    # Rate-limit window.
    limit: int = 60
    window_seconds: float = 60.0
    window_used: int = 0  # requests counted in the window (ours + foreign)
    foreign: int = 0  # estimated requests of other clients on the key
    remaining: int | None = None  # last X-RateLimit-Remaining seen
    reset_in: float = 0.0  # seconds until the window next has room
    key_hold_s: float = 0.0  # seconds left of a key-wide 429 hold
    requests_total: int = 0
    responses_429_total: int = 0
    retries_total: int = 0
    status_counts: dict[str, int] = field(default_factory=dict)
    endpoints: tuple[EndpointState, ...] = ()
    # Queue depth by state (WAITING_STATES + IN_FLIGHT), and totals by final state.
    queue: dict[str, int] = field(default_factory=dict)
    jobs_total: int = 0
    finished: dict[str, int] = field(default_factory=dict)
    # Credits.
    balance: int | None = None  # total remaining: plan allocation + purchased
    plan_remaining: int | None = None
    purchased: int | None = None
    allocation: int | None = None  # monthly plan allocation
    month_used: int | None = None  # allocation used this billing month
    credits_used_total: int = 0  # what this engine's requests were charged
    reserved: int = 0  # estimates held by admitted / in-flight jobs
    estimated_total: int = 0  # estimates of settled jobs (calibration)
    burn_1m: float = 0.0  # credits per minute
    burn_5m: float = 0.0
    burn_15m: float = 0.0
    eta_s: float | None = None  # until credits run out at burn_5m (auto-recharge counted)
    month_projection: int | None = None  # credits this month at the current rate
    recharge_spent_eur: float = 0.0
    # The server's last word (filled by the live monitor's engine; None when unknown, e.g.
    # in recordings made before these fields: the monitor then infers it from the counters).
    last_answer_t: float | None = None  # wall-clock time of the last HTTP answer
    last_latency: float | None = None  # seconds that answer took
    jobs: tuple[JobView, ...] = ()  # recent jobs, newest first
    alerts: tuple[AlertView, ...] = ()  # recent alerts, newest first
    # The key's fleet (--shared); None when the key is not shared (or in older recordings).
    fleet: FleetState | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Snapshot:
        """Inverse of to_dict; unknown keys (from a newer version) are ignored."""
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        kw["endpoints"] = tuple(
            EndpointState(**_known(EndpointState, e)) for e in d.get("endpoints", ())
        )
        kw["jobs"] = tuple(JobView(**_known(JobView, j)) for j in d.get("jobs", ()))
        kw["alerts"] = tuple(AlertView(**_known(AlertView, a)) for a in d.get("alerts", ()))
        fleet = d.get("fleet")
        kw["fleet"] = FleetState.from_dict(fleet) if isinstance(fleet, dict) else None
        return cls(**kw)

    @property
    def queue_depth(self) -> int:
        """Jobs not yet finished and not in flight."""
        return sum(v for k, v in self.queue.items() if k != IN_FLIGHT)

    @property
    def in_flight(self) -> int:
        return self.queue.get(IN_FLIGHT, 0)


def _known(cls: type, d: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in d.items() if k in names}
