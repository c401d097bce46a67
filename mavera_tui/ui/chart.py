"""A plotext line chart as a widget that redraws only when its data or its size changed.

A plotext frame costs milliseconds to tens of milliseconds depending on size; redrawing
every chart at the snapshot rate would burn a core. ``ChartView.offer`` takes a data
version and a thunk producing the series, and draws at most once per ``min_interval``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from textual.content import Content
from textual.widgets import Static

Series = tuple[str, Sequence[float], str]  # (label, values, marker)


def render(
    xs: Sequence[float],
    series: Sequence[Series],
    width: int,
    height: int,
    *,
    ymin: float = 0.0,
    ymax: float | None = None,
    hline: float | None = None,
) -> str:
    """Draw the series against xs (seconds, negative = ago) as colourless text."""
    # Imported on first use: plotext's import costs ~0.2 s, which the first frame at
    # 80x24 (no charts) should not pay.
    import plotext as plt

    fig = plt.figure
    fig.clear()
    fig.theme("colorless")
    fig.plot_size(max(10, width), max(4, height))
    if not xs:
        xs = [0.0]
        series = [(label, [0.0], m) for label, _, m in series]
    top = max([ymax or 0.0] + [max(v, default=0.0) for _, v, _ in series] + [hline or 0.0, 1.0])
    minutes = [x / 60.0 for x in xs]
    if hline is not None:
        limit = fig.signal([minutes[0], minutes[-1]], [hline, hline], marker="-")
        limit.lines()
        fig.draw(limit)
    for _, values, marker in series:
        sig = fig.signal(list(minutes), list(values), marker=marker or None)
        sig.lines()
        fig.draw(sig)
    top = _nice(top * 1.1)
    fig.ruler("y").lim(ymin, top)
    n = max(2, min(5, height // 3))
    yt = sorted({round(ymin + (top - ymin) * i / (n - 1)) for i in range(n)})
    if hline is not None:
        # The limit line gets its own label, and no other label sits close enough to be
        # read as its value.
        near = (top - ymin) / max(2, height - 2) * 1.5
        yt = sorted({v for v in yt if abs(v - hline) > near} | {round(hline)})
    fig.ruler("y").ticks(yt, [_short(v) for v in yt])
    if minutes[0] < minutes[-1]:
        fig.ruler("x").lim(minutes[0], minutes[-1])
        ticks, labels = time_ticks(-minutes[0] * 60.0)
        fig.ruler("x").ticks(ticks, labels)
    return fig.build().string(colorless=True)


def time_ticks(span_s: float) -> tuple[list[float], list[str]]:
    """Time-axis ticks (minutes, negative = ago) and labels shared by every chart: the left
    edge (the span held), its middle and "now", so all charts read the same."""
    mid = _round_ago(span_s / 2)
    return [-span_s / 60.0, -mid / 60.0, 0.0], [span_label(span_s), span_label(mid), "now"]


def _round_ago(s: float) -> float:
    """A round time for a middle tick: whole minutes from 2 minutes on, else 5 s steps."""
    return max(60.0, round(s / 60.0) * 60.0) if s >= 120 else max(5.0, round(s / 5.0) * 5.0)


def span_label(span_s: float) -> str:
    """``-12m`` / ``-45s``: how long ago a point on the time axis is (whole units)."""
    return f"-{round(span_s / 60)}m" if span_s >= 120 else f"-{round(span_s)}s"


class ChartView(Static):
    """A Static showing one chart; ``offer`` redraws it only when needed."""

    DEFAULT_CSS = """
    ChartView { height: 1fr; min-height: 4; }
    """

    def __init__(
        self, *, min_interval: float = 1.0, id: str | None = None, classes: str | None = None
    ):
        super().__init__("", id=id, classes=classes, markup=False)
        self.min_interval = min_interval
        self._drawn: tuple[int, int, int] | None = None  # (version, width, height)
        self._last_draw = 0.0
        self._last: tuple[int, Callable[[int, int], str | Content]] | None = None
        self.draws = 0

    def on_resize(self) -> None:
        """Redraw the last chart at the new size now, not at the next tick: a layout that
        settles after the tick would otherwise show a chart sized for the old layout."""
        if self._last is not None:
            self.offer(*self._last)

    def offer(self, version: int, make: Callable[[int, int], str | Content]) -> bool:
        """Redraw with ``make(width, height)`` if the version or size changed; True if drawn."""
        self._last = (version, make)
        if not self.display or not self.is_mounted:
            return False
        w, h = self.content_size.width, self.content_size.height
        if w < 10 or h < 4:
            return False
        key = (version, w, h)
        if key == self._drawn:
            return False
        now = time.monotonic()
        resized = self._drawn is None or self._drawn[1:] != (w, h)
        if not resized and now - self._last_draw < self.min_interval:
            return False  # new data only: the next tick will draw it
        self._drawn = key
        self._last_draw = now
        self.draws += 1
        self.update(make(w, h), layout=False)  # fixed-size widget: no layout pass
        return True


def _nice(v: float) -> float:
    """Round an axis top up to a round multiple of a power of ten."""
    mag = 1.0
    while mag * 10 <= v:
        mag *= 10
    for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if v <= m * mag:
            return m * mag
    return v


def _short(v: float) -> str:
    return f"{v / 1000:g}k" if v >= 10_000 else f"{v:g}"


def stacked(
    layers: Sequence[tuple[Sequence[int], str, str]], span_s: float, width: int, height: int
) -> Content:
    """A stacked area chart as styled text: one fill character and style per layer.

    ``layers`` are (values per bucket, fill char, style), bottom layer first; columns
    sample the buckets evenly so the whole history fits ``width``.
    """
    n = max((len(v) for v, _, _ in layers), default=0)
    rows = max(2, height - 1)  # the last row is the time axis
    totals = [sum(v[i] for v, _, _ in layers) for i in range(n)]
    top = _nice(max(totals, default=0) or 1)
    label_w = max(len(_short(top)), 1) + 1
    cols = max(1, width - label_w - 1)
    grid: list[list[tuple[str, str]]] = [[(" ", "")] * cols for _ in range(rows)]
    for c in range(cols):
        if n == 0:
            break
        i = min(n - 1, int(c * n / cols)) if n >= cols else c - (cols - n)
        if i < 0:
            continue
        base = 0
        for values, char, style in layers:
            v = values[i]
            lo = int(round(base / top * rows))
            hi = int(round((base + v) / top * rows))
            for r in range(lo, min(hi, rows)):
                grid[rows - 1 - r][c] = (char, style)
            base += v
    parts: list[tuple[str, str] | str] = []
    mid_row = (rows - 1) // 2 if rows >= 5 else -1
    for r, row in enumerate(grid):
        label = (
            _short(top)
            if r == 0
            else "0"
            if r == rows - 1
            else _short(round(top * (rows - 1 - r) / (rows - 1)))
            if r == mid_row
            else ""
        )
        # A tick mark only where there is a label: unlabelled ticks read as values.
        parts.append((label.rjust(label_w - 1) + (" ┤" if label else " │"), "$foreground-muted"))
        run_style = ""
        run: list[str] = []
        for char, style in row:
            if style != run_style and run:
                parts.append(("".join(run), run_style))
                run = []
            run_style = style
            run.append(char)
        if run:
            parts.append(("".join(run), run_style))
        parts.append("\n")
    ticks, labels = time_ticks(span_s)
    left, mid = labels[0], labels[1]
    at = int(round((1 + ticks[1] * 60.0 / max(span_s, 1e-9)) * (cols - 1)))  # mid's column
    line = [" "] * cols
    for i, ch in enumerate(left):
        line[i] = ch
    start = max(len(left) + 1, min(cols - 4 - len(mid), at - len(mid) // 2))
    for i, ch in enumerate(mid):
        if 0 <= start + i < cols:
            line[start + i] = ch
    line[cols - 3 :] = list("now")
    axis = " " * (label_w + 1) + "".join(line)
    parts.append((axis, "$foreground-muted"))
    return Content.assemble(*parts)
