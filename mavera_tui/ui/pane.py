"""The base of every monitor pane: a bordered container fed only from Snapshots."""

from __future__ import annotations

from textual.containers import Vertical
from textual.content import Content
from textual.widgets import Static

from ..history import History
from ..snapshot import Snapshot


class Pane(Vertical):
    """A titled pane. Subclasses render ``update_snapshot(snap, history)`` and nothing else."""

    TITLE = ""

    def on_mount(self) -> None:
        self.border_title = self.TITLE

    def update_snapshot(self, snap: Snapshot, history: History) -> None:
        """Show ``snap``; cheap parts every call, charts only when their data changed."""
        raise NotImplementedError

    @property
    def text_width(self) -> int:
        """Usable columns inside the pane (a guess before the first layout)."""
        return max(20, self.content_size.width or 38)


class Line(Static):
    """A Static that re-renders only when its content actually changed."""

    DEFAULT_CSS = "Line { height: auto; }"

    def __init__(self, *, id: str | None = None, classes: str | None = None):
        super().__init__("", id=id, classes=classes, markup=False)
        self._shown: Content | str | None = None

    def show(self, content: Content | str) -> None:
        if content != self._shown:
            # Same line count and no wider than the widget: the size cannot change, so skip
            # the (screen-wide) layout pass. Text wraps only beyond the widget's width.
            old = self._shown
            same = (
                old is not None
                and _lines(old) == _lines(content)
                and _widest(content) <= self.content_size.width
                and _widest(old) <= self.content_size.width
            )
            self._shown = content
            self.update(content, layout=not same)

    @property
    def plain(self) -> str:
        shown = self._shown
        return "" if shown is None else (shown.plain if isinstance(shown, Content) else shown)


def _lines(c: Content | str) -> int:
    return (c.plain if isinstance(c, Content) else c).count("\n")


def _widest(c: Content | str) -> int:
    text = c.plain if isinstance(c, Content) else c
    return max((len(line) for line in text.split("\n")), default=0)


def pack(parts: list[Content | str | tuple[str, str]], width: int, sep: str = " · ") -> Content:
    """Join parts with ``sep`` on as few lines as fit ``width``, breaking only between parts."""
    lines: list[list[Content]] = [[]]
    used = 0
    for part in parts:
        c = (
            Content.styled(*part)
            if isinstance(part, tuple)
            else (part if isinstance(part, Content) else Content(part))
        )
        need = c.cell_length + (len(sep) if lines[-1] else 0)
        if lines[-1] and used + need > width:
            lines.append([])
            used, need = 0, c.cell_length
        lines[-1].append(c)
        used += need
    return Content("\n").join(Content(sep).join(line) for line in lines)
