"""The scheduler, split along its data flow: a ready queue, three gates (window, slots,
credits) that each say whether a job may go now and when they might open, a retry
policy, run statistics, and the dispatch loop around them (:class:`Scheduler`, in
:mod:`.loop`; its commands are in :mod:`.commands`, what it records in :mod:`.journal`,
how it applies an answer in :mod:`.answers`, what it reports in :mod:`.views`)."""

from .credits import CreditGate
from .loop import Scheduler
from .model import Job, SchedulerConfig, SubmitResult, Transport
from .ready import ReadyQueue
from .retry import Step, backoff, next_step
from .slots import SlotGate
from .stats import RunStats, RunSummary
from .window import WindowGate

__all__ = [
    "CreditGate",
    "Job",
    "ReadyQueue",
    "RunStats",
    "RunSummary",
    "Scheduler",
    "SchedulerConfig",
    "SlotGate",
    "Step",
    "SubmitResult",
    "Transport",
    "WindowGate",
    "backoff",
    "next_step",
]
