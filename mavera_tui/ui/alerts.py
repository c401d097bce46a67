"""Alerts and events pane: budget alerts, 402s, 429 storms, parked/resumed jobs, with times.

Messages can hold server text: they are cleaned of control sequences and shown as literal
``Content`` (never parsed as markup).
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.content import Content

from ..history import History
from ..snapshot import AlertView, Snapshot
from .pane import Line, Pane
from .text import clean, clock

LEVEL_STYLE = {"error": "$error bold", "warning": "$warning bold", "info": "$primary"}
LEVEL_TAG = {"error": "ERR ", "warning": "WARN", "info": "info"}


def alert_line(a: AlertView, unread: bool = False) -> Content:
    """One alert as ``HH:MM:SS LEVEL kind message`` with the message literal; an unread
    warning or error starts with ``●`` (acknowledged with ``k``)."""
    level = a.level if a.level in LEVEL_STYLE else "info"
    return Content.assemble(
        ("● " if unread else "  ", "$error bold"),
        (clock(a.t), "$foreground-muted"),
        " ",
        (LEVEL_TAG[level], LEVEL_STYLE[level]),
        " ",
        (clean(a.kind, limit=40), "bold"),
        " ",
        Content(clean(a.message)),
    )


class AlertsPane(Pane):
    """The most recent alerts and events, newest first."""

    TITLE = "Alerts & events"
    MAX_LINES = 200

    def __init__(self, **kw):
        super().__init__(**kw)
        self._alerts: tuple[AlertView, ...] | None = None
        self._shown_ack = -1.0
        #: Alerts at or before this time are acknowledged (set by the app's ``k``).
        self.ack_t = 0.0

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="alerts-scroll"):
            yield Line(id="alerts-list")

    def update_snapshot(self, snap: Snapshot, history: History) -> None:
        if snap.alerts == self._alerts and self.ack_t == self._shown_ack:
            return
        self._alerts = snap.alerts
        self._shown_ack = self.ack_t
        lines = [
            alert_line(a, a.t > self.ack_t and a.level in ("warning", "error"))
            for a in snap.alerts[: self.MAX_LINES]
        ]
        unread = sum(1 for a in snap.alerts if a.t > self.ack_t and a.level in ("warning", "error"))
        self.border_subtitle = f"{len(snap.alerts)}" + (
            f" · {unread} new, k acknowledges" if unread else ""
        )
        self.query_one("#alerts-list", Line).show(
            Content("\n").join(lines) if lines else Content("no alerts")
        )
