"""Rate-limit headroom pane: window used/limit (ours and foreign), reset, 429s, rpm chart."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.content import Content

from .. import catalog
from ..history import History
from ..snapshot import Snapshot
from .chart import ChartView, render
from .pane import Line, Pane, pack
from .text import duration


class HeadroomPane(Pane):
    """Used/limit in the sliding window as a gauge, the reset countdown and a rpm chart."""

    TITLE = "Rate-limit headroom"

    def compose(self) -> ComposeResult:
        yield Line(id="headroom-gauge", classes="gauge")
        yield Line(id="headroom-detail")
        yield Line(id="headroom-errors")
        yield ChartView(id="headroom-chart", classes="chart")

    def update_snapshot(self, snap: Snapshot, history: History) -> None:
        used = max(0, snap.window_used)
        foreign = max(0, min(snap.foreign, used))
        remaining = snap.remaining if snap.remaining is not None else snap.limit - used
        remaining = max(0, remaining)
        low = remaining < catalog.LOW_REMAINING
        self.set_class(low, "-warning")

        width = max(8, min(40, self.text_width - 16))
        ours_cells = _cells(used - foreign, snap.limit, width)
        foreign_cells = min(width - ours_cells, _cells(foreign, snap.limit, width))
        gauge = Content.assemble(
            ("█" * ours_cells, "$primary"),
            ("▒" * foreign_cells, "$secondary"),
            ("░" * (width - ours_cells - foreign_cells), "$foreground-muted"),
            f" {used}/{snap.limit}",
            (" LOW" if low else "", "$error bold"),
        )
        self.query_one("#headroom-gauge", Line).show(gauge)

        rpm = history.requests_per_minute()
        now_rpm = int(rpm[-1]) if rpm else 0
        detail: list[Content | str | tuple[str, str]] = [
            (f"remaining {remaining}", "$error bold" if low else "bold"),
            f"foreign {foreign}", f"reset in {duration(snap.reset_in)}"]
        if snap.key_hold_s > 0:
            detail.append((f"key held {duration(snap.key_hold_s)}", "$error bold"))
        self.query_one("#headroom-detail", Line).show(pack(detail, self.text_width))
        errors: list[Content | str | tuple[str, str]] = [
            f"rpm {now_rpm}/{snap.limit}",
            (f"429s {snap.responses_429_total} ({history.recent('r429', 60)} last min)",
             "$warning" if history.recent("r429", 60) else ""),
            f"retries {snap.retries_total} ({history.recent('retries', 60)} last min)"]
        self.query_one("#headroom-errors", Line).show(pack(errors, self.text_width))

        chart = self.query_one("#headroom-chart", ChartView)
        chart.offer(history.versions["requests"], lambda w, h: render(
            history.ages(), [("rpm", rpm, "hd")], w, h, hline=float(snap.limit)))


def _cells(value: float, total: float, width: int) -> int:
    if total <= 0:
        return 0
    return max(0, min(width, int(round(value / total * width))))
