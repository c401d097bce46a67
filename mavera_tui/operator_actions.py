"""Operator commands the scheduler does not offer itself yet: changing a waiting job's
priority. Kept apart from scheduler.py (other work changes that file) as a function over a
Scheduler; it touches the ready heap the way ``Scheduler._push_ready`` builds it, so if
that changes, this must follow (``test_priority_change_reorders_the_ready_queue`` checks).
"""

from __future__ import annotations

import dataclasses
import heapq
from typing import Any

from . import snapshot as S


def set_priority(sched: Any, job_id: str, priority: int) -> bool:
    """Give a job that has not been sent a new priority; False if it is unknown, in flight
    or final. A job in the ready queue is re-ordered at once; one that waits (back-off,
    credits, a hold) takes its new place when it becomes ready. Not persisted: a restart
    from the database brings back the priority the job was submitted with."""
    job = sched.jobs.get(job_id)
    if job is None or job.state not in S.WAITING_STATES:
        return False
    job.spec = dataclasses.replace(job.spec, priority=int(priority))
    key = job.ep.key
    heap = sched._ready[key]
    if job.in_heap and any(j is job for _, j in heap):
        lpt = -job.est.high if job.ep.cap else 0  # as Scheduler._push_ready orders it
        sched._ready[key] = [
            ((-job.spec.priority, lpt, job.seq), j) if j is job else (k, j) for k, j in heap
        ]
        heapq.heapify(sched._ready[key])
    sched._touch(job)
    sched._wake.set()
    return True
