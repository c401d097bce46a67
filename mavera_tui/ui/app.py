"""The monitor app: one timer pulls engine snapshots, feeds History and updates the panes.

This module is the app's frame: its panes and their layout for the terminal's size, the
views, the keys and the command palette, and the operator's app-wide actions (quit, help,
pause). The refresh (the poll, freeze, refresh rate, acknowledging alerts) is
:mod:`.refresh`, the header line :mod:`.header`, the commands on jobs :mod:`.job_commands`.

``create_app`` is the one factory the CLI, the tests and the screenshot command share; the
engine is injected, so a test can hand in a frozen state and a replay can hand in a reader.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Container
from textual.events import Resize
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static, Tab, Tabs

from ..control import EngineControl, OperatorControl
from ..history import History
from ..snapshot import Snapshot
from .alerts import AlertsPane
from .burn import BurnPane
from .fleet import FleetPane
from .form import JobForm

# fit_line and connecting are the header's (ui/header.py); kept importable from here.
from .header import Health
from .header import connecting as connecting
from .header import fit_line as fit_line
from .headroom import HeadroomPane
from .job_commands import JobCommands
from .jobs import JobsPane
from .queue import QueuePane
from .refresh import Refresh
from .refresh import _terminal_alive as _terminal_alive
from .screens import ConfirmQuit, HelpScreen
from .slots import SlotsPane

log = logging.getLogger("mavera_tui.ui")

#: Below this the layout cannot show the four core panes legibly.
MIN_SIZE = (60, 20)
#: From this size on, every pane is on screen at once with its chart.
WIDE_SIZE = (120, 40)
#: In the compact layout, charts are shown only from this height on.
CHARTS_MIN_HEIGHT = 30
VIEWS = ("overview", "jobs", "alerts", "fleet")


class MaveraApp(Refresh, JobCommands):
    """Live monitor of the engine's snapshots; sends commands through EngineControl."""

    CSS_PATH = "app.tcss"
    TITLE = "mavera-tui"
    # Footer order is importance order: at 80 columns the footer keeps the first ones.
    BINDINGS = [
        Binding("q", "quit_app", "Quit", id="quit"),
        Binding("v", "next_view", "View", id="next_view"),
        Binding("question_mark", "help", "Help", key_display="?", id="help"),
        Binding("n", "new_job", "New", id="new_job"),
        Binding("p", "toggle_pause", "Pause", id="pause"),
        Binding("c", "cancel_job", "Cancel", id="cancel_job"),
        Binding("slash", "filter_jobs", "Filter", key_display="/", id="filter_jobs"),
        Binding("k", "ack_alerts", "Ack", id="ack_alerts"),
        Binding("f", "freeze", "Freeze", id="freeze"),
        Binding("F", "view('fleet')", "Fleet view", id="fleet_view", show=False),
        Binding("C", "cancel_matching", "Cancel all matching", id="cancel_matching", show=False),
        Binding("R", "retry_matching", "Retry failed matching", id="retry_matching", show=False),
        Binding("H", "job_history", "Job history (store)", id="job_history", show=False),
        Binding(
            "P", "set_priority", "Change the selected job's priority", id="set_priority", show=False
        ),
    ]
    #: (action, palette title, help) for the command palette, beside Textual's own.
    PALETTE = (
        ("new_job", "New job", "Open the new-job form with its live estimate"),
        ("toggle_pause", "Pause / resume dispatch", "In-flight jobs finish; nothing new is sent"),
        ("cancel_job", "Cancel the selected job", "Asks first, naming the job"),
        (
            "cancel_matching",
            "Cancel every queued job matching the filter",
            "Asks first, with the count",
        ),
        (
            "retry_matching",
            "Retry failed jobs matching the filter",
            "Sends them again under new ids; asks first, with the count",
        ),
        ("filter_jobs", "Filter jobs", "Show only jobs whose row holds the text"),
        ("job_history", "Job history", "Page through every job in the store; search, sort"),
        ("job_detail", "Job detail", "The selected job's attempts from the ledger"),
        ("set_priority", "Change priority", "A new priority for the selected waiting job"),
        ("view('overview')", "View: overview", "Headroom, slots, burn and queue"),
        ("view('jobs')", "View: jobs", "The jobs table"),
        ("view('alerts')", "View: alerts", "Alerts and events"),
        ("view('fleet')", "View: fleet", "Every process on a shared key, the shared window"),
        ("ack_alerts", "Acknowledge alerts", "Clear the unread-alert count in the header"),
        ("freeze", "Freeze / unfreeze the display", "Stop redrawing; the engine runs on"),
        ("refresh_rate", "Refresh rate", "Cycle the redraw interval: 0.25, 0.5, 1, 2 s"),
        ("help", "Help: keys", "Every key of the monitor and the form"),
        ("quit_app", "Quit", "Asks first while jobs are in flight or queued"),
    )

    def __init__(
        self,
        engine: EngineControl,
        *,
        refresh: float = 0.5,
        mode_label: str | None = None,
        replay_controls: Any = None,
        debug_log: str | None = None,
        history: History | None = None,
        watch_terminal: bool = True,
        after_first_frame: Callable[[], Awaitable[None]] | None = None,
        show_health: bool = True,
        keys: Mapping[str, str] | None = None,
    ):
        if debug_log:
            _log_to(debug_log)
        super().__init__()
        #: [ui.keys] of the settings: binding id -> key (config.KEY_BINDINGS)
        self.keys = dict(keys or {})
        if self.keys:
            self.set_keymap(self.keys)
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
        self.view_switches = 0
        self.frozen = False
        #: Alerts at or before this wall time are acknowledged (not counted in the header).
        self.ack_t = 0.0
        self._poll_error: str | None = None
        self._after_first_frame = after_first_frame
        self._poll_timer: Any = None
        self._health = Health()
        self.show_health = show_health
        # When the server last answered, inferred from the answer counters when the engine
        # does not say (recordings, test engines).
        self._answers_seen = -1
        self._answer_t: float | None = None

    # --- layout ---------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Container(id="root"):
            yield Static("", id="header", markup=False)
            yield Tabs(
                Tab("Overview", id="overview"),
                Tab("Jobs", id="jobs"),
                Tab("Alerts", id="alerts"),
                Tab("Fleet", id="fleet"),
                id="views",
            )
            with Container(id="panes"):
                yield HeadroomPane(id="headroom")
                yield BurnPane(id="burn")
                yield QueuePane(id="queue")
                yield SlotsPane(id="slots")
                yield AlertsPane(id="alerts-pane")
                yield JobsPane(id="jobs-pane")
            yield FleetPane(id="fleet-pane")
        yield Static("", id="too-small", markup=False)
        yield Footer(compact=True)

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
        self._poll_timer = self.set_interval(self.refresh_s, self.poll, name="poll")
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
        if not self.screen_stack:  # shutting down: nothing to lay out
            return
        root = self.main.query_one("#root")
        too_small = width < MIN_SIZE[0] or height < MIN_SIZE[1]
        wide = width >= WIDE_SIZE[0] and height >= WIDE_SIZE[1]
        self.layout_name = "too_small" if too_small else "wide" if wide else "compact"
        root.display = not too_small
        self.main.query_one(Footer).display = not too_small
        small = self.main.query_one("#too-small", Static)
        small.display = too_small
        small.update(f"terminal too small, need {MIN_SIZE[0]}x{MIN_SIZE[1]} (now {width}x{height})")
        root.set_class(not wide, "-compact")
        root.set_class(not wide and height < CHARTS_MIN_HEIGHT, "-no-charts")
        for v in VIEWS:
            root.set_class(v == self.view, f"-view-{v}")
        if self.snap is not None:
            self.call_after_refresh(self._update_panes)

    def on_tabs_tab_activated(self, event: Tabs.TabActivated) -> None:
        # Only a tab the operator picked (a click) switches the view. Our own setting of
        # ``tabs.active`` posts no message (prevented below), and a message that is stale
        # (its tab is no longer the active one) is dropped: two such messages in flight
        # used to swap the view back and forth for ever (issue 12, defect 1).
        tabs = event.tabs
        if event.tab.id in VIEWS and event.tab.id == tabs.active:
            self._set_view(event.tab.id)

    def _set_view(self, view: str) -> None:
        if view == self.view or not self.screen_stack:
            return
        self.view = view
        self.view_switches += 1
        tabs = self.main.query_one(Tabs)
        if tabs.active != view:
            with self.prevent(Tabs.TabActivated):
                tabs.active = view
        self._apply_layout(self.size.width, self.size.height)

    # --- the command palette -------------------------------------------------------------

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        for cmd in super().get_system_commands(screen):
            if cmd.title != "Quit":  # Textual's quits at once; ours asks first
                yield cmd
        for action, title, helptext in self.PALETTE:
            name = action.split("(")[0]
            if self.check_action(name, ()) is False and name != "quit_app":
                continue
            yield SystemCommand(
                title, helptext, lambda a=action: self.call_later(self.run_action, a)
            )

    async def action_quit(self) -> None:
        # Textual's ctrl+q and any other route to "quit" ask the same question as q.
        self.action_quit_app()

    # --- actions -----------------------------------------------------------------------------

    MONITOR_ACTIONS = frozenset(
        {
            "quit_app",
            "help",
            "new_job",
            "toggle_pause",
            "cancel_job",
            "filter_jobs",
            "next_view",
            "view",
            "ack_alerts",
            "freeze",
            "cancel_matching",
            "retry_matching",
            "job_history",
            "job_detail",
            "refresh_rate",
            "set_priority",
        }
    )
    #: Actions that need the engine's optional OperatorControl extras.
    OPERATOR_ACTIONS = frozenset({"retry_matching", "job_history", "set_priority"})

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # A modal (form, help, confirm) owns the keyboard: no pausing from behind it.
        if action in self.MONITOR_ACTIONS and len(self.screen_stack) > 1:
            return False
        if action in self.OPERATOR_ACTIONS and not isinstance(self.engine, OperatorControl):
            return False
        return True

    def action_quit_app(self) -> None:
        if len(self.screen_stack) > 1 and isinstance(self.screen, ConfirmQuit):
            return
        snap = self.snap
        if snap is not None and snap.mode == "replay":
            self.exit()  # a recording's queue is history: nothing is lost by leaving
            return
        in_flight = snap.in_flight if snap is not None else 0
        queued = snap.queue_depth if snap is not None else 0
        if in_flight > 0 or queued > 0:
            durable = getattr(self.engine, "durable", None)
            self.push_screen(
                ConfirmQuit(in_flight, queued, durable), lambda yes: self.exit() if yes else None
            )
        else:
            self.exit()

    def action_help(self) -> None:
        self.push_screen(HelpScreen(help_rows(self)))

    def action_view(self, view: str) -> None:
        if view == "fleet" or (self.layout_name == "wide" and self.view == "fleet"):
            # The fleet is a view of its own in every layout: F goes there, again back.
            self._set_view("overview" if self.view == "fleet" and view == "fleet" else view)
            return
        if self.layout_name == "wide":
            if view == "jobs":
                self.main.query_one(DataTable).focus()
            return
        self._set_view(view)

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

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id != "jobs-table" or event.row_key.value is None:
            return
        job = self.main.query_one(JobsPane).job(event.row_key.value)
        if job is not None:
            self.open_detail(job)

    def action_next_view(self) -> None:
        self._set_view(VIEWS[(VIEWS.index(self.view) + 1) % len(VIEWS)])
        if self.view == "jobs":
            self.main.query_one(DataTable).focus()


