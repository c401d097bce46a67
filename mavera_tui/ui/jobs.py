"""Jobs pane: recent jobs in a DataTable, filterable with ``/``; the cursor picks a job."""

from __future__ import annotations

import re
import time

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.content import Content
from textual.widgets import DataTable, Input

from ..history import History
from ..snapshot import ACTIVE_STATES, FINAL_STATES, JobView, Snapshot
from ..states import JobState
from .pane import Pane
from .text import clean, duration

#: A proxied request's job id: ``<run>-<seq>-<caller>`` (mavera_tui.proxy / governor; the
#: caller from X-Mavera-Caller, "-" when none was sent, cut to [A-Za-z0-9._-]).
_PROXY_ID = re.compile(r"^[0-9a-f]{6}-[0-9]+-([A-Za-z0-9._-]{1,40})(?:~r[0-9]+)?$")


def caller_of(job_id: str) -> str | None:
    """The proxy caller a job came from (None: not a proxied job, or no caller named)."""
    m = _PROXY_ID.match(job_id)
    if m is None or m.group(1) == "-":
        return None
    return m.group(1).lower()


COLUMNS = ("id", "state", "endpoint", "est", "actual", "att", "age", "reason")
ALL_STATES = ACTIVE_STATES + FINAL_STATES
STATE_WIDTH = max(len(s) for s in ALL_STATES)
STATE_STYLE: dict[str, str] = {
    JobState.SUCCEEDED: "$success",
    JobState.FAILED: "$error",
    JobState.BLOCKED: "$error",
    JobState.CANCELLED: "$foreground-muted",
    JobState.OUTCOME_UNKNOWN: "$warning",
    JobState.IN_FLIGHT: "$primary bold",
    JobState.WAITING_CREDITS: "$warning",
}


def _cell_width(cell: Text | Content) -> int:
    """Terminal cells a table cell takes (rich and Textual name the measure differently)."""
    return cell.cell_len if isinstance(cell, Text) else cell.cell_length


def job_row(job: JobView, now: float) -> tuple[Text | Content, ...]:
    """The cells of one job; every string from the engine is cleaned and literal.

    Plain cells are rich ``Text`` (literal, and measurable by DataTable for auto widths);
    the state is ``Content`` so it can take a theme colour, in a fixed-width column.
    """
    end = job.updated if job.state in FINAL_STATES and job.updated else now
    return (
        Text(clean(job.id, limit=40)),
        Content.styled(clean(job.state, limit=STATE_WIDTH), STATE_STYLE.get(job.state, "")),
        Text(clean(job.endpoint, limit=24)),
        Text(str(job.estimate), justify="right"),
        Text("—" if job.actual is None else str(job.actual), justify="right"),
        Text(str(job.attempts), justify="right"),
        Text(duration(end - job.created) if job.created else "—", justify="right"),
        Text(clean(job.reason, limit=120)),
    )


#: Column -> the JobView field it sorts by (the store's sort key has the same name).
SORT_FIELDS = {
    "id": "id",
    "state": "state",
    "endpoint": "endpoint",
    "est": "estimate",
    "actual": "actual",
    "att": "attempts",
    "age": "created",
    "reason": "reason",
}


