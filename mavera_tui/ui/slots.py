"""Endpoint slots pane: in-flight/cap bars per capped endpoint, waiting jobs and holds."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.content import Content

from .. import catalog
from ..history import History
from ..snapshot import EndpointState, Snapshot
from .pane import Line, Pane
from .text import duration


class SlotsPane(Pane):
    """For every endpoint with a concurrency cap: a slot bar, waiting count and 429 hold."""

    TITLE = "Endpoint slots"

    def compose(self) -> ComposeResult:
        yield Line(id="slots-bars")
        yield Line(id="slots-free")

    def update_snapshot(self, snap: Snapshot, history: History) -> None:
        states = {e.key: e for e in snap.endpoints}
        capped = [e for e in catalog.ENDPOINTS.values() if e.cap]
        narrow = self.text_width < 44
        label_w = max(len(e.label) for e in capped)
        rows: list[Content] = []
        for ep in capped:
            st = states.get(ep.key) or EndpointState(ep.key, ep.path, ep.cap)
            cap = st.cap or ep.cap or 0
            full = st.in_flight >= cap
            row = [
                (ep.label.ljust(label_w) + " ", ""),
                ("■" * min(st.in_flight, cap), "$warning" if full else "$primary"),
                ("□" * (cap - min(st.in_flight, cap)), "$foreground-muted"),
                (f" {st.in_flight}/{cap}", "bold" if full else ""),
                (
                    f" w{st.waiting}" if narrow else f"  wait {st.waiting}",
                    "$warning" if st.waiting else "$foreground-muted",
                ),
            ]
            if st.hold_s > 0:
                row.append(
                    (
                        f" h{duration(st.hold_s)}" if narrow else f"  hold {duration(st.hold_s)}",
                        "$error bold",
                    )
                )
            rows.append(Content.assemble(*row))
        self.query_one("#slots-bars", Line).show(Content("\n").join(rows))
        free = [
            f"{catalog.ENDPOINTS[e.key].label if e.key in catalog.ENDPOINTS else e.key}"
            f" {e.in_flight}" + (f"+{e.waiting}w" if e.waiting else "")
            for e in snap.endpoints
            if not e.cap and (e.in_flight or e.waiting)
        ]
        legend = " (w waiting, h 429 hold)" if narrow else ""
        self.query_one("#slots-free", Line).show(
            Content.assemble(
                ("no cap: ", "$foreground-muted"),
                " · ".join(free) if free else "idle",
                (legend, "$foreground-muted"),
            )
        )
