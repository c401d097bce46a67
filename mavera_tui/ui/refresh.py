"""The monitor's refresh: one timer pulls the engine's snapshot, feeds the history and
redraws the visible panes and the header; the operator freezes the display, changes the
rate or acknowledges alerts; a terminal that went away ends the app. A base of
:class:`~mavera_tui.ui.app.MaveraApp`, which holds the state named here."""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING, Any

from textual.app import App
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import Static

from ..control import EngineControl
from ..history import History
from ..snapshot import AlertView, Snapshot
from .alerts import AlertsPane
from .header import Health, fit_line, header_parts
from .pane import Pane
from .text import clean

log = logging.getLogger("mavera_tui.ui")

#: How often (in ticks) to check that the terminal is still there.
TERMINAL_CHECK_TICKS = 4


class Refresh(App[None]):
    """Pull, remember, redraw (the poll and the display's own actions)."""

    REFRESH_RATES = (0.25, 0.5, 1.0, 2.0)

    engine: EngineControl
    history: History
    snap: Snapshot | None
    refresh_s: float
    mode_label: str | None
    layout_name: str
    ticks: int
    frozen: bool
    watch_terminal: bool
    show_health: bool
    ack_t: float
    _poll_error: str | None
    _poll_timer: Any
    _health: Health
    _answers_seen: int
    _answer_t: float | None

    if TYPE_CHECKING:

        @property
        def main(self) -> Screen: ...

    def poll(self) -> None:
        """One tick: read a snapshot, feed the history, update the visible panes."""
        self.ticks += 1
        if self.watch_terminal and not self.is_headless and self.ticks % TERMINAL_CHECK_TICKS == 0:
            if not _terminal_alive():
                self._terminal_lost("terminal gone")
                return
        self._health.sample()
        try:
            snap = self.engine.snapshot()
        except Exception as e:  # the monitor must survive a failing engine read
            log.exception("snapshot failed")
            self._poll_error = clean(f"{type(e).__name__}: {e}", limit=120)
            self._update_header()
            return
        self._poll_error = None
        if snap is None:  # an engine still booting may have nothing to show yet
            return
        if snap is not self.snap:
            self.snap = snap
            if snap.mode != "starting" and snap.t > 0:
                # The placeholder shown while the engine boots has no time: fed to the
                # history it made the charts span 15 minutes they never saw.
                self.history.add(snap)
            self._note_answers(snap)
        try:
            if self.frozen:
                self._update_header()  # says FROZEN and keeps the clock honest
            else:
                self._update_panes()
        except NoMatches:  # a tick racing the app's shutdown: the panes are gone
            log.debug("poll after the panes were removed")

    def _note_answers(self, snap: Snapshot) -> None:
        answers = sum(snap.status_counts.values())
        if answers != self._answers_seen:
            if self._answers_seen >= 0 or answers:
                self._answer_t = snap.t
            self._answers_seen = answers

    def last_answer_t(self, snap: Snapshot) -> float | None:
        """Wall time of the server's last answer: the engine's word, else inferred."""
        return (
            snap.last_answer_t
            if snap.last_answer_t is not None
            else (self._answer_t if snap.requests_total else None)
        )

    def _update_panes(self) -> None:
        snap = self.snap
        if snap is None or self.layout_name == "too_small" or not self.screen_stack:
            return
        self._update_header()
        for pane in self.main.query(Pane):
            if pane.display:
                pane.update_snapshot(snap, self.history)

    def unread_alerts(self) -> list[AlertView]:
        """Warnings and errors newer than the last acknowledgement."""
        if self.snap is None:
            return []
        return [a for a in self.snap.alerts if a.t > self.ack_t and a.level in ("warning", "error")]

    def _update_header(self) -> None:
        if not self.screen_stack:
            return
        parts = header_parts(
            self.snap,
            mode_label=self.mode_label,
            frozen=self.frozen,
            unread=self.unread_alerts(),
            health=self._health.label() if self.show_health else "",
            poll_error=self._poll_error,
        )
        width = max(20, self.size.width - 2)
        self.main.query_one("#header", Static).update(fit_line(parts, width))

    def _terminal_lost(self, why: str) -> None:
        log.warning("exiting: %s", why)
        self.exit(return_code=1)

    def action_ack_alerts(self) -> None:
        unread = self.unread_alerts()
        if self.snap is not None and self.snap.alerts:
            self.ack_t = max(self.ack_t, max(a.t for a in self.snap.alerts))
        self.notify(f"{len(unread)} alert(s) acknowledged" if unread else "no new alerts")
        self.main.query_one(AlertsPane).ack_t = self.ack_t
        self._update_panes()

    def action_freeze(self) -> None:
        self.frozen = not self.frozen
        self.notify(
            "display frozen: the engine keeps running; f to resume"
            if self.frozen
            else "display live again"
        )
        if not self.frozen:
            self._update_panes()
        else:
            self._update_header()

    def action_refresh_rate(self) -> None:
        rates = self.REFRESH_RATES
        nxt = next((r for r in rates if r > self.refresh_s + 1e-9), rates[0])
        self.refresh_s = nxt
        if self._poll_timer is not None:
            self._poll_timer.stop()
        self._poll_timer = self.set_interval(self.refresh_s, self.poll, name="poll")
        self.notify(f"refreshing every {nxt:g} s")


def _terminal_alive() -> bool:
    """False once stdin/stdout are closed or no longer a terminal (SSH dropped)."""
    try:
        stdin, stdout = sys.__stdin__, sys.__stdout__
        if stdin is None or stdout is None:
            return False
        for stream in (stdin, stdout):
            if stream.closed or not os.isatty(stream.fileno()):
                return False
        import termios

        termios.tcgetattr(stdout.fileno())  # EIO after a hangup
    except (OSError, ValueError):
        return False
    except ImportError:  # pragma: no cover - not POSIX
        return True
    return True