class JobsPane(Pane):
    """Recent jobs, newest first. ``/`` filters by any text in the row."""

    TITLE = "Jobs"
    BINDINGS = [
        Binding("escape", "clear_filter", "Clear filter", show=False, id="jobs.clear_filter"),
        Binding("o", "sort_next", "Sort jobs by the next column", show=False, id="jobs.sort"),
        Binding("O", "sort_flip", "Flip the jobs' sort order", show=False, id="jobs.sort_flip"),
    ]
    SORT_FIELDS = SORT_FIELDS
    sort_column: str | None = None
    sort_descending = False

    def action_sort_next(self) -> None:
        cols = [None, *self.SORT_FIELDS]
        self.sort_column = cols[(cols.index(self.sort_column) + 1) % len(cols)]
        self.sort_descending = False
        self._render_rows()

    def action_sort_flip(self) -> None:
        if self.sort_column is not None:
            self.sort_descending = not self.sort_descending
            self._render_rows()

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        key = event.column_key.value
        if key in self.SORT_FIELDS:
            if key == self.sort_column:
                self.sort_descending = not self.sort_descending
            else:
                self.sort_column, self.sort_descending = key, False
            self._render_rows()

    def _sorted(self, jobs: tuple[JobView, ...]) -> list[JobView]:
        if self.sort_column is None:
            return list(jobs)
        field = self.SORT_FIELDS[self.sort_column]

        def key(j: JobView) -> tuple[bool, object]:
            v = getattr(j, field)
            # "age" sorts youngest first like the engine's order; unknown charges last.
            return (v is None, -v if field == "created" else (v if v is not None else 0))

        return sorted(jobs, key=key, reverse=self.sort_descending)

    def __init__(self, **kw):
        super().__init__(**kw)
        self.filter = ""
        self._jobs: tuple[JobView, ...] = ()
        self._now = 0.0
        self._last_render = 0.0
        self._shown: list[tuple[str, tuple[Text | Content, ...]]] = []

    def compose(self) -> ComposeResult:
        table: DataTable = DataTable(id="jobs-table", cursor_type="row", zebra_stripes=True)
        yield table
        yield Input(placeholder="filter jobs (id, state, endpoint, reason)", id="jobs-filter")

    def on_mount(self) -> None:
        super().on_mount()
        table = self.query_one(DataTable)
        for col in COLUMNS:
            table.add_column(col, key=col, width=STATE_WIDTH if col == "state" else None)
        self.query_one("#jobs-filter", Input).display = False

    def job(self, job_id: str) -> JobView | None:
        """The newest view of ``job_id`` among the jobs this pane holds."""
        return next((j for j in self._jobs if j.id == job_id), None)

    def jobs(self) -> tuple[JobView, ...]:
        """Every job the pane holds (the engine's recent ones), filter or not."""
        return self._jobs

    def matches(self, job: JobView) -> bool:
        """Whether ``job``'s row holds the filter text (always, with no filter).
        ``caller:NAME`` keeps the jobs the proxy took from caller NAME (issue 11)."""
        return self._match(job, None)

    def _match(self, job: JobView, cells: tuple[Text | Content, ...] | None) -> bool:
        if not self.filter:
            return True
        if self.filter.startswith("caller:"):
            return caller_of(job.id) == self.filter[7:].strip()
        if cells is None:
            cells = job_row(job, self._now)
        return self.filter in " ".join(c.plain for c in cells).lower()

    @property
    def selected_job(self) -> str | None:
        """The id of the job under the cursor, if any."""
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        try:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        except Exception:
            return None
        return key.value

    def open_filter(self) -> None:
        box = self.query_one("#jobs-filter", Input)
        box.display = True
        box.focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#jobs-filter", Input)
        box.value = ""
        box.display = False
        self.query_one(DataTable).focus()

    @on(Input.Changed, "#jobs-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.filter = event.value.strip().lower()
        self._render_rows()

    @on(Input.Submitted, "#jobs-filter")
    def _filter_done(self, event: Input.Submitted) -> None:
        if not event.value.strip():
            event.input.display = False
        self.query_one(DataTable).focus()

    #: The table is the costliest thing to repaint: at most this often (ages tick in seconds).
    MIN_INTERVAL = 1.0

    def show_next_at_once(self) -> None:
        """Skip the throttle once: the operator just submitted a job and looks for it."""
        self._last_render = 0.0

    def update_snapshot(self, snap: Snapshot, history: History) -> None:
        self._now = snap.t
        if snap.jobs is self._jobs and not any(j.state not in FINAL_STATES for j in snap.jobs):
            return
        now = time.monotonic()
        if now - self._last_render < self.MIN_INTERVAL:
            # The next tick catches up. New jobs arrive nearly every poll in a busy run, so
            # they wait too: a rebuild re-renders every visible cell (measured: 12.7% of a
            # core at 200x50 on the live demo when new jobs skipped this).
            return
        self._jobs = snap.jobs
        self._render_rows()

    def _render_rows(self) -> None:
        self._last_render = time.monotonic()
        rows = []
        seen: set[str] = set()
        for job in self._sorted(self._jobs):
            if job.id in seen:
                continue  # a row key must be unique; the newest copy wins
            seen.add(job.id)
            cells = job_row(job, self._now)
            if not self._match(job, cells):
                continue
            rows.append((job.id, cells))
        rows = self._fit_reasons(rows)
        count = (
            f"{len(rows)}/{len(self._jobs)} match '{self.filter}'"
            if self.filter
            else f"{len(self._jobs)}"
        )
        if self.sort_column is not None:
            count += f" · by {self.sort_column} {'↓' if self.sort_descending else '↑'} (o)"
        if rows == self._shown:
            self._subtitle(count)
            return
        table = self.query_one(DataTable)
        if [k for k, _ in rows] == [k for k, _ in self._shown]:
            for (key, cells), (_, old) in zip(rows, self._shown, strict=True):
                for col, new, was in zip(COLUMNS, cells, old, strict=True):
                    if new != was:
                        table.update_cell(key, col, new)
        else:
            # Rows move (new jobs arrive on top, others finish): the cursor stays on the same
            # job, and the view scrolls with it so that job stays on the same screen line:
            # the operator's eye, and `c`, stay on the job they picked (issue 12, defect 3).
            selected = self._selected_key
            old_keys = [k for k, _ in self._shown]
            old_row = old_keys.index(selected) if selected in old_keys else None
            screen_row = (old_row - table.scroll_y) if old_row is not None else None
            table.clear()
            for key, cells in rows:
                table.add_row(*cells, key=key)
            keys = [k for k, _ in rows]
            if old_row == 0 and table.scroll_y == 0:
                # At the top the table follows the newest job (like a log's tail); a
                # job the operator moved to stays put, below.
                self._selected_key = keys[0] if keys else None
                table.move_cursor(row=0, animate=False)
            elif selected in keys:
                row = keys.index(selected)
                table.move_cursor(row=row, animate=False, scroll=False)
                if screen_row is not None:
                    table.scroll_to(y=max(0, row - screen_row), animate=False, immediate=True)
                else:
                    table.move_cursor(row=row, animate=False)
            elif selected is not None and rows:
                # The picked job left the list (filtered out, or older than the recent
                # jobs): say so rather than silently pick another.
                self._lost = selected
        self._shown = rows
        self._subtitle(count)

    def _fit_reasons(
        self,
        rows: list[tuple[str, tuple[Text | Content, ...]]],
    ) -> list[tuple[str, tuple[Text | Content, ...]]]:
        """Shorten reasons to the room the other columns leave, at a word, with "…" (the
        full text is in the job's detail): the table's edge would cut mid-word."""
        if not rows:
            return rows
        widths = [
            max(len(COLUMNS[i]), *(_cell_width(c[i]) for _, c in rows))
            for i in range(len(COLUMNS) - 1)
        ]
        widths[COLUMNS.index("state")] = STATE_WIDTH
        # Each column has one cell of padding either side; 2 more for the scroll bar.
        if not self.content_size.width:
            return rows  # not laid out yet: on_resize renders again with the real width
        room = self.content_size.width - sum(w + 2 for w in widths) - 6
        room = max(12, room)
        out = []
        for key, cells in rows:
            reason = cells[-1].plain
            if len(reason) > room:
                cut = reason[: room - 1]
                space = cut.rfind(" ")
                if space >= room // 2:
                    cut = cut[:space]
                cells = (*cells[:-1], Text(cut.rstrip(" ,;:") + "…"))
            out.append((key, cells))
        return out

    def on_resize(self) -> None:
        # The room for reasons changed: rebuild the cells (cheap, and rare).
        if self._jobs and self.is_mounted:
            self._render_rows()

    _selected_key: str | None = None
    _lost: str | None = None

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        key = event.row_key.value if event.row_key is not None else None
        if key is not None and key != self._selected_key:
            self._selected_key = key
            self._lost = None
            self._subtitle(None)

    def _subtitle(self, count: str | None) -> None:
        if count is not None:
            self._count = count
        sel = self._selected_key
        mark = ""
        if self._lost:
            mark = f" · ▶ {clean(self._lost, limit=30)} not in this list"
        elif sel is not None:
            mark = f" · ▶ {clean(sel, limit=30)}"
        self.border_subtitle = getattr(self, "_count", "") + mark
