"""The estimator follows the vendor's documented cost model, and pre-flight refuses what the
balance (minus what admitted jobs reserve) cannot cover with the 20% buffer."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mavera_tui import catalog
from mavera_tui.estimate import (
    Calibration,
    EstimateError,
    estimate,
    focus_group_cost,
    preflight,
)
from mavera_tui.sim.app import charge_for


def fg(sample_size: int | None, questions: int) -> dict[str, Any]:
    body: dict[str, Any] = {"questions": [f"q{i}" for i in range(questions)]}
    if sample_size is not None:
        body["sample_size"] = sample_size
    return body


# --- focus groups: the cookbook's formula -----------------------------------------------------


def test_the_documented_example_50_respondents_and_5_questions_costs_135() -> None:
    assert focus_group_cost(50, 5) == 135
    est = estimate("POST", "/focus-groups", fg(50, 5))
    assert est.high == 135
    assert est.low <= est.high
    assert est.endpoint.key == "focus_groups"


@pytest.mark.parametrize(
    ("sample", "base"),
    [
        (1, 75),
        (25, 75),
        (26, 125),
        (50, 125),
        (51, 200),
        (1000, 200),
    ],
)
def test_the_focus_group_base_follows_the_sample_size_bands(sample: int, base: int) -> None:
    assert estimate("POST", "/focus-groups", fg(sample, 0)).high == base


def test_each_focus_group_question_adds_two_credits() -> None:
    costs = [estimate("POST", "/focus-groups", fg(25, q)).high for q in range(6)]
    assert costs == [75, 77, 79, 81, 83, 85]
    # The number of questions may also be given as a count.
    assert estimate("POST", "/focus-groups", {"sample_size": 50, "questions": 5}).high == 135


def test_a_focus_group_without_sample_size_uses_the_cookbook_default_of_25() -> None:
    assert estimate("POST", "/focus-groups", fg(None, 2)).high == 75 + 4


# --- video analyses -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "low", "high"),
    [
        (5, 100, 150),  # < 30 s
        (29.9, 100, 150),
        (60, 200, 350),  # 1-3 min
        (90, 200, 350),
        (180, 200, 350),
        (181, 400, 600),  # long
        (3600, 400, 600),
    ],
)
def test_video_analyses_are_priced_by_the_documented_length_bands(
    seconds: float, low: int, high: int
) -> None:
    est = estimate("POST", "/video-analyses", {"video_seconds": seconds})
    assert (est.low, est.high) == (low, high)


def test_a_video_of_unknown_length_is_priced_as_a_long_one() -> None:
    est = estimate("POST", "/video-analyses", {})
    assert (est.low, est.high) == (400, 600)
    assert "unknown" in est.basis


# --- Mave, fixed costs, news ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("complexity", "high"),
    [
        ("simple", 15),
        ("moderate", 30),
        ("complex", 75),
    ],
)
def test_mave_is_priced_by_complexity(complexity: str, high: int) -> None:
    est = estimate("POST", "/mave/chat", {"message": "hi", "complexity": complexity})
    assert est.high == high
    assert 0 <= est.low <= est.high


def test_mave_without_a_complexity_is_priced_as_complex() -> None:
    assert estimate("POST", "/mave/chat", {"message": "hi"}).high == 75


def test_fixed_costs_personas_post_300_get_free_brand_voices_50() -> None:
    post = estimate("POST", "/personas", {"name": "p"})
    assert (post.low, post.high) == (300, 300)
    get = estimate("GET", "/personas")
    assert (get.low, get.high) == (0, 0)
    bv = estimate("POST", "/brand-voices", {"name": "b"})
    assert (bv.low, bv.high) == (50, 50)
    assert estimate("GET", "/billing/credits").high == 0


def test_news_analysis_is_priced_for_any_story_id() -> None:
    for story in ("abc", "123", "story-9"):
        est = estimate("POST", f"/news/stories/{story}/analyze", {})
        assert est.endpoint.key == "news_analyze"
        assert (est.low, est.high) == (5, 20)


def test_responses_and_generations_use_the_documented_ranges() -> None:
    assert estimate("POST", "/responses", {"input": "x"}).high == 5
    assert estimate("POST", "/generations", {"prompt": "x"}).high == 30


# --- invalid input names the field ------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/focus-groups", {"sample_size": "fifty"}, "sample_size"),
        ("/focus-groups", {"sample_size": 0}, "sample_size"),
        ("/focus-groups", {"sample_size": 10**7}, "sample_size"),
        ("/focus-groups", {"sample_size": True}, "sample_size"),
        ("/focus-groups", {"sample_size": 2.5}, "sample_size"),
        ("/focus-groups", {"sample_size": 10, "questions": "why?"}, "questions"),
        ("/focus-groups", {"sample_size": 10, "questions": 10_000}, "questions"),
        ("/video-analyses", {"video_seconds": -1}, "video_seconds"),
        ("/video-analyses", {"video_seconds": 0.5}, "video_seconds"),  # 1 to 14,400, as it says
        ("/video-analyses", {"video_seconds": "long"}, "video_seconds"),
        ("/video-analyses", {"video_seconds": float("nan")}, "video_seconds"),
        ("/mave/chat", {"complexity": "hard"}, "complexity"),
    ],
)
def test_an_invalid_field_raises_an_estimate_error_naming_it(
    path: str, body: dict[str, Any], field: str
) -> None:
    with pytest.raises(EstimateError) as info:
        estimate("POST", path, body)
    assert info.value.field == field
    assert field in str(info.value)


def test_an_unknown_endpoint_is_refused_naming_the_path_and_the_known_routes() -> None:
    with pytest.raises(EstimateError) as info:
        estimate("POST", "/nope", {})
    assert info.value.field == "path"
    assert "/focus-groups" in str(info.value)
    with pytest.raises(EstimateError):
        estimate("DELETE", "/responses", {})


# --- pre-flight -------------------------------------------------------------------------------


def test_preflight_needs_the_estimate_plus_a_20_percent_buffer() -> None:
    est = estimate("POST", "/focus-groups", fg(50, 5))  # 135, +20% = 162
    ok = preflight(est, 162)
    assert ok.ok and ok.needed == 162
    refused = preflight(est, 161)
    assert not refused.ok
    msg = refused.message
    assert "135" in msg and "162" in msg and "161" in msg
    assert "sample_size" in msg and "questions" in msg  # what to reduce


def test_a_free_request_is_always_affordable() -> None:
    assert preflight(estimate("GET", "/personas"), 0).ok


def test_preflight_counts_what_admitted_jobs_have_reserved() -> None:
    """Two 135-credit focus groups: alone each needs 162. Against 290 remaining, the second is
    refused while the first holds its reservation of 135 (290 - 135 = 155 < 162), and passes
    once that reservation is settled."""
    est = estimate("POST", "/focus-groups", fg(50, 5))
    remaining = 290
    first = preflight(est, remaining, reserved=0)
    assert first.ok
    second = preflight(est, remaining, reserved=est.high)
    assert not second.ok
    assert second.available == remaining - est.high
    assert "135 reserved" in second.message and "290 remaining" in second.message
    # The first settles at what it actually cost (say 120): the second now fits.
    assert preflight(est, remaining - 120, reserved=0).ok


def test_calibration_tracks_estimated_versus_actual_per_endpoint() -> None:
    cal = Calibration()
    cal.add("focus_groups", 135, 100)
    cal.add("focus_groups", 135, 110)
    cal.add("responses", 5, 3)
    assert cal.ratio("focus_groups") == pytest.approx(210 / 270)
    assert cal.ratio("video_analyses") is None
    assert cal.rows() == [("focus_groups", 2, 270, 210), ("responses", 1, 5, 3)]


# --- property: the estimate is an upper bound of what the API side charges --------------------


def _bodies() -> st.SearchStrategy[tuple[str, str, dict[str, Any]]]:
    fgs = st.builds(
        lambda s, q, as_count: (
            "POST",
            "/focus-groups",
            {
                **({"sample_size": s} if s is not None else {}),
                "questions": q if as_count else [f"q{i}" for i in range(q)],
            },
        ),
        st.one_of(st.none(), st.integers(1, 1000)),
        st.integers(0, 100),
        st.booleans(),
    )
    videos = st.builds(
        lambda s: ("POST", "/video-analyses", {} if s is None else {"video_seconds": s}),
        st.one_of(
            st.none(),
            st.integers(1, 14_400),
            st.floats(1.0, 14_400, allow_nan=False, allow_infinity=False),
        ),
    )
    maves = st.builds(
        lambda c: (
            "POST",
            "/mave/chat",
            {"message": "m"} if c is None else {"message": "m", "complexity": c},
        ),
        st.one_of(st.none(), st.sampled_from(list(catalog.MAVE_COMPLEXITY))),
    )
    others = st.sampled_from(
        [
            ("POST", "/responses", {"input": "x"}),
            ("POST", "/generations", {"prompt": "x"}),
            ("POST", "/personas", {"name": "p"}),
            ("GET", "/personas", {}),
            ("POST", "/brand-voices", {"name": "b"}),
            ("POST", "/news/stories/s1/analyze", {}),
            ("GET", "/billing/credits", {}),
        ]
    )
    return st.one_of(fgs, videos, maves, others)


@settings(max_examples=300, deadline=None)
@given(job=_bodies(), seed=st.integers(0, 2**32))
def test_the_estimate_is_never_below_what_the_simulator_charges(
    job: tuple[str, str, dict[str, Any]], seed: int
) -> None:
    method, path, body = job
    est = estimate(method, path, body)
    assert est.high >= est.low >= 0
    charged = charge_for(est.endpoint, body, seed, path)
    assert 0 <= charged <= est.high


def test_retrieving_one_persona_is_a_free_documented_read() -> None:
    """The credits guide: "/personas (GET) 0 credits: Free to list/retrieve"."""
    for pid in ("p24", "persona_1"):
        est = estimate("GET", f"/personas/{pid}")
        assert est.endpoint.key == "personas_get"
        assert (est.low, est.high) == (0, 0)
    assert estimate("GET", "/personas").endpoint.key == "personas_list"
    assert catalog.find_endpoint("GET", "/personas/a/b") is None
    assert catalog.find_endpoint("POST", "/personas/p1") is None
