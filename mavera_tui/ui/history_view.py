"""Job history: every job the engine knows (the store's, with --db), a page at a time.

The jobs pane shows the engine's recent jobs; this screen pages through all of them,
searches (``/``, matched by the store) and sorts by any column (``s`` picks the column,
``S`` flips the order; clicking a header sorts by it). Enter opens the job's detail.
"""

from __future__ import annotations

from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import DataTable, Input, Label

from ..control import OperatorControl
from ..snapshot import JobView
from .jobs import COLUMNS, SORT_FIELDS, STATE_WIDTH, job_row

#: Column shown -> the store's sort key (the jobs table's own mapping).
SORT_KEYS = SORT_FIELDS
PAGE = 100


class JobHistory(ModalScreen[None]):
    """Pages of jobs from the engine's ``jobs_page``; search, sort, detail."""

    BINDINGS = [
        Binding("escape,q", "close", "Close", id="history.close"),
        # Priority: the table would take these keys to move its cursor.
        Binding(
            "pagedown,right,rightsquarebracket",
            "page(1)",
            "Next page",
            id="history.next",
            priority=True,
        ),
        Binding(
            "pageup,left,leftsquarebracket",
            "page(-1)",
            "Previous page",
            id="history.prev",
            priority=True,
        ),
        Binding("slash", "search", "Search", key_display="/", id="history.search"),
        Binding("s", "sort", "Sort column", id="history.sort"),
        Binding("S", "flip", "Flip order", id="history.flip"),
    ]

    def __init__(self, engine: Any):
        super().__init__()
        self.engine = engine
        self.start = 0
        self.total = 0
        self.search_text = ""
        self.order = "age"
        self.descending = True
        self.page_rows: list[JobView] = []

    def compose(self) -> ComposeResult:
        with Vertical(id="history"):
            yield Label("Job history", id="history-title")
            yield Label("", id="history-status", markup=False)
            yield DataTable(id="history-table", cursor_type="row", zebra_stripes=True)
            yield Input(
                placeholder="search id, state, endpoint, reason (enter)", id="history-search"
            )
            yield Label(
                "←/→ page · / search · s sort column · S flip · enter detail · esc close",
                classes="legend",
            )

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for col in COLUMNS:
            table.add_column(col, key=col, width=STATE_WIDTH if col == "state" else None)
        self.query_one(Input).display = False
        table.focus()
        self.load()

    def load(self) -> None:
        """Read the current page (in a worker: the store is asynchronous)."""
        if not isinstance(self.engine, OperatorControl):
            self._status("this engine keeps no job history")
            return
        self.run_worker(self._load(), exclusive=True, name="history-page")

    async def _load(self) -> None:
        try:
            rows, total = await self.engine.jobs_page(
                self.start, PAGE, self.search_text, SORT_KEYS[self.order], self.descending
            )
        except Exception as e:  # shown, not raised: the monitor stays up
            self._status(f"could not read the jobs: {e}")
            return
        self.page_rows, self.total = rows, total
        table = self.query_one(DataTable)
        table.clear()
        now = max((j.updated for j in rows), default=0.0)
        seen: set[str] = set()
        for j in rows:
            if j.id in seen:
                continue
            seen.add(j.id)
            table.add_row(*job_row(j, now), key=j.id)
        last = min(self.start + len(rows), total)
        arrow = "↓" if self.descending else "↑"
        self._status(
            f"{self.start + 1 if rows else 0}–{last} of {total:,}"
            + (f" matching '{self.search_text}'" if self.search_text else "")
            + f" · sorted by {self.order} {arrow}"
        )

    def _status(self, text: str) -> None:
        self.query_one("#history-status", Label).update(Content(text))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # While typing a search, the arrows and brackets belong to the input.
        if action == "page" and isinstance(self.focused, Input):
            return False
        return True

    def action_page(self, step: int) -> None:
        new = self.start + int(step) * PAGE
        if new < 0 or new >= max(self.total, 1):
            return
        self.start = new
        self.load()

    def action_search(self) -> None:
        box = self.query_one(Input)
        box.display = True
        box.focus()

    @on(Input.Submitted, "#history-search")
    def _searched(self, event: Input.Submitted) -> None:
        self.search_text = event.value.strip()
        self.start = 0
        if not self.search_text:
            event.input.display = False
        self.query_one(DataTable).focus()
        self.load()

    def action_sort(self) -> None:
        keys = list(SORT_KEYS)
        self.order = keys[(keys.index(self.order) + 1) % len(keys)]
        self.start = 0
        self.load()

    def action_flip(self) -> None:
        self.descending = not self.descending
        self.start = 0
        self.load()

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        key = event.column_key.value
        if key in SORT_KEYS:
            self.descending = not self.descending if key == self.order else True
            self.order = key
            self.start = 0
            self.load()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        job = next((j for j in self.page_rows if j.id == event.row_key.value), None)
        if job is not None:
            self.app.open_detail(job)  # type: ignore[attr-defined]

    def action_close(self) -> None:
        if self.is_current:  # a key typed ahead may arrive after the first dismiss
            self.dismiss(None)
