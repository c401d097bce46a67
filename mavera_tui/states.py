"""The engine's two vocabularies as types: where a job is (``JobState``) and why an attempt
failed (``ErrorKind``).

Both are ``StrEnum``s: a member equals its string value, so the values stored in SQLite, in
recordings and in JSON summaries are the plain strings they always were, and a string read
back from any of them converts with ``JobState(text)``. The values must never change.
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    """Where a job is. The waiting states say what holds a job that is not yet sent."""

    QUEUED = "queued"  # ready: waits only for the dispatcher
    WAITING_WINDOW = "waiting_window"  # the key's sliding window (or a key-wide 429 hold)
    WAITING_SLOT = "waiting_slot"  # the endpoint's concurrency cap (or its 429 hold)
    BACKOFF = "backoff"  # retry back-off after a 5xx / timeout / drop
    WAITING_CREDITS = "waiting_credits"  # parked by a 402 or by pre-flight, polls the balance
    PAUSED = "paused"  # dispatch paused by the operator
    IN_FLIGHT = "in_flight"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    BLOCKED = "blocked_preflight"  # refused by pre-flight: never sent
    OUTCOME_UNKNOWN = "outcome_unknown"  # was in flight when the process died

    @property
    def waiting(self) -> bool:
        """Not finished and not sent: held in the queue (or parked) for a reason."""
        return self in _WAITING

    @property
    def active(self) -> bool:
        """Not finished: waiting or in flight."""
        return self in _WAITING or self is JobState.IN_FLIGHT

    @property
    def final(self) -> bool:
        """Finished for good: the engine will not act on the job again by itself."""
        return self in _FINAL


_WAITING = frozenset(
    {
        JobState.QUEUED,
        JobState.WAITING_WINDOW,
        JobState.WAITING_SLOT,
        JobState.BACKOFF,
        JobState.WAITING_CREDITS,
        JobState.PAUSED,
    }
)
_FINAL = frozenset(
    {
        JobState.SUCCEEDED,
        JobState.FAILED,
        JobState.CANCELLED,
        JobState.BLOCKED,
        JobState.OUTCOME_UNKNOWN,
    }
)


class ErrorKind(StrEnum):
    """Why an attempt failed: the vocabulary the scheduler acts on."""

    RATE_LIMITED = "rate_limited"  # 429 for the key's window: hold the whole key
    CONCURRENCY = "concurrency_limited"  # 429 for an endpoint's cap: hold that endpoint
    CREDITS = "credits_exhausted"  # 402
    BUDGET = "budget_exceeded"  # 402
    AUTH = "unauthorized"  # 401 / 403
    SERVER = "server_error"  # 5xx
    TIMEOUT = "timeout"
    CONNECTION = "connection_error"  # dropped / refused / reset
    BAD_RESPONSE = "bad_response"  # 2xx with a body we cannot read
    CLIENT = "client_error"  # other 4xx: the request itself is wrong

    @property
    def retryable(self) -> bool:
        """Worth sending again after a back-off: the fault was the server's or the network's."""
        return self in (ErrorKind.SERVER, ErrorKind.TIMEOUT, ErrorKind.CONNECTION)

    @property
    def charge_unknown(self) -> bool:
        """The work may have run and been charged, but the answer saying so was not read."""
        return self in (ErrorKind.TIMEOUT, ErrorKind.CONNECTION, ErrorKind.BAD_RESPONSE)

    @property
    def holds_key(self) -> bool:
        """Stops every request on the key (not just one endpoint) until the window reopens."""
        return self is ErrorKind.RATE_LIMITED
