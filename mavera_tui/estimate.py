"""Upper-bound credit cost of a job from its request body, the pre-flight verdict, calibration.

Pure functions over the catalog: no I/O. The scheduler reserves ``Estimate.high`` when it
admits a job and settles the reservation against ``usage.credits_used`` when the answer comes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from . import catalog
from .catalog import Endpoint


class EstimateError(ValueError):
    """The job cannot be priced: unknown endpoint or an invalid field (message says which)."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Estimate:
    """What a job may cost: ``low``..``high`` credits; ``high`` is the upper bound we reserve."""

    endpoint: Endpoint
    low: int
    high: int
    basis: str
    reduce_hint: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint.key,
            "method": self.endpoint.method,
            "path": self.endpoint.path,
            "low": self.low,
            "high": self.high,
            "basis": self.basis,
        }


def _int_field(body: dict[str, Any], name: str, default: int | None, lo: int, hi: int) -> int:
    value = body.get(name, default)
    if value is None:
        raise EstimateError(f"'{name}' is required", name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise EstimateError(f"'{name}' must be a whole number, got {value!r}", name)
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise EstimateError(f"'{name}' must be a whole number, got {value!r}", name)
        value = int(value)
    if not lo <= value <= hi:
        raise EstimateError(f"'{name}' must be between {lo} and {hi}, got {value}", name)
    return int(value)


#: Input bounds the form and the job-file parser enforce (the API's own limits are not
#: documented; these keep a typo like sample_size=5000000 from pricing silently).
MAX_SAMPLE_SIZE = 1000
MAX_QUESTIONS = 100
MAX_VIDEO_SECONDS = 4 * 3600


def focus_group_cost(sample_size: int, questions: int) -> int:
    """The cookbook's upper-bound formula: 75/125/200 by sample size, plus 2 per question."""
    base = next(
        (b for limit, b in catalog.FOCUS_GROUP_BASES if sample_size <= limit),
        catalog.FOCUS_GROUP_BASE_LARGE,
    )
    return base + questions * catalog.FOCUS_GROUP_PER_QUESTION


def video_cost(seconds: float | None) -> tuple[int, int]:
    """(low, high) for a video of ``seconds``; unknown length prices as a long video."""
    if seconds is None:
        return catalog.VIDEO_LONG
    (short_limit, s_low, s_high), (medium_limit, m_low, m_high) = catalog.VIDEO_BANDS
    if seconds < short_limit:  # "<30s"
        return s_low, s_high
    if seconds <= medium_limit:  # "1-3 min" (and the undocumented 30-60 s)
        return m_low, m_high
    return catalog.VIDEO_LONG


def estimate(method: str, path: str, body: dict[str, Any] | None = None) -> Estimate:
    """Price one request. Raises EstimateError for an unknown endpoint or a bad field."""
    ep = catalog.find_endpoint(method, path)
    if ep is None:
        raise EstimateError(
            f"unknown endpoint {method.upper()} {path}; known: "
            + ", ".join(catalog.known_routes()),
            "path",
        )
    body = body or {}
    if not isinstance(body, dict):
        raise EstimateError("'body' must be a JSON object", "body")
    return estimate_for(ep, body)


def estimate_for(ep: Endpoint, body: dict[str, Any]) -> Estimate:
    """Price a request to a known endpoint."""
    if ep.cost == "focus_group":
        sample = _int_field(
            body, "sample_size", catalog.FOCUS_GROUP_DEFAULT_SAMPLE, 1, MAX_SAMPLE_SIZE
        )
        questions = body.get("questions", [])
        if isinstance(questions, int) and not isinstance(questions, bool):
            n_q = questions
        elif isinstance(questions, list):
            n_q = len(questions)
        else:
            raise EstimateError("'questions' must be a list of questions", "questions")
        if not 0 <= n_q <= MAX_QUESTIONS:
            raise EstimateError(
                f"'questions' must hold 0 to {MAX_QUESTIONS} questions, got {n_q}", "questions"
            )
        high = focus_group_cost(sample, n_q)
        return Estimate(
            ep,
            min(catalog.FOCUS_GROUP_LOW, high),
            high,
            f"{sample:,} respondent{'s' * (sample != 1)}, {n_q} question{'s' * (n_q != 1)}",
            "reduce sample_size (25 or fewer: base 75) or the number of questions",
        )
    if ep.cost == "video":
        secs = body.get("video_seconds")
        if secs is not None:
            if (
                isinstance(secs, bool)
                or not isinstance(secs, (int, float))
                or not (math.isfinite(secs) and 1 <= secs <= MAX_VIDEO_SECONDS)
            ):
                raise EstimateError(
                    f"'video_seconds' must be a number from 1 to {MAX_VIDEO_SECONDS}, got {secs!r}",
                    "video_seconds",
                )
        low, high = video_cost(secs)
        basis = f"{secs:g} s of video" if secs is not None else "length unknown (priced as long)"
        return Estimate(ep, low, high, basis, "analyse a shorter clip (under 30 s: up to 150)")
    if ep.cost == "mave":
        cx = body.get("complexity", catalog.DEFAULT_MAVE_COMPLEXITY)
        if not isinstance(cx, str) or cx not in catalog.MAVE_COMPLEXITY:
            raise EstimateError(
                f"'complexity' must be one of {', '.join(catalog.MAVE_COMPLEXITY)}, got {cx!r}",
                "complexity",
            )
        low, high = catalog.MAVE_COMPLEXITY[cx]
        return Estimate(ep, low, high, f"{cx} query", "ask a narrower question (simple: up to 15)")
    if ep.cost == "free":
        return Estimate(ep, 0, 0, "free")
    return Estimate(
        ep,
        ep.low,
        ep.high,
        f"{ep.label}: documented {ep.low}-{ep.high}",
        "split the work or wait for credits",
    )


@dataclass(frozen=True)
class Verdict:
    """Pre-flight: can the account afford ``estimate`` with the 20% buffer?"""

    ok: bool
    estimate: int
    needed: int
    available: int
    remaining: int
    reserved: int
    message: str


def with_buffer(high: int) -> int:
    """What pre-flight requires to be available for an estimate of ``high``: the estimate
    plus the 20% buffer, rounded up. The buffer is a floor, so 131 needs 158 (157.2 up), and
    exact fractions keep 100 at 120 (float 100 * 1.2 is 120.00000000000001)."""
    return -(-high * _BUFFER.numerator // _BUFFER.denominator)  # integer ceil: no Fraction


#: 1 + the buffer, exactly (6/5): with_buffer is asked for every job of a batch.
_BUFFER = 1 + Fraction(str(catalog.PREFLIGHT_BUFFER))


def preflight(est: Estimate | int, remaining: int, reserved: int = 0) -> Verdict:
    """Affordable only if remaining - reserved >= estimate + 20% (the cookbook's can_afford).

    ``reserved`` is what in-flight and already-admitted jobs hold, so five concurrent focus
    groups cannot jointly overdraw.
    """
    high = est.high if isinstance(est, Estimate) else int(est)
    hint = est.reduce_hint if isinstance(est, Estimate) else ""
    needed = with_buffer(high)
    available = remaining - reserved
    if high == 0 or available >= needed:
        return Verdict(
            True,
            high,
            needed,
            available,
            remaining,
            reserved,
            f"affordable: needs {needed} (estimate {high} + 20%), {available} available",
        )
    msg = (
        f"estimated {high} credits (+20% buffer = {needed}); only {remaining} remaining"
        + (f", {reserved} reserved by running jobs" if reserved else "")
        + f" ({available} available)"
    )
    if hint:
        msg += f"; add credits or {hint}"
    else:
        msg += "; add credits or wait for the next billing cycle"
    return Verdict(False, high, needed, available, remaining, reserved, msg)


@dataclass
class Calibration:
    """Estimated-vs-actual per endpoint, for tuning estimates (the cookbook's metric)."""

    estimated: dict[str, int] = field(default_factory=dict)
    actual: dict[str, int] = field(default_factory=dict)
    count: dict[str, int] = field(default_factory=dict)

    def add(self, endpoint: str, estimated: int, actual: int) -> None:
        self.estimated[endpoint] = self.estimated.get(endpoint, 0) + estimated
        self.actual[endpoint] = self.actual.get(endpoint, 0) + actual
        self.count[endpoint] = self.count.get(endpoint, 0) + 1

    def ratio(self, endpoint: str) -> float | None:
        est = self.estimated.get(endpoint, 0)
        return self.actual.get(endpoint, 0) / est if est else None

    def rows(self) -> list[tuple[str, int, int, int]]:
        """(endpoint, jobs, estimated, actual) sorted by endpoint."""
        return [
            (k, self.count[k], self.estimated[k], self.actual.get(k, 0)) for k in sorted(self.count)
        ]
