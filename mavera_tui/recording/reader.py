"""The reader of recordings: what replay and report read through.

``Recording.open(path)`` checks the file with the store's one check (``store.check_file``:
an SQLite file of ours, a schema this version reads) and the snapshot encoding, then opens
the store read-only. It hands out the recorded snapshots (raw or decoded), the ledger and
the daily totals that retention left for older days, by time range. Since schema 4 most of
a recording is packed (snapshots, the ledger and finished jobs in compressed blocks): the
reader gives rows and blocks back as one, in the form schema 3's rows and views had.
Never imports textual.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Any

from ..snapshot import Snapshot
from ..store import LEDGER_VIEW_COLUMNS, Store, StoreError, check_file
from .codec import (
    BLOCK_ENCODING,
    ENCODING,
    BlockFrame,
    DecodeError,
    FrameDecoder,
    SnapshotBlock,
    block_frames,
    state_to_snapshot,
)
from .timespec import TimeContext, parse_time

__all__ = ["LEDGER_COLUMNS", "Recording", "check_recording"]

#: Ledger columns a reader may ask for: the store's ledger view, less its bookkeeping
#: (the row id and the send time in milliseconds).
LEDGER_COLUMNS = tuple(c for c in LEDGER_VIEW_COLUMNS if c not in ("id", "t_ms"))
DAILY_COLUMNS = (
    "day",
    "endpoint",
    "requests",
    "r429",
    "r402",
    "credits",
    "retries",
    "first",
    "last",
)


def check_recording(path: str) -> dict[str, str]:
    """The meta table of a recording this version can read; StoreError (one line) if not."""
    meta = check_file(path)
    enc = meta.get("snapshot_encoding")
    if enc is not None and enc not in (ENCODING, BLOCK_ENCODING):
        raise StoreError(
            f"{path} holds snapshots encoded as {enc!r}; this mavera-tui reads "
            f"{ENCODING!r} and {BLOCK_ENCODING!r}: upgrade mavera-tui to read it"
        )
    return meta


def _range(
    since: float | None, until: float | None, col: str = "t", scale: float = 1.0
) -> tuple[str, list[float]]:
    where, params = "WHERE 1=1", []
    if since is not None:
        where += f" AND {col} >= ?"
        params.append(since * scale)
    if until is not None:
        where += f" AND {col} <= ?"
        params.append(until * scale)
    return where, params


async def has_table(store: Store, table: str) -> bool:
    """Whether the store has ``table`` (tables a later schema, or an option, adds)."""
    return bool(
        await store.query("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (table,))
    )


class Recording:
    """One recording (or run database), open read-only. Use ``async with await
    Recording.open(path) as rec`` or call ``close()``."""

    def __init__(self, store: Store, meta: dict[str, str]):
        self.store = store
        self.meta = meta
        self.path = store.path

    @classmethod
    async def open(cls, path: str) -> Recording:
        """Open ``path`` read-only; StoreError with a clear message if it cannot be read."""
        check_recording(path)
        store = await Store.open(path, readonly=True)
        return cls(store, await store.meta())

    async def close(self) -> None:
        await self.store.close()

    async def __aenter__(self) -> Recording:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def schema_version(self) -> int | None:
        return getattr(self.store, "schema_version", None)

    @property
    def compact(self) -> bool:
        """Schema 3 and later: the ledger is a view over compact rows (times in ms)."""
        return (self.schema_version or 0) >= 3

    @property
    def target(self) -> str:
        return self.meta.get("recorded_target", "")

    async def _has(self, table: str) -> bool:
        return await has_table(self.store, table)

    # --- time ---------------------------------------------------------------------------

    async def bounds(self) -> tuple[float | None, float | None]:
        """First and last time in the ledger and the snapshots (None, None when empty)."""
        # On the ledger's rows where they are compact: the view's t is computed, so only
        # the rows' own column lets SQLite read the ends of the time index.
        table, scale = ("ledger_rows", " / 1000.0") if self.compact else ("ledger", "")
        packed = ""
        if await self.store.has_blocks():
            packed = (
                " UNION ALL SELECT MIN(t0) / 1000.0 FROM ledger_blocks UNION ALL SELECT "
                "MAX(t1) / 1000.0 FROM ledger_blocks UNION ALL SELECT MIN(t0) FROM "
                "snapshot_blocks UNION ALL SELECT MAX(t1) FROM snapshot_blocks"
            )
        [(first, last)] = await self.store.query(
            f"SELECT MIN(t), MAX(t) FROM (SELECT MIN(t){scale} AS t FROM {table} UNION ALL "
            f"SELECT MAX(t){scale} FROM {table} UNION ALL SELECT MIN(t) FROM snapshots "
            f"UNION ALL SELECT MAX(t) FROM snapshots{packed})"
        )
        return first, last

    async def time_context(self, anchor: float | None = None) -> TimeContext:
        """The context relative times are read in; ``anchor`` defaults to the end."""
        first, last = await self.bounds()
        start = first if first is not None else 0.0
        end = last if last is not None else start
        return TimeContext(start, end, end if anchor is None else anchor)

    async def parse_range(
        self,
        since: str | float | None,
        until: str | float | None,
    ) -> tuple[float | None, float | None]:
        """``--since``/``--until`` as unix seconds (strings in the one time grammar, relative
        forms counted back from the end of the recording); ValueError if unreadable."""
        ctx = await self.time_context()
        lo = parse_time(since, ctx) if isinstance(since, str) else since
        hi = parse_time(until, ctx) if isinstance(until, str) else until
        return lo, hi

    # --- snapshots ----------------------------------------------------------------------

    async def snapshot_rows(
        self,
        since: float | None = None,
        until: float | None = None,
    ) -> list[tuple[float, bytes | BlockFrame]]:
        """Encoded snapshots ``(t, frame)`` in time order from the last keyframe at or
        before ``since`` (so the first frames decode) up to ``until``: a zdelta1 blob per
        row of ``snapshots`` (schema 3), a ``BlockFrame`` per snapshot of a block
        (schema 4). ``FrameDecoder`` decodes both."""
        lo = since
        if since is not None:
            k = await self.store.keyframe_at_or_before(since)
            lo = k if k is not None else since
        where, params = _range(lo, until)
        rows = await self.store.query(f"SELECT t, data FROM snapshots {where} ORDER BY t", params)
        out: list[tuple[float, bytes | BlockFrame]] = [(float(t), bytes(b)) for t, b in rows if b]
        blocks = [
            SnapshotBlock(t0, tuple(ts), key, data)
            for t0, key, ts, data in await self.store.snapshot_block_rows(since, until)
        ]
        out += [(t, f) for t, f in block_frames(blocks) if until is None or t <= until]
        out.sort(key=lambda r: r[0])
        return out

    async def snapshots(
        self, since: float | None = None, until: float | None = None, *, rows: bool = False
    ) -> list[Snapshot]:
        """Decoded snapshots in [since, until] (``rows=False`` skips jobs/alerts: cheaper).
        Undecodable rows are skipped up to the next keyframe."""
        dec = FrameDecoder()
        out = []
        for t, blob in await self.snapshot_rows(since, until):
            try:
                st = dec.decode(blob)
            except DecodeError:
                continue
            if since is not None and t < since:
                continue
            out.append(state_to_snapshot(st, dec.names, rows=rows))
        return out

    # --- the ledger and what retention kept of it -----------------------------------------

    async def ledger(
        self,
        columns: Sequence[str] = LEDGER_COLUMNS,
        since: float | None = None,
        until: float | None = None,
    ) -> list[tuple[Any, ...]]:
        """Ledger rows (by send time ``t``) in [since, until], oldest first."""
        bad = [c for c in columns if c not in LEDGER_COLUMNS]
        if bad:
            raise ValueError(f"no ledger column {bad[0]!r}")
        if self.compact:  # the rows' millisecond column: indexed, unlike the view's t
            where, params = _range(since, until, "t_ms", 1000.0)
            order = "t_ms, id"
        else:
            where, params = _range(since, until)
            order = "t, id"
        if not self.compact:
            return await self.store.query(
                f"SELECT {', '.join(columns)} FROM ledger {where} ORDER BY {order}", params
            )
        if not await self.store.has_blocks():
            rows = await self.store.query(
                f"SELECT {', '.join(columns)} FROM ledger {where} ORDER BY {order}", params
            )
            return rows
        # The rows and the blocks in one read transaction: a recorder packing meanwhile
        # moves rows into a block in one transaction of its own, so each row is read once.
        ms = (None if since is None else round(since * 1000), None if until is None else
              round(until * 1000))  # fmt: skip
        await self.store.query("BEGIN")
        try:
            rows = await self.store.query(
                f"SELECT {', '.join(columns)}, t_ms, id FROM ledger {where} ORDER BY {order}",
                params,
            )
            blocks = await self.store.ledger_block_rows(*ms)
        finally:
            await self.store.query("COMMIT")
        cols = [LEDGER_VIEW_COLUMNS.index(c) for c in (*columns, "t_ms", "id")]
        packed = [tuple(r[i] for i in cols) for r in blocks]
        if since is not None:
            packed = [r for r in packed if r[-2] >= since * 1000.0]
        if until is not None:
            packed = [r for r in packed if r[-2] <= until * 1000.0]
        both = packed + rows
        both.sort(key=lambda r: (r[-2], r[-1]))
        return [r[:-2] for r in both]

    async def daily_totals(
        self,
        since: float | None = None,
        until: float | None = None,
    ) -> list[dict[str, Any]]:
        """Per-day, per-endpoint totals of the ledger rows that retention dropped, for the
        days whose folded rows (sent between ``first`` and ``last``) overlap [since, until].
        A total is counted whole: a range that cuts through one is approximate there."""
        if not await self._has("daily_totals"):
            return []  # a schema-1 file: nothing was ever pruned
        where, params = "WHERE 1=1", []
        if since is not None:
            where += " AND last >= ?"
            params.append(since)
        if until is not None:
            where += " AND first <= ?"
            params.append(until)
        rows = await self.store.query(
            f"SELECT {', '.join(DAILY_COLUMNS)} FROM daily_totals {where} ORDER BY day, endpoint",
            params,
        )
        return [dict(zip(DAILY_COLUMNS, r, strict=True)) for r in rows]

    async def alert_times(self) -> list[float]:
        return [r[0] for r in await self.store.query("SELECT t FROM alerts ORDER BY t")]

    async def jobs_by_state(self) -> dict[str, int]:
        """Jobs per state, the packed ones included."""
        out = dict(
            await self.store.query("SELECT state, COUNT(*) FROM jobs GROUP BY state ORDER BY state")
        )
        for state, n in (await self.store.archived_states()).items():
            out[state] = out.get(state, 0) + n
        return dict(sorted(out.items()))
