"""The Fleet view: every process on a shared key (``--shared``), the shared window with each
process's share, the slots held per capped endpoint, the fleet's credits and its alerts.

Hosts, roles and alert messages come from other processes through Redis: they are cleaned
and shown as literal ``Content``. Each process has its own fill character in the window bar
and its row, so the view reads without colour (NO_COLOR, 16 colours) too.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.content import Content

from .. import catalog
from ..history import History
from ..snapshot import FleetAlert, FleetProcess, FleetState, Snapshot
from .alerts import LEVEL_STYLE, LEVEL_TAG
from .pane import Line, Pane, pack
from .text import clean, clock, num

#: Fill characters of the processes' shares, in the order of the process table.
GLYPHS = "█▓▒#%=+@"
FOREIGN_GLYPH = "x"
FREE_GLYPH = "·"
NOT_SHARED = (
    "This key is not shared: this process keeps its own window, slots and credits.\n\n"
    "To share one key's limits among processes and hosts, give each of them the same "
    "Redis:\n"
    "  mavera-tui --shared redis://HOST:6379/0   (also run, record, proxy)\n"
    "or MAVERA_TUI_REDIS_URL, or [shared] redis_url in the config file.\n"
    "This view then lists every process on the key."
)


def glyph(i: int) -> str:
    """The fill character of the ``i``-th process (beyond the list: the last one)."""
    return GLYPHS[min(i, len(GLYPHS) - 1)]


def window_bar(fleet: FleetState, width: int) -> Content:
    """The shared window as a bar: each process's admissions in its own character, then
    the foreign estimate, then free room (to the key's limit, once it is known)."""
    limit = fleet.limit or max(1, fleet.window_used + fleet.foreign)
    width = max(10, width)
    cells: list[tuple[str, str]] = []
    total = 0
    for i, p in enumerate(fleet.processes):
        total += p.window_share
        cells.append((glyph(i) * p.window_share, "$primary" if i % 2 == 0 else "$secondary"))
    cells.append((FOREIGN_GLYPH * fleet.foreign, "$warning"))
    # Scale every run to the bar's width by its share of the limit, never below one cell
    # for a run that holds anything (a process with 1 of 600 still shows).
    scale = width / max(limit, total + fleet.foreign)
    parts: list[tuple[str, str]] = []
    used = 0
    for text, style in cells:
        if not text:
            continue
        n = max(1, round(len(text) * scale))
        n = min(n, width - used)
        if n <= 0:
            break
        parts.append((text[0] * n, style))
        used += n
    parts.append((FREE_GLYPH * (width - used), "$foreground-muted"))
    return Content.assemble(*parts)


def process_row(i: int, p: FleetProcess, me: str, host_w: int) -> Content:
    """One process: its glyph, host, pid, role, in flight, queued, window share, last seen."""
    mark = "*" if p.proc == me else " "
    host = clean(p.host, limit=host_w)
    status = f"{p.last_seen:.0f}s" if p.last_seen >= 10 else f"{p.last_seen:.1f}s"
    row = (
        f"{host:<{host_w}} {p.pid:>7} {clean(p.role, limit=7):<7} "
        f"{p.in_flight:>5} {p.queued:>6} {p.window_share:>5} {status:>6}"
    )
    parts: list[Content | tuple[str, str] | str] = [
        (glyph(i), "$primary" if i % 2 == 0 else "$secondary"),
        mark,
        " ",
    ]
    if p.alive:
        parts.append(row)
    else:
        parts += [(row, "$foreground-muted strike"), " ", ("DEAD", "$error bold reverse")]
    return Content.assemble(*parts)


def fleet_alert_line(a: FleetAlert, me: str) -> Content:
    """One fleet alert: time, which process raised it (``*`` this one), level, kind,
    message (literal)."""
    level = a.level if a.level in LEVEL_STYLE else "info"
    who = "this process" if a.proc == me else clean(a.proc, limit=28)
    return Content.assemble(
        (clock(a.t), "$foreground-muted"),
        " ",
        (LEVEL_TAG[level], LEVEL_STYLE[level]),
        " ",
        (f"[{who}]", "bold"),
        " ",
        (clean(a.kind, limit=30), "bold"),
        " ",
        Content(clean(a.message)),
    )


def fleet_lines(fleet: FleetState | None, width: int, now: float) -> Content:
    """The whole view as text lines, ``width`` columns wide."""
    if fleet is None:
        return Content(NOT_SHARED)
    out: list[Content] = []
    if fleet.error:
        if fleet.at:
            why = f"last good read {clock(fleet.at)}, {max(0.0, now - fleet.at):.0f} s ago"
        else:
            why = "nothing read yet"
        out.append(
            Content.assemble(
                (" REDIS ", "$error reverse bold"),
                " ",
                Content(clean(f"{fleet.error} ({why})", limit=max(20, width - 8))),
            )
        )
    procs = fleet.processes
    alive = sum(1 for p in procs if p.alive)
    mine = sum(p.window_share for p in procs if p.proc == fleet.me)
    limit = f"/{fleet.limit}" if fleet.limit else " (limit not heard yet)"
    out.append(
        Content.assemble(
            ("Window ", "bold"),
            f"{fleet.window_used + fleet.foreign}{limit}: fleet {fleet.window_used} "
            f"(this process {mine}), foreign {fleet.foreign}",
        )
    )
    out.append(window_bar(fleet, width))
    legend = [f"{glyph(i)} {clean(p.host, limit=14)}:{p.pid}" for i, p in enumerate(procs)]
    legend += [f"{FOREIGN_GLYPH} foreign", f"{FREE_GLYPH} free"]
    out.append(pack(list(legend), width, "  "))
    hold = f"held {fleet.hold_s:.1f} s after a 429" if fleet.hold_s > 0 else "not held"
    slots = []
    for key, n in fleet.slots:
        ep = catalog.ENDPOINTS.get(key)
        cap = f"/{ep.cap}" if ep is not None and ep.cap is not None else ""
        slots.append(f"{clean(key, limit=20)} {n}{cap}")
    out.append(
        Content.assemble(
            ("Key ", "bold"),
            hold,
            " · ",
            ("PARKED (402)", "$error bold") if fleet.parked else "not parked",
            " · ",
            ("Credits ", "bold"),
            f"balance {num(fleet.balance)}, reserved {num(fleet.reserved)}",
        )
    )
    out.append(
        Content.assemble(("Slots ", "bold"), " · ".join(slots) if slots else "no capped endpoint")
    )
    host_w = max(8, min(24, width - 60))  # room left for " DEAD" after a row
    out.append(
        Content.styled(
            f"   {'host':<{host_w}} {'pid':>7} {'role':<7} {'fly':>5} {'queued':>6} "
            f"{'win':>5} {'seen':>6}",
            "bold underline",
        )
    )
    if not procs:
        out.append(Content("   no process on the key (none has sent a heartbeat)"))
    out += [process_row(i, p, fleet.me, host_w) for i, p in enumerate(procs)]
    out.append(Content(f"   {alive} alive of {len(procs)} · * this process"))
    out.append(Content.styled(f"Fleet alerts ({len(fleet.alerts)})", "bold"))
    if not fleet.alerts:
        out.append(Content("  none"))
    out += [fleet_alert_line(a, fleet.me) for a in fleet.alerts]
    return Content("\n").join(out)


class FleetPane(Pane):
    """The Fleet view (a full-size pane: ``v`` or ``F`` to reach it)."""

    TITLE = "Fleet"
    can_focus = False

    def __init__(self, **kw):
        super().__init__(**kw)
        self._shown: tuple[FleetState | None, int, float] | None = None

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="fleet-scroll"):
            yield Line(id="fleet-body")

    def update_snapshot(self, snap: Snapshot, history: History) -> None:
        fleet = snap.fleet
        width = self.text_width
        # Ages in the marker move with the clock: redraw each second, not each tick.
        key = (fleet, width, round(snap.t) if fleet is not None and fleet.error else 0.0)
        if key == self._shown:
            return
        self._shown = key
        if fleet is None:
            self.border_subtitle = "not shared"
        else:
            alive = sum(1 for p in fleet.processes if p.alive)
            where = clean(fleet.redis, limit=40)
            self.border_subtitle = f"{alive} process{'es' if alive != 1 else ''} · {where}"
        self.set_class(fleet is not None and bool(fleet.error), "-warning")
        self.query_one("#fleet-body", Line).show(fleet_lines(fleet, width, snap.t))
