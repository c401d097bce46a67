"""The replay time bar: where the cursor is in the recording, play state, speed; and the
jump-to-time dialog. Renders only what the replay engine reports (``ReplayPosition``)."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from .text import clock, duration


class TimeBar(Static):
    """One line: ▶/❚❚, speed, time of the cursor, a progress track, index, keys."""

    DEFAULT_CSS = """
    TimeBar {
        /* In the flow under the panes: docked, it would sit under the Footer. */
        height: 1;
        padding: 0 1;
        background: $panel;
        color: $foreground;
    }
    """

    def __init__(self, **kw: Any):
        super().__init__("", markup=False, **kw)
        self.plain = ""

    _pos: Any = None

    def on_resize(self) -> None:
        if self._pos is not None:
            self.show(self._pos)

    KEYS = "space play · ←/→ step · s speed · g go to · a next alert"

    def show(self, pos: Any) -> None:
        """Redraw from a ReplayPosition, fitted to the bar's width: the key hints go first
        (the footer and help list them), then the index; the track takes what is left."""
        state = "▶ playing" if pos.playing else "❚❚ playback paused"
        span = max(pos.end - pos.start, 1e-9)
        frac = min(1.0, max(0.0, (pos.t - pos.start) / span))
        self._pos = pos
        avail = (self.size.width or self.app.size.width) - 2
        head = f"REPLAY {state} {pos.speed:g}x │ "
        at = f"{clock(pos.t)} (+{duration(pos.t - pos.start)} of {duration(span)})"
        index = f" │ {pos.index + 1}/{pos.total}"
        keys = f" │ {self.KEYS}"
        fixed = len(head) + len(at) + len(" │ ")
        optional = [index, keys]
        while optional and fixed + sum(map(len, optional)) + 10 > avail:
            optional.pop()
        width = max(6, min(60, avail - fixed - sum(map(len, optional))))
        filled = int(round(frac * (width - 1)))
        track = "━" * filled + "●" + "─" * (width - 1 - filled)
        tail = "".join(optional)
        self.plain = f"{head}{at} │ {track}{tail}"
        parts: list[Any] = [
            (" REPLAY ", "$warning reverse bold"),
            " ",
            (state, "bold"),
            f" {pos.speed:g}x │ {at} │ ",
            (track, "$accent"),
        ]
        if index in optional:
            parts.append(index)
        if keys in optional:
            parts.append((keys, "$foreground-muted"))
        self.update(Content.assemble(*parts))


class GotoScreen(ModalScreen[str | None]):
    """Asks for a time to jump to; dismisses with the text, or None on escape."""

    DEFAULT_CSS = """
    GotoScreen { align: center middle; }
    GotoScreen > Vertical {
        width: 64; height: auto; padding: 1 2;
        border: round $accent; background: $surface;
    }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="goto.cancel")]

    def __init__(self, hint: str):
        super().__init__()
        self.hint = hint

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("Go to time", markup=False)
            yield Static(self.hint, markup=False, classes="legend")
            yield Input(
                placeholder="12:30:00, 2024-05-01T12:30, +5m, -90s, 1714566600", id="goto-input"
            )

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if self.is_current:  # a key typed ahead may arrive after the first dismiss
            self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        if self.is_current:
            self.dismiss(None)
