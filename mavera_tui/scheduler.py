"""The scheduler (kept importable here): the dispatch loop and its gates live in
:mod:`mavera_tui.gates`; see that package for how a job is admitted and retried."""

from __future__ import annotations

from .gates import Job, RunSummary, Scheduler, SchedulerConfig, SubmitResult, Transport

__all__ = ["Job", "RunSummary", "Scheduler", "SchedulerConfig", "SubmitResult", "Transport"]
