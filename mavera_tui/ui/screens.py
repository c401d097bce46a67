"""Small screens: help (every binding), confirmations, and a job's detail (its attempts)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.css.query import NoMatches
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from ..snapshot import JobView
from .jobs import caller_of
from .text import clean, clock, num


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
            for key, desc in self.rows
        )
        with Vertical(id="help"):
            yield Label("Keys", id="help-title")
            with VerticalScroll(id="help-scroll"):
                yield Static(text, id="help-keys")
            yield Label("esc / q / ? closes this help", id="help-hint")

    def action_dismiss_help(self) -> None:
        if self.is_current:  # a key typed ahead may arrive after the first dismiss
            self.dismiss(None)


class Confirm(ModalScreen[bool]):
    """A yes/no question; ``y`` or the first button says yes, ``n`` or escape says no."""

    BINDINGS = [
        Binding("y", "answer(True)", "Yes", id="confirm.yes"),
        Binding("n,escape", "answer(False)", "No", id="confirm.no"),
    ]

    def __init__(self, question: str | Content, yes: str = "Yes (y)", no: str = "No (n)"):
        super().__init__()
        # Literal: the question may name jobs, whose ids come from job files.
        self.question = question if isinstance(question, Content) else Content(question)
        self.yes_label, self.no_label = yes, no

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm"):
            yield Static(self.question, id="confirm-text")
            yield Button(self.yes_label, id="yes", variant="error")
            yield Button(self.no_label, id="no", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()  # enter on a stray key must not say yes

    _answered = False

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.action_answer(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        # Keys typed ahead (``y`` then enter in one burst) reach the screen after it has
        # answered: a second dismiss would pop the monitor's own screen.
        if self._answered:
            return
        self._answered = True
        self.dismiss(yes)


class ConfirmQuit(Confirm):
    """Asks before quitting while jobs are in flight or queued."""

    def __init__(self, in_flight: int, queued: int = 0, durable: bool | None = None):
        self.in_flight, self.queued = in_flight, queued
        lines = []
        if in_flight:
            lines.append(
                f"{in_flight} job(s) in flight: already sent, so the server may "
                "still do and charge them, but their answers are lost"
                + (" (marked outcome unknown on the next start)." if durable else ".")
            )
        if queued:
            if durable:
                lines.append(
                    f"{queued} queued job(s) stay in the database and resume on "
                    "the next start with the same --db."
                )
            else:
                lines.append(
                    f"{queued} queued job(s) are not saved (no --db): they are lost on quit."
                )
        lines.append("Quit anyway?")
        super().__init__("\n".join(lines), yes="Quit (y)", no="Stay (n)")


#: What a job-detail row shows of a ledger attempt, in order.
ATTEMPT_COLUMNS = ("sent", "#", "status", "kind", "credits", "latency", "rl left", "retry")


def attempt_cells(a: dict[str, Any]) -> list[str]:
    """One ledger attempt as display strings (server text is handled by the caller)."""
    lat = a.get("latency")
    ra = a.get("retry_after")
    return [
        clock(float(a.get("t") or 0.0)),
        str(a.get("attempt", "")),
        "—" if a.get("status") is None else str(a["status"]),
        clean(a.get("kind") or "", limit=16)
        + (f" {clean(a['code'], limit=24)}" if a.get("code") else ""),
        "—" if a.get("credits_used") is None else num(a["credits_used"]),
        "—" if lat is None else f"{lat:.2f}s",
        "—" if a.get("rl_remaining") is None else f"{a['rl_remaining']}/{a.get('rl_limit') or '?'}",
        "—" if ra is None else f"{ra:g}s",
    ]


class JobDetail(ModalScreen[None]):
    """One job: its state and estimate against its charge, and every attempt in the ledger.

    ``attempts`` is None while loading, or when the engine keeps no ledger (no --db).
    """

    BINDINGS = [Binding("escape,q,enter", "close", "Close", id="detail.close")]

    def __init__(
        self, job: JobView, attempts: Sequence[dict[str, Any]] | None = None, note: str = ""
    ):
        super().__init__()
        self.job = job
        self.attempts = attempts
        self.note = note

    def compose(self) -> ComposeResult:
        with Vertical(id="detail"):
            yield Label(Content(f"Job {clean(self.job.id, limit=60)}"), id="detail-title")
            yield Static(self._summary(), id="detail-summary")
            with VerticalScroll(id="detail-scroll"):
                yield Static(self._attempts(), id="detail-attempts")
            with Horizontal(id="detail-hint"):
                yield Label("esc / q / enter closes", classes="legend")

    def show_attempts(self, attempts: Sequence[dict[str, Any]] | None, note: str = "") -> None:
        """Fill in the attempts once they are read (the screen opens before the read)."""
        self.attempts, self.note = attempts, note
        try:
            self.query_one("#detail-attempts", Static).update(self._attempts())
        except NoMatches:  # not composed yet: compose shows them
            pass

    def on_mount(self) -> None:
        self.query_one("#detail-attempts", Static).update(self._attempts())

    def _summary(self) -> Content:
        j = self.job
        charge = "not charged yet" if j.actual is None else f"charged {num(j.actual)}"
        ratio = (
            f" ({j.actual / j.estimate:.0%} of the estimate)"
            if (j.actual is not None and j.estimate)
            else ""
        )
        lines = [
            Content.assemble(
                ("state ", "$foreground-muted"),
                (clean(j.state), "bold"),
                ("  endpoint ", "$foreground-muted"),
                Content(f"{clean(j.method)} {clean(j.path, limit=60)}"),
                ("  priority ", "$foreground-muted"),
                str(j.priority),
            ),
            Content.assemble(
                ("estimate ", "$foreground-muted"),
                num(j.estimate),
                " → ",
                (charge, "bold"),
                ratio,
                ("  attempts ", "$foreground-muted"),
                str(j.attempts),
            ),
            Content.assemble(
                ("created ", "$foreground-muted"),
                clock(j.created) if j.created else "—",
                ("  updated ", "$foreground-muted"),
                clock(j.updated) if j.updated else "—",
            ),
        ]
        who = caller_of(j.id)
        if who is not None:
            lines.append(
                Content.assemble(
                    ("caller ", "$foreground-muted"),
                    (who, "bold"),
                    ("  (the proxy's X-Mavera-Caller; filter: caller:", "$foreground-muted"),
                    (who, "$foreground-muted"),
                    (")", "$foreground-muted"),
                )
            )
        if j.reason:
            lines.append(
                Content.assemble(
                    ("reason ", "$foreground-muted"), Content(clean(j.reason, limit=400))
                )
            )
        return Content("\n").join(lines)

    def _attempts(self) -> Content:
        if self.attempts is None:
            return Content(self.note or "reading the ledger…")
        if not self.attempts:
            return Content(self.note or "no attempt in the ledger yet (not sent)")
        rows = [list(ATTEMPT_COLUMNS)] + [attempt_cells(a) for a in self.attempts]
        widths = [max(len(r[i]) for r in rows) for i in range(len(ATTEMPT_COLUMNS))]
        out: list[Content] = [
            Content.styled(
                "  ".join(c.ljust(w) for c, w in zip(rows[0], widths, strict=True)), "bold"
            )
        ]
        for a, cells in zip(self.attempts, rows[1:], strict=True):
            out.append(Content("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))))
            msg = a.get("message") or ""
            if msg:
                # The server's words, literally (Content never parses markup).
                out.append(
                    Content.assemble(
                        ("    server: ", "$foreground-muted"), Content(clean(msg, limit=500))
                    )
                )
        if self.note:
            out.append(Content.styled(self.note, "$foreground-muted"))
        return Content("\n").join(out)

    def action_close(self) -> None:
        if self.is_current:  # a key typed ahead may arrive after the first dismiss
            self.dismiss(None)


class PriorityScreen(ModalScreen[int | None]):
    """Asks for a job's new priority; enter applies (the confirmation), escape keeps it."""

    BINDINGS = [Binding("escape", "cancel", "Keep", id="priority.cancel")]

    def __init__(self, job: JobView, bounds: tuple[int, int]):
        super().__init__()
        self.job = job
        self.bounds = bounds

    def compose(self) -> ComposeResult:
        lo, hi = self.bounds
        with Vertical(id="prio-box"):
            yield Static(
                Content(
                    f"Priority of {clean(self.job.id, limit=60)} (now "
                    f"{self.job.priority}; {lo} to {hi}, higher goes first)"
                ),
                id="prio-text",
            )
            yield Input(str(self.job.priority), id="prio-input", type="integer")
            yield Label("enter applies · esc keeps it", id="prio-error", markup=False)

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        lo, hi = self.bounds
        try:
            value = int(event.value.strip())
        except ValueError:
            value = None
        if value is None or not lo <= value <= hi:
            self.query_one("#prio-error", Label).update(f"a whole number from {lo} to {hi}, please")
            return
        if self.is_current:
            self.dismiss(value)

    def action_cancel(self) -> None:
        if self.is_current:
            self.dismiss(None)
