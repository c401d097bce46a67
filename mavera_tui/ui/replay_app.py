"""The replay's app: the monitor plus the time bar and the replay keys (space, arrows, s, g, a).

The engine it shows is a :class:`~mavera_tui.recording.replay.ReplayEngine`, which never
imports textual; this module does, and is imported only when a replay is shown.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual.binding import Binding
from textual.widgets import Footer, Input

from . import app as ui_app
from .app import MaveraApp
from .text import clock
from .timebar import GotoScreen, TimeBar

if TYPE_CHECKING:
    from ..recording.replay import ReplayEngine


class ReplayApp(MaveraApp):
    """The monitor plus the time bar; charts rebuilt when the cursor jumps."""

    # Textual resolves CSS_PATH beside the module that defines the class: point at ui/.
    CSS_PATH = str(Path(ui_app.__file__).parent / "app.tcss")
    BINDINGS = [
        Binding("space", "replay_toggle", "Play/pause", id="replay.toggle", priority=True),
        Binding(
            "left",
            "replay_step(-1)",
            "Step back",
            key_display="←",
            id="replay.back",
            priority=True,
        ),
        Binding(
            "right", "replay_step(1)", "Step", key_display="→", id="replay.step", priority=True
        ),
        Binding("s", "replay_speed", "Speed", id="replay.speed"),
        Binding("g", "replay_goto", "Go to time", id="replay.goto"),
        Binding("a", "replay_next_alert", "Next alert", id="replay.alert"),
    ]
    REPLAY_ACTIONS = frozenset(
        {"replay_toggle", "replay_step", "replay_speed", "replay_goto", "replay_next_alert"}
    )

    def __init__(self, engine: ReplayEngine, **kw: Any):
        kw.setdefault("mode_label", "REPLAY")
        super().__init__(engine, replay_controls=engine, **kw)
        self.replay = engine
        self._generation = -1

    def compose(self) -> Any:
        for w in super().compose():
            if isinstance(w, Footer):
                yield TimeBar(id="timebar")
            yield w

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in self.REPLAY_ACTIONS:
            # Behind a modal, or while typing in an input, the keys are the widget's.
            return len(self.screen_stack) == 1 and not isinstance(self.focused, Input)
        if action in ("new_job", "cancel_job", "cancel_matching"):
            return False  # a recording cannot take jobs: not offered in the footer
        return super().check_action(action, parameters)

    def poll(self) -> None:
        if self.replay.generation != self._generation:
            self._generation = self.replay.generation
            old = self.history
            new = self.replay.history_at(old.bucket_s, old.span_s)
            # Chart panes redraw on a version change: make the new versions unseen.
            for k in new.versions:
                new.versions[k] += old.versions.get(k, 0) + 1
            self.history = new
            self.snap = None
        super().poll()
        self._show_position()

    def _show_position(self) -> None:
        bars = self.main.query(TimeBar)
        if bars:
            bars.first().show(self.replay.position())

    def _moved(self) -> None:
        self.poll()

    def action_replay_toggle(self) -> None:
        self.replay.toggle()
        self._moved()

    def action_replay_step(self, n: int) -> None:
        self.replay.step(int(n))
        self._moved()

    def action_replay_speed(self) -> None:
        self.notify(f"replay speed {self.replay.cycle_speed():g}x")
        self._moved()

    def action_replay_next_alert(self) -> None:
        if self.replay.next_alert() is None:
            self.notify("no alert after this point", severity="warning")
        self._moved()

    def action_replay_goto(self) -> None:
        p = self.replay.position()
        hint = f"recording {clock(p.start)} → {clock(p.end)}; cursor {clock(p.t)}"

        def done(text: str | None) -> None:
            if not text:
                return
            try:
                self.replay.seek(self.replay.parse_goto(text))
            except ValueError as e:
                self.notify(str(e), severity="error")
                return
            self._moved()

        self.push_screen(GotoScreen(hint), done)
