"""The retry policy: from a job and an answer to what happens next, and the one back-off.

``next_step`` is a pure function (the jitter comes in as a callable, asked only when a
back-off is jittered): the dispatcher applies the step it returns. Every wait that grows
with repeated failure (a retried 5xx, a concurrency 429's hold, a window 429 without a
usable Retry-After) is ``backoff``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .. import client as api
from ..client import Outcome
from .model import Job, SchedulerConfig

SUCCEED = "succeed"
HOLD_KEY = "hold_key"  # a window 429: the whole key waits (the window gate says how long)
TOO_LONG = "too_long"  # a window 429 asking for more than max_retry_after: fail the job
WAIT_SLOT = "wait_slot"  # a concurrency 429: the endpoint waits ``delay``
PARK = "park"  # a 402: wait for credits
RETRY = "retry"  # 5xx, timeout, drop: again after ``delay``
FAIL = "fail"  # final
FATAL = "fatal"  # final, and nothing more may be sent (401)


def backoff(
    n: int, base: float, cap: float, *, max_doublings: int = 30, jitter: float | None = None
) -> float:
    """The wait after the ``n``-th consecutive failure (n >= 1): ``base`` doubled per
    failure (at most ``max_doublings`` times), never over ``cap``; with ``jitter`` in [0, 1)
    between half and all of it ("equal jitter"), so retries of a burst spread out."""
    d = min(cap, base * 2 ** min(max(n - 1, 0), max_doublings))
    return d if jitter is None else d * (0.5 + 0.5 * jitter)


@dataclass(frozen=True)
class Step:
    """What to do with a job after an answer."""

    action: str
    delay: float = 0.0
    reason: str = ""
    failures: int = 0  # the job's failure count after this answer
    alert: str = ""  # a warning to raise beside the step ("" for none)


def next_step(
    job: Job,
    out: Outcome,
    cfg: SchedulerConfig,
    *,
    busy: int = 0,
    jitter: Callable[[], float] = lambda: 0.5,
) -> Step:
    """What happens to ``job`` after ``out``. ``busy`` is the endpoint's count of
    concurrency 429s in a row, this one included.

    A ``passthrough`` job (a caller waits for the real answer) is repeated only where that
    is safe: after a 429 (refused before any work), or a failure before the request was
    written (``out.written`` False: a refused connection), or on a GET. A 5xx, timeout or
    drop of a written POST ends it with that answer; so do a 401 (this caller's key only)
    and a 402 unless the job parks on it."""
    err = out.error
    failures = job.failures
    if err is None:
        return Step(SUCCEED, failures=failures)
    if job.passthrough:
        if err.kind in api.RETRYABLE and out.written is not False and job.spec.method != "GET":
            return Step(
                FAIL,
                failures=failures + 1,
                reason="not repeated (the server may have processed it): " + err.describe(),
            )
        if err.kind == api.AUTH:
            return Step(FAIL, failures=failures, reason="the key was rejected: " + err.describe())
        if err.kind in (api.CREDITS, api.BUDGET) and not job.park_402:
            return Step(FAIL, failures=failures, reason=err.describe())
    if err.kind == api.RATE_LIMITED:
        asked = out.headers.retry_after
        if asked is not None and asked > cfg.max_retry_after:
            return Step(
                TOO_LONG,
                asked,
                failures=failures,
                reason=f"the server asked to retry after {asked:.0f} s, over the "
                f"maximum of {cfg.max_retry_after:.0f} s (--max-retry-after); "
                "not waited out",
            )
        return Step(HOLD_KEY, failures=failures)
    if err.kind == api.CONCURRENCY:
        # The server's slots can be taken by requests we gave up on (timeouts) that still
        # run there for an unknown time: back off per consecutive refusal rather than
        # collect a 429 every Retry-After second.
        asked = out.headers.retry_after if out.headers.retry_after is not None else 1.0
        hold = max(asked, backoff(busy, cfg.backoff_base, cfg.backoff_cap, max_doublings=4))
        return Step(
            WAIT_SLOT,
            min(hold, cfg.backoff_cap),
            failures=failures,
            reason="endpoint busy (429 concurrency limit): " + err.describe(),
        )
    if err.kind in (api.CREDITS, api.BUDGET):
        return Step(PARK, failures=failures, reason="waiting for credits: " + err.describe())
    if err.kind in api.RETRYABLE:
        failures += 1
        if failures >= cfg.max_attempts:
            return Step(
                FAIL,
                failures=failures,
                reason=f"gave up after {failures} failed attempts: {err.describe()}",
            )
        delay = backoff(failures, cfg.backoff_base, cfg.backoff_cap, jitter=jitter())
        return Step(
            RETRY,
            delay,
            failures=failures,
            reason=f"retry {failures}/{cfg.max_attempts - 1} in {delay:.1f} s: " + err.describe(),
        )
    if err.kind == api.AUTH:
        return Step(
            FATAL,
            failures=failures,
            reason="the API key was rejected: " + err.describe() + "; check MAVERA_API_KEY",
        )
    if err.kind == api.BAD_RESPONSE:
        return Step(
            FAIL,
            failures=failures,
            reason=err.describe(),
            alert=f"job {job.id}: unreadable response; its charge is unknown",
        )
    return Step(FAIL, failures=failures, reason=err.describe())
