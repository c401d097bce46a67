"""What a governed request gets back: the API's answer as it came, or the governor's own
in the vendor's error envelope (a request it cannot price, a pre-flight 402, a full queue
or a wait too long as a 429 with Retry-After, a stop as a 503), each marked with the
:data:`ORIGIN_HEADER` so an app can tell it from the API's. The :class:`~.governor.Governor`
decides when to answer; this module says what the answer is."""

from __future__ import annotations

import json as _json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from multidict import CIMultiDict, CIMultiDictProxy

from . import catalog
from .api_types import ErrorKind
from .estimate import Estimate, EstimateError, Verdict
from .gates.model import Job
from .states import JobState

#: Which part answered: the API itself, or the governor on its own (never sent).
UPSTREAM = "upstream"
GOVERNOR = "governor"
#: The header a governor-made answer carries (so an app can tell it from the API's).
ORIGIN_HEADER = "X-Mavera-Governor"


def error_body(message: str, type_: str, code: str, param: str | None = None) -> bytes:
    """The vendor's documented error envelope: ``{"error": {message, type, code, param}}``."""
    return _json.dumps(
        {"error": {"message": message, "type": type_, "code": code, "param": param}}
    ).encode()


@dataclass(frozen=True)
class GovernedResponse:
    """An answer: the API's as it came (``origin`` "upstream"), or the governor's own
    (``origin`` "governor": a pre-flight 402, an overflow 429, a request it cannot price).
    ``streamed``: the body went to the stream sink as it arrived (``content`` is empty)."""

    status: int
    headers: CIMultiDictProxy[str]
    content: bytes
    origin: str = UPSTREAM
    job_id: str | None = None
    state: str = ""
    reason: str = ""
    streamed: bool = False

    def json(self) -> Any:
        """The body parsed as JSON (ValueError if it is not)."""
        return _json.loads(self.content)

    @property
    def text(self) -> str:
        """The body as text (UTF-8, undecodable bytes replaced)."""
        return self.content.decode("utf-8", "replace")

    @property
    def ok(self) -> bool:
        """A 2xx answer."""
        return 200 <= self.status < 300


@dataclass(frozen=True)
class JobResult:
    """A submitted job once final: its state, why, what it cost, and its last answer."""

    job_id: str
    state: str
    reason: str
    credits_used: int | None
    attempts: int
    response: GovernedResponse | None

    @property
    def ok(self) -> bool:
        """The job succeeded."""
        return self.state == JobState.SUCCEEDED


def _headers(pairs: Iterable[tuple[str, str]] = ()) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


def own_answer(
    status: int,
    message: str,
    type_: str,
    code: str,
    *,
    param: str | None = None,
    retry_after: int | None = None,
    job_id: str | None = None,
    state: str = "",
) -> GovernedResponse:
    """An answer the governor makes itself, in the vendor's error envelope."""
    pairs = [("Content-Type", "application/json"), (ORIGIN_HEADER, code)]
    if retry_after is not None:
        pairs.append(("Retry-After", str(retry_after)))
    return GovernedResponse(
        status,
        _headers(pairs),
        error_body(message, type_, code, param),
        GOVERNOR,
        job_id,
        state,
        message,
    )


def answer_of(job: Job) -> GovernedResponse | None:
    """The job's last answer from the API, as it came (None if it has none kept)."""
    out = job.last
    if out is None or out.raw is None:
        return None
    raw = out.raw
    return GovernedResponse(
        raw.status,
        _headers(raw.headers),
        raw.body,
        UPSTREAM,
        job.id,
        str(job.state),
        job.reason,
        raw.streamed,
    )


