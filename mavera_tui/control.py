"""The commands a front end may send to the engine, and how it reads the engine's state.

The Textual app, the CLI and the replay speak to the engine only through this protocol:
``snapshot()`` to read, the rest to command. Nothing reaches into the scheduler's internals.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from .estimate import Estimate, Verdict
from .jobs import JobSpec
from .snapshot import Snapshot


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
