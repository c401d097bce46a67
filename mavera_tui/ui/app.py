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
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Container
from textual.content import Content
from textual.css.query import NoMatches
from textual.events import Resize
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static, Tab, Tabs

from .. import catalog
from ..control import EngineControl, OperatorControl
from ..history import History
from ..snapshot import Snapshot
from .alerts import AlertsPane
from .burn import BurnPane
from .fleet import FleetPane
from .form import JobForm
from .headroom import HeadroomPane
from .job_commands import JobCommands
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
VIEWS = ("overview", "jobs", "alerts", "fleet")
#: How often (in ticks) to check that the terminal is still there.
TERMINAL_CHECK_TICKS = 4


class MaveraApp(JobCommands):
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
    REFRESH_RATES = (0.25, 0.5, 1.0, 2.0)

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

    # --- the poll ----------------------------------------------------------------------------

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

    def unread_alerts(self) -> list:
        """Warnings and errors newer than the last acknowledgement."""
        if self.snap is None:
            return []
        return [a for a in self.snap.alerts if a.t > self.ack_t and a.level in ("warning", "error")]

    def _update_header(self) -> None:
        if not self.screen_stack:
            return
        snap = self.snap
        width = max(20, self.size.width - 2)
        # (content, drop rank): when the line is too wide, the highest rank goes first;
        # rank 0 always stays (the clock and uptime, the state badges, unread alerts).
        parts: list[tuple[Content, int]] = [(Content.styled("mavera-tui", "bold"), 3)]
        if snap is not None:
            parts.append((Content(clean(snap.target or "unknown target", limit=60)), 4))
            marker = self.mode_label or {
                "demo": "SIMULATOR",  # no key: say so even where the target drops
                "replay": "REPLAY",
                "record": "RECORD",
            }.get(snap.mode)
            if marker:
                parts.append(
                    (Content.styled(f" {clean(marker, limit=30)} ", "$warning reverse bold"), 0)
                )
            if snap.paused:
                label = " PLAYBACK PAUSED " if snap.mode == "replay" else " PAUSED "
                parts.append((Content.styled(label, "$error reverse bold"), 0))
            if self.frozen:
                parts.append((Content.styled(" FROZEN (f) ", "$accent reverse bold"), 0))
            fleet = snap.fleet
            if fleet is not None and fleet.error and fleet.error != "not read yet":
                parts.append((Content.styled(" FLEET: REDIS AWAY (F) ", "$error reverse bold"), 0))
            elif fleet is not None:
                alive = sum(1 for p in fleet.processes if p.alive)
                parts.append((Content(f"fleet {alive}"), 2))
            if connecting(snap):
                parts.append((Content.styled("connecting…", "italic"), 0))
            else:
                tier = catalog.tier_for_limit(snap.limit)
                parts.append((Content(f"{tier or 'limit'} {snap.limit}/min"), 2))
            # The boot placeholder has no time of its own: show the wall clock, not 1970.
            parts.append(
                (Content(f"{clock(snap.t or time.time())} · up {duration(snap.elapsed)}"), 0)
            )
            unread = self.unread_alerts()
            if unread:
                worst = "$error" if any(a.level == "error" for a in unread) else "$warning"
                parts.append(
                    (
                        Content.styled(
                            f" ⚑ {len(unread)} new alert{'s' if len(unread) != 1 else ''} (k) ",
                            f"{worst} reverse bold",
                        ),
                        0,
                    )
                )
        health = self._health.label() if self.show_health else ""
        if health:
            parts.append((Content.styled(health, "$foreground-muted"), 1))
        if self._poll_error:
            parts.append(
                (Content.styled(f"engine read failed: {self._poll_error}", "$error bold"), 0)
            )
        self.main.query_one("#header", Static).update(fit_line(parts, width))

    # --- terminal loss -----------------------------------------------------------------------

    def _terminal_lost(self, why: str) -> None:
        log.warning("exiting: %s", why)
        self.exit(return_code=1)

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


def connecting(snap: Snapshot) -> bool:
    """True until the engine has an answer: the limit shown before that is a default."""
    return snap.mode == "starting" or (
        snap.requests_total == 0 and snap.remaining is None and not snap.status_counts
    )


def fit_line(parts: list[tuple[Content, int]], width: int, sep: str = " │ ") -> Content:
    """Join parts with ``sep``, dropping the highest-ranked droppable parts (rank > 0) until
    the line fits ``width``; a part of rank 4 (the target) is shortened before it goes."""
    keep = list(parts)

    def length(ps: list[tuple[Content, int]]) -> int:
        return sum(c.cell_length for c, _ in ps) + len(sep) * max(0, len(ps) - 1)

    while length(keep) > width:
        ranked = [p for p in keep if p[1] > 0]
        if not ranked:
            break
        worst = max(ranked, key=lambda p: p[1])
        if worst[1] == 4:
            over = length(keep) - width
            c = worst[0]
            if c.cell_length - over >= 12:
                i = keep.index(worst)
                keep[i] = (Content(c.plain[: c.cell_length - over - 1] + "…"), 4)
                continue
        keep.remove(worst)
    return Content(sep).join(c for c, _ in keep)


class Health:
    """The monitor's own cost: CPU (% of one core, over the last few seconds) and RSS."""

    EVERY = 2.0

    def __init__(self) -> None:
        self._t = time.monotonic()
        self._cpu_t = time.process_time()
        self.cpu: float | None = None
        self.rss_mb: float | None = None

    def sample(self) -> None:
        now = time.monotonic()
        if now - self._t < self.EVERY:
            return
        cpu_now = time.process_time()
        self.cpu = 100.0 * (cpu_now - self._cpu_t) / (now - self._t)
        self._t, self._cpu_t = now, cpu_now
        self.rss_mb = _rss_mb()

    def label(self) -> str:
        if self.cpu is None:  # the first CPU figure needs a couple of seconds of run
            self.rss_mb = self.rss_mb if self.rss_mb is not None else _rss_mb()
            return f"mem {self.rss_mb:.0f}M" if self.rss_mb else ""
        mem = f" mem {self.rss_mb:.0f}M" if self.rss_mb else ""
        return f"cpu {self.cpu:.0f}%{mem}"


def _rss_mb() -> float | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


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


def _log_to(path: str) -> None:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("mavera_tui")
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
