"""The API's data types: rate headers, error kinds, outcomes. No httpx here, so that the window
and the scheduler can use them without pulling in the HTTP edge."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from .states import ErrorKind


@dataclass(frozen=True)
class RateHeaders:
    """X-RateLimit-* and Retry-After as parsed; None where absent or malformed."""

    limit: int | None = None
    remaining: int | None = None
    reset_at: float | None = None  # Unix time
    retry_after: float | None = None  # seconds from receipt, >= 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "limit": self.limit,
            "remaining": self.remaining,
            "reset": self.reset_at,
            "retry_after": self.retry_after,
        }


# Error kinds, the vocabulary the scheduler acts on.
# The error kinds by their short names (the vocabulary is ErrorKind, in states).
RATE_LIMITED = ErrorKind.RATE_LIMITED
CONCURRENCY = ErrorKind.CONCURRENCY
CREDITS = ErrorKind.CREDITS
BUDGET = ErrorKind.BUDGET
AUTH = ErrorKind.AUTH
SERVER = ErrorKind.SERVER
TIMEOUT = ErrorKind.TIMEOUT
CONNECTION = ErrorKind.CONNECTION
BAD_RESPONSE = ErrorKind.BAD_RESPONSE
CLIENT = ErrorKind.CLIENT

RETRYABLE = frozenset(k for k in ErrorKind if k.retryable)


@dataclass(frozen=True)
class ApiError:
    """A failed attempt: what kind, the server's code and message (untrusted text)."""

    kind: ErrorKind
    status: int | None
    code: str | None = None
    message: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.kind, ErrorKind):  # a plain string of the vocabulary
            object.__setattr__(self, "kind", ErrorKind(self.kind))

    def describe(self) -> str:
        head = f"HTTP {self.status}" if self.status else self.kind
        code = f" {self.code}" if self.code else ""
        msg = f": {self.message}" if self.message else ""
        return f"{head}{code}{msg}"


@dataclass(frozen=True)
class RawAnswer:
    """An answer exactly as it came: status, every header (in order, repeats kept) and the
    body bytes. Kept only when a caller asks for it (the proxy, the Governor): the normal
    path parses what it needs and drops the rest."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    streamed: bool = False  # the body went to a stream sink as it arrived (not kept here)


@dataclass(frozen=True)
class Outcome:
    """One attempt's result. ``written``: the request's headers went on the wire (None when
    the transport does not report writes); ``raw``: the answer as it came, when asked for.
    ``latency``: from the request on the wire to its answer read (from the call, when the
    transport does not report writes, or no answer came)."""

    status: int | None
    latency: float
    headers: RateHeaders = field(default_factory=RateHeaders)
    credits_used: int | None = None  # usage.credits_used, None when not reported
    tokens: int | None = None
    body: Any = None
    error: ApiError | None = None
    raw: RawAnswer | None = None
    written: bool | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class StreamSink(Protocol):
    """Where a streamed (server-sent events) answer goes as it arrives: the proxy's
    connection to its app. ``start`` is called once with the status and headers of a 2xx
    ``text/event-stream`` answer, ``write`` per chunk, ``end`` after the last; any of them
    raising means the caller went away (the upstream request is then closed)."""

    async def start(self, status: int, headers: tuple[tuple[str, str], ...]) -> None:
        """The answer's head, before any chunk."""
        ...

    async def write(self, chunk: bytes) -> None:
        """One chunk of the body, as it came."""
        ...

    async def end(self) -> None:
        """The body is complete."""
        ...
