"""The one time grammar of recordings: what ``report --since/--until`` and replay's go-to read.

A *duration* is ``90``, ``90s``, ``10m``, ``2h`` or ``1d`` (``ms`` too). A *time* is one of:

- unix seconds: ``1700000000`` (or with a fraction);
- an ISO date-time: ``2024-05-01T12:00`` (local time unless it names a zone);
- a clock time on the recording's first day: ``14:05`` or ``14:05:30``;
- ``start`` or ``end`` of the recording, optionally moved: ``start+5m``, ``end-10m``;
- a duration with a sign, counted from the command's *anchor*: ``-10m``, ``+90s``.
  ``report`` anchors at the end of the recording (``--since -10m`` is the last ten
  minutes); replay anchors at the cursor (``g`` then ``+5m`` moves five minutes on).

Both commands call :func:`parse_time`, so a form one accepts the other accepts too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

__all__ = ["TimeContext", "parse_duration", "parse_time"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIGNED = re.compile(r"^(start|end)?\s*([+-])\s*(.+)$")
_CLOCK = re.compile(r"^\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?$")
FORMS = "unix seconds, ISO 2024-05-01T12:00, HH:MM[:SS], start+5m, end-10m, or -10m / +90s"


def parse_duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``10m``, ``2h`` or ``1d``; ValueError otherwise."""
    m = _DURATION.match(str(text))
    if not m:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90, 90s, 10m, 2h)")
    return float(m.group(1)) * _UNIT[m.group(2)]


@dataclass(frozen=True)
class TimeContext:
    """What relative forms are counted from: the recording's ``start`` and ``end`` (unix
    seconds) and the command's ``anchor`` (report: the end; replay: the cursor)."""

    start: float
    end: float
    anchor: float


def parse_time(text: str, ctx: TimeContext) -> float:
    """Unix seconds for ``text`` in the grammar above; ValueError (one line) otherwise."""
    s = str(text).strip()
    m = _SIGNED.match(s)
    if m:
        base = {"start": ctx.start, "end": ctx.end, None: ctx.anchor}[m.group(1)]
        try:
            d = parse_duration(m.group(3))
        except ValueError:
            raise ValueError(f"not a time: {text!r} (use {FORMS})") from None
        return base + (d if m.group(2) == "+" else -d)
    if s in ("start", "end"):
        return ctx.start if s == "start" else ctx.end
    if _CLOCK.match(s):
        parts = [float(p) for p in s.split(":")]
        h, mnt, sec = (parts + [0.0])[:3]
        if h >= 24 or mnt >= 60 or sec >= 60:
            raise ValueError(f"not a clock time: {text!r} (use HH:MM or HH:MM:SS)")
        day = datetime.fromtimestamp(ctx.start)
        at = day.replace(hour=int(h), minute=int(mnt), second=0, microsecond=0)
        return at.timestamp() + sec
    try:
        v = float(s)
    except ValueError:
        pass
    else:
        if v == v and abs(v) != float("inf"):
            return v
        raise ValueError(f"not a time: {text!r} (use {FORMS})")
    try:
        return datetime.fromisoformat(s).timestamp()
    except ValueError:
        raise ValueError(f"not a time: {text!r} (use {FORMS})") from None
