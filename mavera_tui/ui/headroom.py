"""Rate-limit headroom pane: window used/limit (ours and foreign), reset, 429s, rpm chart."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.content import Content

from .. import catalog
from ..history import History
from ..snapshot import Snapshot
from .chart import ChartView, render
from .header import connecting
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

    #: The server's word is "stale" after this many seconds without an answer...
    STALE_S = 5.0
    #: ...and the API "not answering" after this many, while work waits for it.
    SILENT_S = 30.0

    def update_snapshot(self, snap: Snapshot, history: History) -> None:
        gauge_line = self.query_one("#headroom-gauge", Line)
        detail_line = self.query_one("#headroom-detail", Line)
        errors_line = self.query_one("#headroom-errors", Line)
        if connecting(snap):
            # Before the first answer the limit is a default, not the key's: say so.
            self.set_class(False, "-warning")
            gauge_line.show(
                Content.styled("connecting… the limit is known after the first answer", "italic")
            )
            detail_line.show(Content(""))
            errors_line.show(Content(""))
            return
        used = max(0, snap.window_used)
        foreign = max(0, min(snap.foreign, used))
        free_now = max(0, snap.limit - used)
        answered = getattr(self.app, "last_answer_t", lambda s: s.last_answer_t)(snap)
        age = None if answered is None else max(0.0, snap.t - answered)
        stale = age is not None and age >= self.STALE_S
        waiting_work = snap.in_flight > 0 or (snap.queue_depth > 0 and not snap.paused)
        silent = age is not None and age >= self.SILENT_S and waiting_work
        server_left = snap.remaining
        # "remaining" is what we measure now; the server's last header only while fresh.
        remaining = server_left if (server_left is not None and not stale) else free_now
        remaining = max(0, remaining)
        low = remaining < catalog.LOW_REMAINING
        self.set_class(low or silent, "-warning")

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
        gauge_line.show(gauge)

        rpm = history.requests_per_minute()
        now_rpm = int(rpm[-1]) if rpm else 0
        room = (
            "room now"
            if snap.reset_in <= 0 and used < snap.limit
            else f"room in {duration(max(snap.reset_in, 1))}"
        )
        detail: list[Content | str | tuple[str, str]] = [
            (f"remaining {remaining}", "$error bold" if low else "bold"),
            f"foreign {foreign}",
            room,
        ]
        if snap.key_hold_s > 0:
            detail.append((f"key held {duration(snap.key_hold_s)}", "$error bold"))
        if silent:
            lat = "" if snap.last_latency is None else f" · last latency {snap.last_latency:.2f}s"
            detail.append((f"API not answering: no answer for {duration(age)}{lat}", "$error bold"))
        elif stale:
            said = f"server said {server_left} left · " if server_left is not None else ""
            detail.append((f"{said}last response {duration(age)} ago", "$foreground-muted"))
        detail_line.show(pack(detail, self.text_width))
        errors: list[Content | str | tuple[str, str]] = [
            f"rpm {now_rpm}/{snap.limit}",
            (
                f"429s {snap.responses_429_total} ({history.recent('r429', 60)} last min)",
                "$warning" if history.recent("r429", 60) else "",
            ),
            f"retries {snap.retries_total} ({history.recent('retries', 60)} last min)",
        ]
        errors_line.show(pack(errors, self.text_width))

        chart = self.query_one("#headroom-chart", ChartView)
        chart.offer(
            history.versions["requests"],
            lambda w, h: render(
                history.ages(), [("rpm", rpm, "hd")], w, h, hline=float(snap.limit)
            ),
        )


def _cells(value: float, total: float, width: int) -> int:
    if total <= 0:
        return 0
    return max(0, min(width, int(round(value / total * width))))
