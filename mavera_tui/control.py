"""The commands a front end may send to the engine, and how it reads the engine's state.

The Textual app, the CLI and the replay speak to the engine only through these protocols:
``snapshot()`` to read, the rest to command. Nothing reaches into the scheduler's internals:
the monitor, the CLI's ``run``, the recorder and the demo hold a started scheduler as a
:class:`RunControl`, and ``tests/test_interfaces.py`` fails when one of them reads past it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .estimate import Estimate, Verdict
from .jobs import JobSpec
from .snapshot import JobView, Snapshot

if TYPE_CHECKING:
    from .clock import Clock
    from .gates import RunSummary, SubmitResult


@runtime_checkable
class EngineControl(Protocol):
    """What the monitor needs from an engine (live scheduler, frozen test state, replay)."""

    def snapshot(self) -> Snapshot:
        """The current state; cheap enough to call several times a second."""
        ...

    async def submit(self, spec: JobSpec) -> str:
        """Persist and enqueue a job; returns its id. Raises ValueError on a duplicate id."""
        ...

    def pause(self) -> None:
        """Stop dispatching new requests (in-flight ones finish)."""
        ...

    def resume(self) -> None:
        """Resume dispatch."""
        ...

    def cancel(self, job_id: str) -> bool:
        """Cancel a job that has not been sent yet; False if it is unknown or already final."""
        ...

    def preflight(self, est: Estimate) -> Verdict:
        """The pre-flight verdict for ``est`` against the balance and current reservations."""
        ...


@runtime_checkable
class OperatorControl(Protocol):
    """Optional extras the monitor uses when an engine offers them (the live engine does).

    Separate from EngineControl so the scheduler, a replay and a test double each keep
    working without them: the monitor checks with ``isinstance`` and says what is missing.
    """

    durable: bool
    """True when jobs are persisted (a --db): queued jobs survive a quit."""

    async def job_attempts(self, job_id: str) -> list[dict[str, Any]] | None:
        """The job's ledger rows, oldest first; None when no ledger is kept (no --db)."""
        ...

    async def jobs_page(
        self,
        offset: int,
        limit: int,
        text: str = "",
        order: str = "created",
        descending: bool = True,
    ) -> tuple[list[JobView], int]:
        """Jobs from the store matching ``text`` (id, state, endpoint, reason), sorted by
        ``order``; returns the page and how many match in all."""
        ...

    async def retry(self, job_id: str) -> str:
        """Submit a failed, blocked or unknown-outcome job's request again under a new id
        (the old job stays as it was, for the record); returns the new id. Raises
        ValueError, with what was wrong, for a job that is unknown or not retryable."""
        ...

    def set_priority(self, job_id: str, priority: int) -> bool:
        """Give a job that has not been sent a new priority (higher goes first); False when
        it is unknown, in flight or final."""
        ...


@runtime_checkable
class RunControl(EngineControl, Protocol):
    """A started live scheduler, as the monitor, ``run``, the recorder and the demo use it.

    Everything else on the scheduler (its gates, queue, statistics) is its own business.
    """

    clock: Clock
    """The clock it runs on (the demo paces its workload by it)."""

    transport: Any
    """What it sends requests through; the monitor wraps it to see when the server
    last answered (the wrapper must pass every call on)."""

    async def submit_many(self, specs: list[JobSpec]) -> SubmitResult:
        """Persist and enqueue jobs in one go; says which were taken, duplicate or invalid."""
        ...

    async def wait_idle(self, credit_wait: float | None = None) -> None:
        """Until every job is final (or all that remain wait for credits too long)."""
        ...

    def unfinished(self) -> int:
        """Jobs not final yet."""
        ...

    def sent_any(self) -> bool:
        """Whether a job has been sent yet (not before the balance read is answered)."""
        ...

    def run_summary(self, ids: list[str] | None = None) -> RunSummary:
        """The typed run summary of ``ids`` (None: every job held)."""
        ...

    def summary(self, ids: list[str] | None = None) -> dict[str, Any]:
        """The run summary as the ``--summary`` file writes it."""
        ...

    async def reconcile_credits(self) -> None:
        """Reconcile charges that could not be read with the balance."""
        ...

    def stop_admitting(self, why: str) -> int:
        """The caller stops waiting: nothing more is admitted; how many jobs are left."""
        ...

    async def close(self) -> None:
        """Stop dispatching, wait for requests in flight, flush the store."""
        ...

    async def abort(self) -> None:
        """Stop at once; requests in flight stay 'in flight' in the store."""
        ...

    def alert(self, level: str, kind: str, message: str) -> None:
        """Raise an alert (the alerts pane shows it; the store keeps it)."""
        ...

    def job_ids(self) -> list[str]:
        """Ids of the jobs held in memory, in the order they were taken."""
        ...

    def job_view(self, job_id: str) -> JobView | None:
        """A job held in memory (live or recent); None when it is not held."""
        ...

    def job_spec(self, job_id: str) -> JobSpec | None:
        """The request of a job held in memory; None when it is not held."""
        ...

    def held_views(self) -> list[JobView]:
        """Every job held in memory, live or recent."""
        ...

    def set_priority(self, job_id: str, priority: int) -> bool:
        """A new priority for a job not sent yet; False when unknown, in flight or final."""
        ...
