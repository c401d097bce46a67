"""Queue depth pane: current counts by waiting state and a stacked chart over time."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.content import Content

from ..history import QUEUE_STATES, History
from ..snapshot import (
    BACKOFF,
    IN_FLIGHT,
    PAUSED,
    QUEUED,
    WAITING_CREDITS,
    WAITING_SLOT,
    WAITING_WINDOW,
    Snapshot,
)
from .chart import ChartView, stacked
from .pane import Line, Pane, pack

#: Short name, chart fill character and style per state, in QUEUE_STATES order.
LABELS: dict[str, tuple[str, str, str]] = {
    QUEUED: ("queued", "█", "$primary"),
    WAITING_WINDOW: ("window", "▓", "$accent"),
    WAITING_SLOT: ("slot", "▒", "$secondary"),
    BACKOFF: ("backoff", "░", "$warning"),
    WAITING_CREDITS: ("credits", "▞", "$error"),
}


class QueuePane(Pane):
    """How many jobs wait, and on what: the window, a slot, back-off or credits."""

    TITLE = "Queue depth"

    def compose(self) -> ComposeResult:
        yield Line(id="queue-counts")
        yield Line(id="queue-legend", classes="legend")
        yield ChartView(id="queue-chart", classes="chart")

    def update_snapshot(self, snap: Snapshot, history: History) -> None:
        parts: list[Content | str | tuple[str, str]] = []
        for state in QUEUE_STATES:
            n = snap.queue.get(state, 0)
            parts.append((f"{LABELS[state][0]} {n}", "bold" if n else "$foreground-muted"))
        if snap.queue.get(PAUSED):
            parts.append((f"paused {snap.queue[PAUSED]}", "$warning"))
        parts.append((f"in flight {snap.queue.get(IN_FLIGHT, 0)}", "$primary bold"))
        totals = pack(
            [
                f"waiting {snap.queue_depth}",
                f"jobs {snap.jobs_total}",
                f"done {sum(snap.finished.values())}",
            ],
            self.text_width,
        )
        self.query_one("#queue-counts", Line).show(
            Content("\n").join([pack(parts, self.text_width), totals])
        )
        legend: list[tuple[str, str] | str] = []
        for name, char, style in LABELS.values():
            legend += [(char * 2, style), f" {name}  "]
        self.query_one("#queue-legend", Line).show(Content.assemble(*legend))

        def draw(w: int, h: int) -> Content:
            depth = history.queue_depth()
            layers = [(depth[s], LABELS[s][1], LABELS[s][2]) for s in QUEUE_STATES]
            return stacked(layers, max(history.bucket_s, -min(history.ages(), default=0)), w, h)

        self.query_one("#queue-chart", ChartView).offer(history.versions["queue"], draw)
