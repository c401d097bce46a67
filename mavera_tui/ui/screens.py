"""Small screens: help (every binding), quit confirmation, and "terminal too small"."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static


class HelpScreen(ModalScreen[None]):
    """Lists every binding of the monitor and of the form."""

    BINDINGS = [Binding("escape,q,question_mark", "dismiss_help", "Close", id="help.close")]

    def __init__(self, rows: list[tuple[str, str]]):
        super().__init__()
        self.rows = rows

    def compose(self) -> ComposeResult:
        width = max(len(k) for k, _ in self.rows)
        text = Content("\n").join(
            Content.assemble((key.ljust(width), "$accent bold"), "  ", desc)
            for key, desc in self.rows)
        with Vertical(id="help"):
            yield Label("Keys", id="help-title")
            yield Static(text, id="help-keys")
            yield Label("esc / q / ? closes this help", id="help-hint")

    def action_dismiss_help(self) -> None:
        self.dismiss(None)


class ConfirmQuit(ModalScreen[bool]):
    """Asks before quitting while jobs are in flight."""

    BINDINGS = [Binding("y", "answer(True)", "Quit", id="confirm.yes"),
                Binding("n,escape", "answer(False)", "Stay", id="confirm.no")]

    def __init__(self, in_flight: int):
        super().__init__()
        self.in_flight = in_flight

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm"):
            yield Static(Content(f"{self.in_flight} job(s) in flight. Quit anyway?"),
                         id="confirm-text")
            yield Button("Quit (y)", id="yes", variant="error")
            yield Button("Stay (n)", id="no", variant="primary")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)
