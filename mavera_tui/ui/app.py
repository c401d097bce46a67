"""The monitor app: one timer pulls engine snapshots, feeds History and updates the panes.

``create_app`` is the one factory the CLI, the tests and the screenshot command share; the
engine is injected, so a test can hand in a frozen state and a replay can hand in a reader.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Container
from textual.content import Content
from textual.css.query import NoMatches
from textual.events import Resize
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static, Tab, Tabs

from .. import catalog
from ..control import EngineControl
from ..history import History
from ..snapshot import Snapshot
from .alerts import AlertsPane
from .burn import BurnPane
from .form import JobForm
from .headroom import HeadroomPane
from .jobs import JobsPane
from .pane import Pane
from .queue import QueuePane
from .screens import ConfirmQuit, HelpScreen
from .slots import SlotsPane
from .text import clean, clock, duration

log = logging.getLogger("mavera_tui.ui")

#: Below this the layout cannot show the four core panes legibly.
MIN_SIZE = (60, 20)
#: From this size on, every pane is on screen at once with its chart.
WIDE_SIZE = (120, 40)
#: In the compact layout, charts are shown only from this height on.
CHARTS_MIN_HEIGHT = 30
VIEWS = ("overview", "jobs", "alerts")
#: How often (in ticks) to check that the terminal is still there.
TERMINAL_CHECK_TICKS = 4


class MaveraApp(App[None]):
    """Live monitor of the engine's snapshots; sends commands through EngineControl."""

    CSS_PATH = "app.tcss"
    TITLE = "mavera-tui"
    BINDINGS = [
        Binding("q", "quit_app", "Quit", id="quit"),
        Binding("question_mark", "help", "Help", key_display="?", id="help"),
        Binding("n", "new_job", "New job", id="new_job"),
        Binding("p", "toggle_pause", "Pause/resume", id="pause"),
        Binding("c", "cancel_job", "Cancel job", id="cancel_job"),
        Binding("slash", "filter_jobs", "Filter jobs", key_display="/", id="filter_jobs"),
        Binding("v", "next_view", "Next view", id="next_view"),
    ]

    def __init__(self, engine: EngineControl, *, refresh: float = 0.5,
                 mode_label: str | None = None, replay_controls: Any = None,
                 debug_log: str | None = None, history: History | None = None,
                 watch_terminal: bool = True,
                 after_first_frame: Callable[[], Awaitable[None]] | None = None):
        if debug_log:
            _log_to(debug_log)
        super().__init__()
        self.engine = engine
        self.refresh_s = max(0.05, float(refresh))
        self.mode_label = mode_label
        self.replay_controls = replay_controls
        self.history = history if history is not None else History()
        self.watch_terminal = watch_terminal
        self.snap: Snapshot | None = None
        self.view = "overview"
        self.layout_name = "wide"
        self.ticks = 0
        self._poll_error: str | None = None
        self._after_first_frame = after_first_frame

    # --- layout ---------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Container(id="root"):
            yield Static("", id="header", markup=False)
            yield Tabs(Tab("Overview", id="overview"), Tab("Jobs", id="jobs"),
                       Tab("Alerts", id="alerts"), id="views")
            with Container(id="panes"):
                yield HeadroomPane(id="headroom")
                yield BurnPane(id="burn")
                yield QueuePane(id="queue")
                yield SlotsPane(id="slots")
                yield AlertsPane(id="alerts-pane")
                yield JobsPane(id="jobs-pane")
        yield Static("", id="too-small", markup=False)
        yield Footer()

    @property
    def main(self) -> Screen:
        """The monitor's own screen (``self.screen`` may be a modal on top of it)."""
        return self.screen_stack[0]

    def on_ready(self) -> None:
        # The first frame is on screen: now start what would have delayed it (the live
        # engine's start-up: imports, the store, the first balance request).
        if self._after_first_frame is not None:
            self.run_worker(self._after_first_frame(), name="after-first-frame")

    def on_mount(self) -> None:
        self._apply_layout(self.size.width, self.size.height)
        self.poll()
        self.set_interval(self.refresh_s, self.poll, name="poll")
        if not self.is_headless:
            try:
                loop = asyncio.get_running_loop()
                loop.add_signal_handler(signal.SIGHUP, self._terminal_lost, "SIGHUP")
            except (NotImplementedError, RuntimeError, ValueError):  # pragma: no cover
                pass
        log.info("monitor started: refresh %.2fs, size %s", self.refresh_s, self.size)

    def on_resize(self, event: Resize) -> None:
        self._apply_layout(event.size.width, event.size.height)

    def _apply_layout(self, width: int, height: int) -> None:
        root = self.main.query_one("#root")
        too_small = width < MIN_SIZE[0] or height < MIN_SIZE[1]
        wide = width >= WIDE_SIZE[0] and height >= WIDE_SIZE[1]
        self.layout_name = "too_small" if too_small else "wide" if wide else "compact"
        root.display = not too_small
        self.main.query_one(Footer).display = not too_small
        small = self.main.query_one("#too-small", Static)
        small.display = too_small
        small.update(f"terminal too small, need {MIN_SIZE[0]}x{MIN_SIZE[1]}"
                     f" (now {width}x{height})")
        root.set_class(not wide, "-compact")
        root.set_class(not wide and height < CHARTS_MIN_HEIGHT, "-no-charts")
        for v in VIEWS:
            root.set_class(v == self.view, f"-view-{v}")
        if self.snap is not None:
            self.call_after_refresh(self._update_panes)

    def on_tabs_tab_activated(self, event: Tabs.TabActivated) -> None:
        if event.tab.id in VIEWS:
            self._set_view(event.tab.id)

    def _set_view(self, view: str) -> None:
        if view == self.view:
            return
        self.view = view
        tabs = self.main.query_one(Tabs)
        if tabs.active != view:
            tabs.active = view
        self._apply_layout(self.size.width, self.size.height)

    # --- the poll ----------------------------------------------------------------------------

    def poll(self) -> None:
        """One tick: read a snapshot, feed the history, update the visible panes."""
        self.ticks += 1
        if self.watch_terminal and not self.is_headless and self.ticks % TERMINAL_CHECK_TICKS == 0:
            if not _terminal_alive():
                self._terminal_lost("terminal gone")
                return
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
            self.history.add(snap)
        try:
            self._update_panes()
        except NoMatches:  # a tick racing the app's shutdown: the panes are gone
            log.debug("poll after the panes were removed")

    def _update_panes(self) -> None:
        snap = self.snap
        if snap is None or self.layout_name == "too_small":
            return
        self._update_header()
        for pane in self.main.query(Pane):
            if pane.display:
                pane.update_snapshot(snap, self.history)

    def _update_header(self) -> None:
        snap = self.snap
        parts: list[tuple[str, str] | str | Content] = [("mavera-tui", "bold")]
        if snap is not None:
            parts += [" │ ", Content(clean(snap.target or "unknown target", limit=60))]
            marker = self.mode_label or {"demo": "DEMO", "replay": "REPLAY",
                                         "record": "RECORD"}.get(snap.mode)
            if marker:
                parts += [" ", (f" {clean(marker, limit=30)} ", "$warning reverse bold")]
            if snap.paused:
                parts += [" ", (" PAUSED ", "$error reverse bold")]
            tier = catalog.tier_for_limit(snap.limit)
            parts += [" │ ", f"{tier or 'limit'} {snap.limit}/min", " │ ",
                      f"{clock(snap.t)}", f" · up {duration(snap.elapsed)}"]
        if self._poll_error:
            parts += [" │ ", (f"engine read failed: {self._poll_error}", "$error bold")]
        self.main.query_one("#header", Static).update(Content.assemble(*parts))

    # --- terminal loss -----------------------------------------------------------------------

    def _terminal_lost(self, why: str) -> None:
        log.warning("exiting: %s", why)
        self.exit(return_code=1)

    # --- actions -----------------------------------------------------------------------------

    MONITOR_ACTIONS = frozenset({"quit_app", "help", "new_job", "toggle_pause", "cancel_job",
                                 "filter_jobs", "next_view"})

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # A modal (form, help, confirm) owns the keyboard: no pausing from behind it.
        if action in self.MONITOR_ACTIONS and len(self.screen_stack) > 1:
            return False
        return True

    def action_quit_app(self) -> None:
        in_flight = self.snap.in_flight if self.snap is not None else 0
        if in_flight > 0:
            self.push_screen(ConfirmQuit(in_flight),
                             lambda yes: self.exit() if yes else None)
        else:
            self.exit()

    def action_help(self) -> None:
        self.push_screen(HelpScreen(help_rows(self)))

    def action_new_job(self) -> None:
        if self.snap is None:
            return

        def done(job_id: str | None) -> None:
            if job_id:
                self.notify(f"submitted {job_id}", title="New job")
                self.main.query_one(JobsPane).show_next_at_once()
                self.poll()

        self.push_screen(JobForm(self.engine, self.snap), done)

    def action_toggle_pause(self) -> None:
        paused = self.snap.paused if self.snap is not None else False
        if paused:
            self.engine.resume()
            self.notify("dispatch resumed")
        else:
            self.engine.pause()
            self.notify("dispatch paused: in-flight jobs finish, nothing new is sent")
        log.info("operator %s dispatch", "resumed" if paused else "paused")
        self.poll()

    def action_cancel_job(self) -> None:
        job_id = self.main.query_one(JobsPane).selected_job
        if job_id is None:
            self.notify("no job selected: move the cursor in the jobs table",
                        severity="warning")
            return
        ok = self.engine.cancel(job_id)
        self.notify(Content(f"cancelled {clean(job_id)}" if ok
                            else f"{clean(job_id)} cannot be cancelled (unknown or final)"),
                    severity="information" if ok else "warning")
        self.poll()

    def action_filter_jobs(self) -> None:
        if self.layout_name == "compact":
            self._set_view("jobs")
        self.main.query_one(JobsPane).open_filter()

    def action_next_view(self) -> None:
        self._set_view(VIEWS[(VIEWS.index(self.view) + 1) % len(VIEWS)])
        if self.view == "jobs":
            self.main.query_one(DataTable).focus()


