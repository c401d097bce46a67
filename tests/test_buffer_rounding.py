"""The 20% pre-flight buffer is a floor: every place that computes it rounds up."""

from __future__ import annotations

import pytest

from mavera_tui import cli
from mavera_tui.estimate import estimate, preflight, with_buffer


@pytest.mark.parametrize(
    ("high", "needed"),
    [
        (0, 0),
        (1, 2),
        (5, 6),
        (75, 90),
        (100, 120),
        (131, 158),
        (135, 162),
        (77, 93),
    ],
)
def test_the_buffer_rounds_up_and_is_exact_on_whole_results(high, needed):
    assert with_buffer(high) == needed


def test_preflight_needs_the_rounded_up_amount():
    # 131 * 1.2 = 157.2: 157 available is not enough, 158 is.
    refused = preflight(131, 157)
    assert not refused.ok and refused.needed == 158 and "= 158" in refused.message
    ok = preflight(131, 158)
    assert ok.ok and "needs 158 (estimate 131 + 20%)" in ok.message
    est = estimate("POST", "/focus-groups", {"sample_size": 50, "questions": 3})
    assert est.high == 131 and preflight(est, 1000).needed == 158


def test_cli_estimate_prints_the_same_rounded_up_need(capsys):
    code = cli.main(
        ["estimate", "focus-group", "--sample-size", "50", "--questions", "3", "--balance", "157"]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "pre-flight needs 158 available" in out and "REFUSED" in out
    code = cli.main(
        [
            "estimate",
            "focus-group",
            "--sample-size",
            "50",
            "--questions",
            "3",
            "--balance",
            "158",
            "--json",
        ]
    )
    assert code == 0 and '"needed": 158' in capsys.readouterr().out
