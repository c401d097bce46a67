"""The ready queue: jobs that may go once the gates let them, and jobs that wait for a time.

Per endpoint a heap ordered by the operator's priority, then (on capped endpoints) the
longest job first, then submission order; beside it how many jobs each heap holds and how
much work (seconds at the endpoint's latency) they add up to, which the dispatcher weighs
endpoints by. Jobs delayed to a not-before time wait in one heap of their own until due.
Removal is lazy: a removed job stays in its heap, marked out, and is dropped when it
reaches the top.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

from .. import snapshot as S
from .model import Job

Entry = tuple[tuple[int, int, int], Job]


class ReadyQueue:
    """Ready heaps per endpoint, their counts and work, and the delayed heap."""

    def __init__(self, keys: list[str] | tuple[str, ...], latency: dict[str, float]) -> None:
        # ``latency`` is shared with the slot gate, which keeps it measured: a job's work
        # is its endpoint's latency when it enters or leaves the heap.
        self.heaps: dict[str, list[Entry]] = {k: [] for k in keys}
        self.count: dict[str, int] = dict.fromkeys(keys, 0)
        self.work: dict[str, float] = dict.fromkeys(keys, 0.0)
        self.delayed: list[tuple[float, int, Job]] = []
        self._latency = latency

    def push(self, job: Job) -> None:
        """Make a job ready now."""
        job.state = S.QUEUED
        job.in_heap = True
        # Longest first on capped endpoints (the estimate is our proxy for length).
        lpt = -job.est.high if job.ep.cap else 0
        key = job.ep.key
        heapq.heappush(self.heaps[key], ((-job.spec.priority, lpt, job.seq), job))
        self.count[key] += 1
        self.work[key] += self._latency[key]

    def defer(self, job: Job, not_before: float) -> None:
        """Hold a job until ``not_before`` (its state is the caller's)."""
        heapq.heappush(self.delayed, (not_before, job.seq, job))

    def promote(self, now: float) -> list[Job]:
        """Move the delayed jobs that are due to their ready heaps; returns them."""
        d = self.delayed
        moved: list[Job] = []
        while d and d[0][0] <= now:
            _, _, job = heapq.heappop(d)
            if job.state in S.FINAL_STATES:
                continue
            self.push(job)
            moved.append(job)
        return moved

    def head(self, key: str) -> Job | None:
        """The next job of an endpoint, without taking it."""
        h = self.heaps[key]
        while h:
            job = h[0][1]
            if job.state == S.QUEUED and job.in_heap:
                return job
            heapq.heappop(h)
        return None

    def pop(self, key: str) -> Job:
        """Take the next job of an endpoint (call after ``head`` said there is one)."""
        _, job = heapq.heappop(self.heaps[key])
        job.in_heap = False
        self.count[key] -= 1
        self.work[key] -= self._latency[key]
        return job

    def remove(self, job: Job) -> bool:
        """Take a job out wherever it waits (ready or delayed); True if it was ready."""
        was_ready = job.in_heap and job.state == S.QUEUED
        if was_ready:
            self.count[job.ep.key] -= 1
            self.work[job.ep.key] -= self._latency[job.ep.key]
        job.in_heap = False
        return was_ready

    def reprioritize(self, job: Job) -> None:
        """Re-order a ready job after its priority changed (a delayed job takes its place
        when it becomes ready, ordered by ``push``)."""
        key = job.ep.key
        heap = self.heaps[key]
        if not (job.in_heap and any(j is job for _, j in heap)):
            return
        lpt = -job.est.high if job.ep.cap else 0  # as push orders it
        self.heaps[key] = [
            ((-job.spec.priority, lpt, job.seq), j) if j is job else (k, j) for k, j in heap
        ]
        heapq.heapify(self.heaps[key])

    def quickest(self, expected_latency: Callable[[str], float]) -> Job | None:
        """The ready job expected to be answered soonest, of the highest priority ready
        (to learn the key's limit from its answer before the first burst)."""
        heads = [j for k, n in self.count.items() if n > 0 if (j := self.head(k)) is not None]
        if not heads:
            return None
        top = max(j.spec.priority for j in heads)
        return min(
            (j for j in heads if j.spec.priority == top), key=lambda j: expected_latency(j.ep.key)
        )

    def any_ready(self) -> bool:
        """Whether some endpoint has ready jobs."""
        return any(n > 0 for n in self.count.values())

    def next_due(self) -> float | None:
        """When the first delayed job becomes ready (None: none waits)."""
        return self.delayed[0][0] if self.delayed else None
