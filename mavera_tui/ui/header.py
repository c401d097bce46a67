"""The monitor's header line: what it says (target, mode, pause and freeze badges, the
fleet, the limit, the clock, unread alerts, the monitor's own cost, a failed engine read)
and how it is fitted to the terminal's width (the least important parts go first)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

from textual.content import Content

from .. import catalog
from ..snapshot import AlertView, Snapshot
from .text import clean, clock, duration

#: The header markers of the engine's modes (a mode not here has none).
MODE_MARKERS = {
    "demo": "SIMULATOR",  # no key: say so even where the target drops
    "replay": "REPLAY",
    "record": "RECORD",
}


def header_parts(
    snap: Snapshot | None,
    *,
    mode_label: str | None,
    frozen: bool,
    unread: Sequence[AlertView],
    health: str,
    poll_error: str | None,
) -> list[tuple[Content, int]]:
    """The header's parts as (content, drop rank) for :func:`fit_line`: when the line is
    too wide the highest rank goes first; rank 0 always stays (the clock and uptime, the
    state badges, unread alerts)."""
    parts: list[tuple[Content, int]] = [(Content.styled("mavera-tui", "bold"), 3)]
    if snap is not None:
        parts += _state_parts(snap, mode_label, frozen)
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
    if health:
        parts.append((Content.styled(health, "$foreground-muted"), 1))
    if poll_error:
        parts.append((Content.styled(f"engine read failed: {poll_error}", "$error bold"), 0))
    return parts


def _state_parts(snap: Snapshot, mode_label: str | None, frozen: bool) -> list[tuple[Content, int]]:
    """Target, mode and state badges, the fleet, the limit, the clock and uptime."""
    parts = [(Content(clean(snap.target or "unknown target", limit=60)), 4)]
    marker = mode_label or MODE_MARKERS.get(snap.mode)
    if marker:
        parts.append((Content.styled(f" {clean(marker, limit=30)} ", "$warning reverse bold"), 0))
    if snap.paused:
        label = " PLAYBACK PAUSED " if snap.mode == "replay" else " PAUSED "
        parts.append((Content.styled(label, "$error reverse bold"), 0))
    if frozen:
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
    parts.append((Content(f"{clock(snap.t or time.time())} · up {duration(snap.elapsed)}"), 0))
    return parts


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
