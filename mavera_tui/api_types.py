"""The API's data types: rate headers, error kinds, outcomes. No httpx here, so that the window
and the scheduler can use them without pulling in the HTTP edge."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RateHeaders:
    """X-RateLimit-* and Retry-After as parsed; None where absent or malformed."""

    limit: int | None = None
    remaining: int | None = None
    reset_at: float | None = None     # Unix time
    retry_after: float | None = None  # seconds from receipt, >= 0

    def to_dict(self) -> dict[str, Any]:
        return {"limit": self.limit, "remaining": self.remaining, "reset": self.reset_at,
                "retry_after": self.retry_after}


# Error kinds, the vocabulary the scheduler acts on.
RATE_LIMITED = "rate_limited"          # 429 for the key's window: hold the whole key
CONCURRENCY = "concurrency_limited"    # 429 for an endpoint's cap: hold that endpoint
CREDITS = "credits_exhausted"          # 402
BUDGET = "budget_exceeded"             # 402
AUTH = "unauthorized"                  # 401 / 403
SERVER = "server_error"                # 5xx
TIMEOUT = "timeout"
CONNECTION = "connection_error"        # dropped / refused / reset
BAD_RESPONSE = "bad_response"          # 2xx with a body we cannot read
CLIENT = "client_error"                # other 4xx: the request itself is wrong

RETRYABLE = frozenset({SERVER, TIMEOUT, CONNECTION})


@dataclass(frozen=True)
class ApiError:
    """A failed attempt: what kind, the server's code and message (untrusted text)."""

    kind: str
    status: int | None
    code: str | None = None
    message: str = ""

    def describe(self) -> str:
        head = f"HTTP {self.status}" if self.status else self.kind
        code = f" {self.code}" if self.code else ""
        msg = f": {self.message}" if self.message else ""
        return f"{head}{code}{msg}"


@dataclass(frozen=True)
class Outcome:
    """One attempt's result."""

    status: int | None
    latency: float
    headers: RateHeaders = field(default_factory=RateHeaders)
    credits_used: int | None = None   # usage.credits_used, None when not reported
    tokens: int | None = None
    body: Any = None
    error: ApiError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