def final_answer(job: Job) -> GovernedResponse:
    """What the caller of a finished job gets: the API's last answer, or one that says
    truthfully why there is none."""
    got = answer_of(job)
    if got is not None:
        return got
    state, jid = job.state, job.id
    if state == JobState.BLOCKED:
        code = (
            catalog.CODE_BUDGET_EXCEEDED if "cap" in job.reason else catalog.CODE_CREDITS_EXHAUSTED
        )
        return own_answer(
            402, "mavera-tui " + job.reason, "insufficient_credits", code, job_id=jid, state=state
        )
    err = job.last.error if job.last is not None else None
    if err is not None and err.kind == ErrorKind.TIMEOUT:
        return own_answer(
            504,
            "mavera-tui: the API did not answer in time; the request was not repeated "
            "(it may have been processed and charged)",
            "api_error",
            "upstream_timeout",
            job_id=jid,
            state=state,
        )
    if err is not None:
        return own_answer(
            502,
            f"mavera-tui: no answer from the API ({err.describe()}); {job.reason}",
            "api_error",
            "upstream_unreachable",
            job_id=jid,
            state=state,
        )
    return own_answer(
        503,
        f"mavera-tui: the request was not sent ({state}: {job.reason})",
        "api_error",
        "not_sent",
        job_id=jid,
        state=state,
    )


def result_of(job: Job) -> JobResult:
    """A final job as ``Governor.result`` gives it back."""
    return JobResult(job.id, str(job.state), job.reason, job.actual, job.attempts, answer_of(job))


# --- the governor's own answers, one per reason it answers itself ------------------------


def unknown_endpoint(method: str, rel: str) -> GovernedResponse:
    """404: a request to an endpoint the catalog does not know (never sent)."""
    return own_answer(
        404,
        f"mavera-tui: unknown endpoint {method} {rel}; it governs: "
        + ", ".join(catalog.known_routes()),
        "invalid_request_error",
        "not_found",
    )


def bad_body() -> GovernedResponse:
    """400: a body that is not a JSON object."""
    return own_answer(
        400,
        "mavera-tui: the request body must be a JSON object",
        "invalid_request_error",
        "invalid_json",
    )


def unpriceable(e: EstimateError) -> GovernedResponse:
    """400: a request that cannot be priced (the estimate says which field)."""
    return own_answer(
        400, f"mavera-tui: {e}", "invalid_request_error", "invalid_parameter", param=e.field
    )


def over_cap(cap: str) -> GovernedResponse:
    """402: a request a budget cap can never allow."""
    return own_answer(
        402,
        f"mavera-tui pre-flight: {cap}; not sent",
        "insufficient_credits",
        catalog.CODE_BUDGET_EXCEEDED,
    )


def over_balance(est: Estimate, verdict: Verdict) -> GovernedResponse:
    """402: a request the balance cannot cover even with nothing else running."""
    return own_answer(
        402,
        f"mavera-tui pre-flight: {est.endpoint.label} {est.basis}: {verdict.message}; not sent",
        "insufficient_credits",
        catalog.CODE_CREDITS_EXHAUSTED,
    )


def queue_full(depth: int, limit: int, wait: float) -> GovernedResponse:
    """429: ``depth`` requests already wait for the key (at most ``limit``); come back in
    ``wait`` seconds."""
    return own_answer(
        429,
        f"mavera-tui: {depth} requests already wait for this key (at most {limit}); "
        f"retry after {math.ceil(wait)} s",
        "rate_limit_error",
        "queue_full",
        retry_after=max(1, math.ceil(wait)),
    )


def not_sent_in_time(job: Job, max_wait: float, wait: int) -> GovernedResponse:
    """429: the job was not sent within ``max_wait`` seconds and was given up."""
    return own_answer(
        429,
        f"mavera-tui: not sent within {max_wait:g} s ({job.reason or job.state}); "
        f"retry after {wait} s",
        "rate_limit_error",
        "max_wait_exceeded",
        retry_after=wait,
        job_id=job.id,
        state=str(job.state),
    )


def stopping(job: Job, *, sent: bool) -> GovernedResponse:
    """503: the engine stopped before the job was sent, or (``sent``) before its answer."""
    message = (
        "mavera-tui: stopped before the answer came (it may have been processed)"
        if sent
        else "mavera-tui: stopping; the request was not sent"
    )
    return own_answer(503, message, "api_error", "stopping", job_id=job.id, state=str(job.state))