#: Help wording for actions whose footer label is short (the footer must fit 80 columns).
LONG_HELP = {
    "quit_app": "Quit (asks first while jobs are in flight or queued)",
    "quit": "Quit (asks the same as q)",
    "next_view": "View: the next of overview, jobs, alerts (below 120x40), fleet",
    "view('fleet')": "Fleet view: every process on a shared key (F again: back)",
    "new_job": "New job: the form with its live estimate",
    "toggle_pause": "Pause / resume dispatch",
    "cancel_job": "Cancel the selected job (asks first)",
    "filter_jobs": "Filter jobs",
    "ack_alerts": "Acknowledge alerts (clears the header's count)",
    "freeze": "Freeze the display; the engine runs on (f again resumes)",
}


def help_rows(app: App) -> list[tuple[str, str]]:
    """(key, description) for every binding the app offers now (a replay hides the live
    ones), then the palette, the jobs table and, when jobs can be submitted, the form."""
    rows: list[tuple[str, str]] = []
    seen: set[str] = set()
    for cls in type(app).__mro__:
        for b in cls.__dict__.get("BINDINGS", ()):
            if (
                not isinstance(b, Binding)
                or b.key in seen
                or not (b.description or b.action in LONG_HELP)
            ):
                continue
            seen.add(b.key)
            if app.check_action(b.action.split("(")[0], ()) is False and len(app.screen_stack) <= 1:
                continue
            rebound = getattr(app, "keys", {}).get(b.id or "")
            rows.append((rebound or b.key_display or b.key, LONG_HELP.get(b.action, b.description)))
    rows.append(("ctrl+p", "Command palette (every action by name)"))
    rows.append(("tab / shift+tab", "Move focus between panes and fields"))
    rows.append(("↑ ↓ in jobs", "Select a job (marked ▶ and reversed, in any colour mode)"))
    rows.append(("enter in jobs", "Job detail: its attempts from the ledger"))
    rows.append(("o / O in jobs", "Sort by the next column / flip the order (or click a header)"))
    rows.append(("esc in filter", "Clear the jobs filter"))
    if app.check_action("new_job", ()) is not False or len(app.screen_stack) > 1:
        if "n" in seen:
            rows += [
                (f"{b.key} in form", b.description)
                for b in JobForm.BINDINGS
                if isinstance(b, Binding)
            ]
            rows.append(("enter on Submit", "Submit the job"))
    return rows


