"""Literal display of untrusted text (server messages, job reasons) and number formatting.

Server text is never parsed as markup (callers wrap it in ``Content``/``Text``, not markup
strings) and never reaches the terminal with control characters: escape sequences are
dropped, other C0/C1 controls are shown as a visible replacement character.
"""

from __future__ import annotations

import re
import time

# CSI (ESC [ ... final), OSC (ESC ] ... BEL or ST), and any other two-byte ESC sequence.
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]?")
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_BREAKS = re.compile(r"[\n\t]+")

REPLACEMENT = "\ufffd"


def clean(text: object, *, one_line: bool = True, limit: int = 500) -> str:
    """``text`` made safe to show: no escape sequences or controls, bounded length."""
    s = str(text)
    if len(s) > limit * 4:
        s = s[: limit * 4]
    s = _ESCAPES.sub("", s)
    s = _CONTROLS.sub(REPLACEMENT, s)
    if one_line:
        s = _BREAKS.sub(" ", s)
    if len(s) > limit:
        s = s[: limit - 1] + "…"
    return s


def num(n: float | int | None, unit: str = "") -> str:
    """Thousands with a thin separator; '—' for unknown."""
    if n is None:
        return "—"
    if isinstance(n, float) and not n.is_integer():
        return f"{n:,.1f}{unit}"
    return f"{int(n):,}{unit}"


def duration(seconds: float | None) -> str:
    """Compact human duration: 45s, 12m, 3h05m, 2d04h; '—' for unknown."""
    if seconds is None:
        return "—"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s" if s < 600 else f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def clock(t: float) -> str:
    """Local wall-clock time of day for a unix time."""
    return time.strftime("%H:%M:%S", time.localtime(t))


def bar(value: float, total: float, width: int, full: str = "█", empty: str = "░") -> str:
    """A text bar of ``width`` cells filled in proportion to value/total."""
    if width <= 0:
        return ""
    share = 0.0 if total <= 0 else max(0.0, min(1.0, value / total))
    filled = int(round(share * width))
    return full * filled + empty * (width - filled)
