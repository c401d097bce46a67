"""The Mavera API's documented facts, stated once: tiers, plans, endpoints, costs, caps, packs.

Every number here comes from the vendor documentation in ``shared/seeds/``. Nothing else in
the package hard-codes one of them: the estimator, the limiter, the scheduler, the simulator,
the panes and the tests all read them from here. Where the pages are vague or disagree, the
choice a careful client makes is written next to the entry (``# Choice:``), and the
simulator behaves the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

DEFAULT_BASE_URL = "https://app.mavera.io/api/v1"
API_KEY_ENV = "MAVERA_API_KEY"
BASE_URL_ENV = "MAVERA_BASE_URL"

# --- Rate limits (rate-limits guide) -------------------------------------------------------

#: Requests per minute, per API key, measured in a sliding 60-second window.
TIERS: dict[str, int] = {
    "starter": 60,
    "basic": 120,
    "professional": 240,
    "enterprise": 600,
}
DEFAULT_TIER = "starter"
#: The server's sliding window. Settable everywhere (limiter, simulator) so tests can shrink it.
WINDOW_SECONDS = 60.0

HEADER_LIMIT = "X-RateLimit-Limit"
HEADER_REMAINING = "X-RateLimit-Remaining"
# Choice: the docs call Reset "Unix timestamp when the window resets". In a sliding window
# the next request is admitted when the oldest counted request leaves the window, so we
# read Reset as "the time at which Remaining next grows" (when Remaining is 0, the earliest
# moment a request can succeed). The simulator sends exactly that.
HEADER_RESET = "X-RateLimit-Reset"
HEADER_RETRY_AFTER = "Retry-After"

#: The vendor's own backoff cap for 429 retries (rate-limit cookbook, pattern 5).
MAX_BACKOFF_SECONDS = 300.0

#: Warn when Remaining falls below this (cookbook: "alert when remaining < 5 frequently").
LOW_REMAINING = 5

# --- Credits (credits guide, packs page) ----------------------------------------------------

#: Monthly credit allocation per plan. Enterprise is custom: set it in the config.
PLANS: dict[str, int | None] = {
    "starter": 500,
    "basic": 2000,
    "professional": 5000,
    "enterprise": None,
}
DEFAULT_PLAN = "basic"
#: Budget alerts the docs recommend, as shares of the monthly allocation.
ALERT_THRESHOLDS: tuple[float, ...] = (0.50, 0.75, 0.90)
#: can_afford(): remaining >= estimate + 20% buffer (credits cookbook, pattern 2).
PREFLIGHT_BUFFER = 0.20


@dataclass(frozen=True)
class CreditPack:
    """A purchasable pack of credits that never expire (packs page)."""

    name: str
    tokens: int
    price_eur: int


# Choice: the packs page sells "tokens" while every other page bills "credits"; the docs
# give no conversion. The packs are listed as documented; what a recharge adds in credits
# comes from the config (default: the credits guide's example, 500 credits when below 100).
CREDIT_PACKS: dict[str, CreditPack] = {
    "starter": CreditPack("Starter", 1_000_000, 5),
    "standard": CreditPack("Standard", 2_500_000, 10),
    "plus": CreditPack("Plus", 7_000_000, 25),
    "pro": CreditPack("Pro", 15_000_000, 50),
}
DEFAULT_RECHARGE_PACK = "standard"
DEFAULT_RECHARGE_THRESHOLD = 100
DEFAULT_RECHARGE_CREDITS = 500
#: Default monthly auto-recharge spending limit, in euros (packs page).
DEFAULT_RECHARGE_MONTHLY_LIMIT_EUR = 50

# --- Error envelope codes ------------------------------------------------------------------

CODE_RATE_LIMIT = "rate_limit_exceeded"
# Choice: the docs do not show the body of a concurrency-limit 429. We send and expect
# "concurrency_limit_exceeded"; a 429 with any other code while X-RateLimit-Remaining > 0
# is also read as a concurrency limit (the window still had room, so it was not the window).
CODE_CONCURRENCY = "concurrency_limit_exceeded"
CODE_CREDITS_EXHAUSTED = "credits_exhausted"
CODE_BUDGET_EXCEEDED = "budget_exceeded"

# --- Endpoints -----------------------------------------------------------------------------

CostKind = Literal[
    "fixed", "responses", "mave", "focus_group", "video", "generation", "news", "free"
]


@dataclass(frozen=True)
class Endpoint:
    """One documented operation: where it lives, what it costs, how many may run at once.

    ``low``/``high`` are the endpoint table's "typical cost" of one call in credits (what the
    simulator charges within; the estimator's upper bounds may be higher); ``cap`` is the
    per-endpoint concurrency limit (None: only the key's window applies); ``latency`` is the
    simulator's typical (min, max) seconds at time scale 1, a guess the docs do not give.
    """

    key: str
    method: str
    path: str
    label: str
    cost: CostKind
    low: int
    high: int
    cap: int | None = None
    latency: tuple[float, float] = (0.5, 2.0)

    @property
    def slot_key(self) -> str:
        """The name under which concurrency is counted (method-independent path)."""
        return self.path


ENDPOINTS: dict[str, Endpoint] = {
    e.key: e
    for e in (
        Endpoint(
            "responses", "POST", "/responses", "Response", "responses", 1, 5, latency=(0.5, 3.0)
        ),
        Endpoint(
            "mave", "POST", "/mave/chat", "Mave chat", "mave", 10, 50, cap=10, latency=(8.0, 30.0)
        ),
        Endpoint(
            "focus_groups",
            "POST",
            "/focus-groups",
            "Focus group",
            "focus_group",
            50,
            200,
            cap=5,
            latency=(30.0, 90.0),
        ),
        Endpoint(
            "video_analyses",
            "POST",
            "/video-analyses",
            "Video analysis",
            "video",
            100,
            500,
            cap=3,
            latency=(40.0, 150.0),
        ),
        Endpoint(
            "generations",
            "POST",
            "/generations",
            "Generation",
            "generation",
            10,
            30,
            latency=(2.0, 8.0),
        ),
        Endpoint(
            "personas_list", "GET", "/personas", "List personas", "free", 0, 0, latency=(0.1, 0.4)
        ),
        # The credits guide: "/personas (GET) 0 credits: Free to list/retrieve". Choice: a
        # retrieval is GET /personas/{id}, as the API's other resources are addressed.
        Endpoint(
            "personas_get",
            "GET",
            "/personas/{id}",
            "Get persona",
            "free",
            0,
            0,
            latency=(0.1, 0.4),
        ),
        Endpoint(
            "personas_create",
            "POST",
            "/personas",
            "Create persona",
            "fixed",
            300,
            300,
            latency=(5.0, 15.0),
        ),
        Endpoint(
            "brand_voices",
            "POST",
            "/brand-voices",
            "Brand voice",
            "fixed",
            50,
            50,
            latency=(3.0, 10.0),
        ),
        Endpoint(
            "news_analyze",
            "POST",
            "/news/stories/{id}/analyze",
            "News analysis",
            "news",
            5,
            20,
            latency=(2.0, 8.0),
        ),
        Endpoint(
            "billing_credits",
            "GET",
            "/billing/credits",
            "Credit balance",
            "free",
            0,
            0,
            latency=(0.05, 0.2),
        ),
    )
}
# Choice on Mave: the credits guide says complex queries cost ~40-75, the cookbook's table
# (35, 50) and the endpoint table 10-50. Estimates are upper bounds, so complex is 75.
MAVE_COMPLEXITY: dict[str, tuple[int, int]] = {
    "simple": (10, 15),
    "moderate": (20, 30),
    "complex": (35, 75),
}
DEFAULT_MAVE_COMPLEXITY = "complex"

#: Focus group formula (credits cookbook): base by sample size + 2 per question.
FOCUS_GROUP_BASES: tuple[tuple[int, int], ...] = ((25, 75), (50, 125))
FOCUS_GROUP_BASE_LARGE = 200
FOCUS_GROUP_PER_QUESTION = 2
#: The cookbook's default when a payload has no sample_size.
FOCUS_GROUP_DEFAULT_SAMPLE = 25
FOCUS_GROUP_LOW = 50

# Video (credits guide + cookbook): ~100-150 under 30 s, ~200-350 for 1-3 min, long 400-600.
# Choice: 30-60 s is not covered; it is billed as "medium" (the next range up). Without a
# video_seconds the length is unknown and the estimate is the long upper bound.
VIDEO_BANDS: tuple[tuple[float, int, int], ...] = ((30.0, 100, 150), (180.0, 200, 350))
VIDEO_LONG = (400, 600)

# Choice: the packs page says "GET /api/billing/credits" (no /v1) while every other
# endpoint lives under /api/v1. We ask {base}/billing/credits first and, on a 404, the
# documented /api/billing/credits on the same host.
BILLING_ALT_PATH = "/api/billing/credits"

_NEWS_RE = re.compile(r"^/news/stories/[^/]+/analyze$")
_PERSONA_RE = re.compile(r"^/personas/[^/]+$")
_TEMPLATES = {"news_analyze": _NEWS_RE, "personas_get": _PERSONA_RE}


def find_endpoint(method: str, path: str) -> Endpoint | None:
    """The documented endpoint for ``method path`` (path relative to the base URL), or None."""
    method = method.upper()
    clean = "/" + path.split("?", 1)[0].strip("/")
    for e in ENDPOINTS.values():
        if e.method != method:
            continue
        pattern = _TEMPLATES.get(e.key)
        if e.path == clean or (pattern is not None and pattern.match(clean)):
            return e
    return None


def known_routes() -> list[str]:
    """``METHOD /path`` for every documented endpoint, for error messages and help."""
    return [f"{e.method} {e.path}" for e in ENDPOINTS.values()]


def tier_for_limit(limit: int) -> str | None:
    """The tier whose documented limit is ``limit``, if any."""
    for name, rpm in TIERS.items():
        if rpm == limit:
            return name
    return None