def help_rows(app: App) -> list[tuple[str, str]]:
    """(key, description) for every binding of the monitor, the palette and the form."""
    rows = [(b.key_display or b.key, b.description) for b in MaveraApp.BINDINGS
            if isinstance(b, Binding)]
    rows.append(("ctrl+p", "Command palette"))
    rows.append(("tab / shift+tab", "Move focus between panes and fields"))
    rows.append(("↑ ↓ in jobs", "Select a job (for c)"))
    rows.append(("esc in filter", "Clear the jobs filter"))
    rows += [(f"{b.key} in form", b.description) for b in JobForm.BINDINGS
             if isinstance(b, Binding)]
    rows.append(("enter on Submit", "Submit the job"))
    return rows


def create_app(engine: EngineControl, *, refresh: float = 0.5, mode_label: str | None = None,
               replay_controls: Any = None, debug_log: str | None = None,
               history: History | None = None, watch_terminal: bool = True,
               after_first_frame: Callable[[], Awaitable[None]] | None = None) -> MaveraApp:
    """Build the monitor over ``engine``.

    ``refresh`` is the poll interval in seconds; ``mode_label`` overrides the header marker
    (DEMO/REPLAY); ``debug_log`` is a file that receives DEBUG logging; ``history`` seeds
    the charts (replay, demo screenshots); ``watch_terminal`` exits when the TTY goes away;
    ``after_first_frame`` is awaited (as a worker) once the first frame is drawn.
    """
    return MaveraApp(engine, refresh=refresh, mode_label=mode_label,
                     replay_controls=replay_controls, debug_log=debug_log, history=history,
                     watch_terminal=watch_terminal, after_first_frame=after_first_frame)


def _terminal_alive() -> bool:
    """False once stdin/stdout are closed or no longer a terminal (SSH dropped)."""
    try:
        for stream in (sys.__stdin__, sys.__stdout__):
            if stream is None or stream.closed or not os.isatty(stream.fileno()):
                return False
        import termios

        termios.tcgetattr(sys.__stdout__.fileno())  # EIO after a hangup
    except (OSError, ValueError):
        return False
    except ImportError:  # pragma: no cover - not POSIX
        return True
    return True


def _log_to(path: str) -> None:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("mavera_tui")
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
