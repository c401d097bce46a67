"""Credit burn pane: credits/min chart, burn rates, balance split, monthly share, ETA."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.content import Content

from .. import catalog
from ..history import History
from ..snapshot import Snapshot
from .chart import ChartView, render
from .pane import Line, Pane, pack
from .text import duration, num


def month_gauge(used: int, allocation: int, width: int) -> Content:
    """A bar of the month's allocation used, with a tick at each alert threshold."""
    share = 0.0 if allocation <= 0 else max(0.0, min(1.0, used / allocation))
    filled = int(round(share * width))
    marks = {min(width - 1, int(round(t * width))) for t in catalog.ALERT_THRESHOLDS}
    parts: list[tuple[str, str]] = []
    for i in range(width):
        if i in marks:
            parts.append(("┃" if i < filled else "┆", "$warning" if i < filled else "$accent"))
        else:
            parts.append(("█", "$primary") if i < filled else ("░", "$foreground-muted"))
    return Content.assemble(*parts)


class BurnPane(Pane):
    """Burn over 1/5/15 min, balance (plan + purchased), month share, ETA, est vs actual."""

    TITLE = "Credit burn"

    def compose(self) -> ComposeResult:
        yield Line(id="burn-rates")
        yield Line(id="burn-balance")
        yield Line(id="burn-month", classes="gauge")
        yield Line(id="burn-eta")
        yield ChartView(id="burn-chart", classes="chart")

    def update_snapshot(self, snap: Snapshot, history: History) -> None:
        width = self.text_width
        # A 5 or 15 minute average needs that much uptime: before, it would be a shorter
        # average under a longer name.
        rates: list[Content | str | tuple[str, str]] = [
            ("burn/min", "bold"),
            f"1m {snap.burn_1m:.1f}",
            f"5m {snap.burn_5m:.1f}" if snap.elapsed >= 300 else ("5m —", "$foreground-muted"),
            f"15m {snap.burn_15m:.1f}" if snap.elapsed >= 900 else ("15m —", "$foreground-muted"),
        ]
        if snap.elapsed < 900:
            rates.append((f"(up {duration(snap.elapsed)})", "$foreground-muted"))
        self.query_one("#burn-rates", Line).show(pack(rates, width))
        balance: list[Content | str | tuple[str, str]] = [(f"balance {num(snap.balance)}", "bold")]
        if snap.plan_remaining is not None or snap.purchased is not None:
            balance.append(f"plan {num(snap.plan_remaining)} + bought {num(snap.purchased)}")
        if snap.reserved:
            balance.append(f"reserved {num(snap.reserved)}")
        self.query_one("#burn-balance", Line).show(pack(balance, width))

        if snap.allocation and snap.month_used is not None:
            share = snap.month_used / snap.allocation
            crossed = [t for t in catalog.ALERT_THRESHOLDS if share >= t]
            gauge_w = max(8, min(40, width - 16))
            month = Content.assemble(
                month_gauge(snap.month_used, snap.allocation, gauge_w),
                (
                    f" {share:.0%} of {num(snap.allocation)}",
                    "$error bold"
                    if crossed and crossed[-1] == max(catalog.ALERT_THRESHOLDS)
                    else "$warning"
                    if crossed
                    else "",
                ),
            )
        else:
            month = Content("month: allocation unknown")
        self.query_one("#burn-month", Line).show(month)

        if snap.balance is not None and snap.balance <= 0:
            eta = "credits exhausted"
        elif snap.eta_s is not None:
            eta = f"runs out in {duration(snap.eta_s)}"
        else:
            eta = "no exhaustion in sight"
        est, act = snap.estimated_total, snap.credits_used_total
        ratio = f" ({act / est:.0%})" if est else ""
        urgent = (snap.eta_s is not None and snap.eta_s < 3600) or eta == "credits exhausted"
        self.query_one("#burn-eta", Line).show(
            pack(
                [
                    (eta, "$error bold" if urgent else ""),
                    f"est {num(est)} → actual {num(act)}{ratio}",
                ],
                width,
            )
        )

        series = history.credits_per_minute()
        self.query_one("#burn-chart", ChartView).offer(
            history.versions["credits"],
            lambda w, h: render(history.ages(), [("credits/min", series, "hd")], w, h),
        )
