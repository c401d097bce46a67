"""The commands a front end may send to the engine, and how it reads the engine's state.

The Textual app, the CLI and the replay speak to the engine only through this protocol:
``snapshot()`` to read, the rest to command. Nothing reaches into the scheduler's internals.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from .estimate import Estimate, Verdict
from .jobs import JobSpec
from .snapshot import JobView, Snapshot


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