def create_app(
    engine: EngineControl,
    *,
    refresh: float = 0.5,
    mode_label: str | None = None,
    replay_controls: Any = None,
    debug_log: str | None = None,
    history: History | None = None,
    watch_terminal: bool = True,
    after_first_frame: Callable[[], Awaitable[None]] | None = None,
    show_health: bool = True,
    keys: Mapping[str, str] | None = None,
) -> MaveraApp:
    """Build the monitor over ``engine``.

    ``refresh`` is the poll interval in seconds; ``mode_label`` overrides the header marker
    (SIMULATOR/REPLAY); ``debug_log`` is a file that receives DEBUG logging; ``history`` seeds
    the charts (replay, demo screenshots); ``watch_terminal`` exits when the TTY goes away;
    ``after_first_frame`` is awaited (as a worker) once the first frame is drawn;
    ``show_health=False`` leaves the monitor's own CPU and memory out of the header (the
    snapshot tests and screenshots, which must not change from run to run); ``keys``
    rebinds keys by binding id (the settings' ``[ui.keys]``).
    """
    return MaveraApp(
        engine,
        refresh=refresh,
        mode_label=mode_label,
        replay_controls=replay_controls,
        debug_log=debug_log,
        history=history,
        watch_terminal=watch_terminal,
        after_first_frame=after_first_frame,
        show_health=show_health,
        keys=keys,
    )


def _log_to(path: str) -> None:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("mavera_tui")
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
