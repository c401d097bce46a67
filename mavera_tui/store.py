"""The durable store: jobs, the ledger of every attempt, alerts and recorded snapshots (SQLite).

Jobs and the ledger are kept compact (``job_rows``, ``ledger_rows``: strings as codes in
``names``, times as integer milliseconds) and read through the views ``jobs`` and ``ledger``,
which have the columns the text tables of schema 2 had. Since schema 4 ``pack`` (the
recorder's, every minute) moves the ledger's rows and finished jobs into compressed column
blocks (colblock.py), and the recorder writes snapshots in blocks: the views then show only
what is not packed yet; the methods here (and recording/reader.py) read rows and blocks as
one, and ``unpack`` turns the blocks back into rows.

One aiosqlite connection in WAL mode. Writes go through a single writer task that commits
whatever is pending in one transaction (group commit), so persisting "in flight" before
every send stays cheap at thousands of jobs per second. ``mark_dispatch`` is awaited (the
job is durably in flight before its request leaves); results and alerts are write-behind
and flushed within a few milliseconds or on ``flush()``/``close()``.

The file is created readable by its owner only, and one writer process at a time holds it
(an exclusive ``flock``); readers (report, replay) open it read-only.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import json
import os
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

import aiosqlite

from .clock import external
from .colblock import pack, unpack
from .errors import StoreError
from .snapshot import BLOCKED, CANCELLED, FAILED, SUCCEEDED

__all__ = ["Store", "StoreError", "StoredJob", "check_file", "check_meta"]

#: 1: jobs, ledger, alerts, snapshots. 2: + daily_totals (what retention keeps of the ledger).
#: 3: the compact encoding: jobs and the ledger are views over ``job_rows`` and
#: ``ledger_rows``, which keep strings as codes (``names``), times as integer milliseconds.
#: 4: packed history: ``ledger_blocks``, ``job_blocks`` (finished jobs) and
#: ``snapshot_blocks``, many rows to one zlib-compressed blob (colblock.py, recording/codec.py).
SCHEMA_VERSION = 4
APP_ID = "mavera-tui"
#: Job states retention may drop once old: they never change again and need nobody.
#: ('outcome_unknown' is final too, but waits for the operator: it stays.)
PRUNABLE_STATES = (SUCCEEDED, FAILED, CANCELLED, BLOCKED)

#: The strings every file's ``names`` table starts with, by code (1, 2, ...). Append only:
#: a code, once written into a file, means its string forever (the ``jobs_open`` index
#: names the final states by code). Other strings (an unknown path, a server's error code)
#: get the next free code when first written.
SEEDED_NAMES: tuple[str, ...] = (
    # job states
    "queued",
    "waiting_window",
    "waiting_slot",
    "backoff",
    "waiting_credits",
    "paused",
    "in_flight",
    "succeeded",
    "failed",
    "cancelled",
    "blocked_preflight",
    "outcome_unknown",
    # outcome kinds
    "ok",
    "rate_limited",
    "concurrency_limited",
    "credits_exhausted",
    "budget_exceeded",
    "unauthorized",
    "server_error",
    "timeout",
    "connection_error",
    "bad_response",
    "client_error",
    # methods
    "GET",
    "POST",
    # endpoints
    "responses",
    "mave",
    "focus_groups",
    "video_analyses",
    "generations",
    "personas_list",
    "personas_create",
    "brand_voices",
    "news_analyze",
    "billing_credits",
    # paths
    "/responses",
    "/mave/chat",
    "/focus-groups",
    "/video-analyses",
    "/generations",
    "/personas",
    "/brand-voices",
    "/billing/credits",
)
_CODE = {name: i for i, name in enumerate(SEEDED_NAMES, 1)}
#: The condition of the ``jobs_open`` partial index (on ``job_rows.state``, a code). A query
#: must contain this very term for SQLite to use the index, so ``load_jobs`` adds it.
OPEN_JOBS = f"state NOT IN ({', '.join(str(_CODE[s]) for s in PRUNABLE_STATES)})"

#: What retention keeps of the ledger rows it drops: one row per UTC day and endpoint.
DAILY_TOTALS = """
CREATE TABLE IF NOT EXISTS daily_totals (
    day TEXT NOT NULL,           -- UTC date (YYYY-MM-DD) of the requests' send times
    endpoint TEXT NOT NULL,
    requests INTEGER NOT NULL,
    r429 INTEGER NOT NULL,
    r402 INTEGER NOT NULL,
    credits INTEGER NOT NULL,    -- SUM(credits_used)
    retries INTEGER NOT NULL,    -- job attempts after the first
    first REAL NOT NULL,         -- earliest and latest send time folded in: a report
    last REAL NOT NULL,          -- range counts a day's totals if it overlaps these
    PRIMARY KEY (day, endpoint)
);
"""


def _name(col: str) -> str:
    return f"(SELECT name FROM names WHERE id = {col})"


#: The compact tables and the views that read them as schema 2 stored them. Where the
#: bytes went in schema 2 (bench/bench_record.py, 600 requests a minute): a job row ~175 B
#: with its id index, a ledger row ~130 B with its time index; endpoint, method, path,
#: state and kind were text in every row, times 8-byte floats, and the ledger repeated
#: each job's id.
COMPACT = (
    """
CREATE TABLE IF NOT EXISTS names (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS job_rows (
    seq INTEGER PRIMARY KEY,     -- submission order (the rowid: no index of its own)
    id TEXT NOT NULL UNIQUE,
    method INTEGER NOT NULL,     -- codes in names
    path INTEGER NOT NULL,
    endpoint INTEGER NOT NULL,
    body TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    state INTEGER NOT NULL,      -- a code in names
    estimate INTEGER NOT NULL DEFAULT 0,
    actual INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    reason TEXT NOT NULL DEFAULT '',
    created INTEGER NOT NULL,    -- unix milliseconds
    updated INTEGER NOT NULL     -- milliseconds after created
);
-- Only the jobs still to run: at hundreds of jobs a minute, an index over every finished
-- job's state costs more disk than the startup scan it saves.
CREATE INDEX IF NOT EXISTS jobs_open ON job_rows(state) WHERE """
    + OPEN_JOBS
    + """;
CREATE TABLE IF NOT EXISTS ledger_rows (
    id INTEGER PRIMARY KEY,
    t INTEGER NOT NULL,          -- unix milliseconds the request was sent
    done INTEGER NOT NULL,       -- milliseconds from sending to knowing the outcome
    job,                         -- the job's seq; its id (text) if it has no row; NULL for
                                 -- the engine's own requests. No type: kept as given.
    endpoint INTEGER NOT NULL,   -- codes in names
    method INTEGER NOT NULL,
    path INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    status INTEGER,              -- HTTP status; NULL for timeouts and dropped connections
    kind INTEGER NOT NULL,       -- 'ok' or an error kind, as a code
    code INTEGER,                -- the server's error code, as a code
    credits_used INTEGER,
    tokens INTEGER,
    estimate INTEGER NOT NULL DEFAULT 0,
    latency INTEGER,             -- milliseconds
    rl_limit INTEGER,
    rl_remaining INTEGER,
    rl_reset INTEGER,            -- milliseconds after t
    retry_after INTEGER,         -- milliseconds
    message TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS ledger_t ON ledger_rows(t);
CREATE VIEW IF NOT EXISTS jobs AS SELECT
    j.id AS id, j.seq AS seq, """
    + _name("j.method")
    + " AS method, "
    + _name("j.path")
    + " AS path, "
    + _name("j.endpoint")
    + """ AS endpoint,
    j.body AS body, j.priority AS priority, """
    + _name("j.state")
    + """ AS state,
    j.estimate AS estimate, j.actual AS actual, j.attempts AS attempts, j.reason AS reason,
    j.created / 1000.0 AS created, (j.created + j.updated) / 1000.0 AS updated
    FROM job_rows j;
CREATE VIEW IF NOT EXISTS ledger AS SELECT
    l.id AS id, l.t / 1000.0 AS t, (l.t + l.done) / 1000.0 AS t_done,
    CASE typeof(l.job) WHEN 'integer' THEN (SELECT id FROM job_rows WHERE seq = l.job)
        ELSE l.job END AS job_id, """
    + _name("l.endpoint")
    + " AS endpoint, "
    + _name("l.method")
    + " AS method, "
    + _name("l.path")
    + """ AS path,
    l.attempt AS attempt, l.status AS status, """
    + _name("l.kind")
    + " AS kind, "
    + _name("l.code")
    + """ AS code,
    l.credits_used AS credits_used, l.tokens AS tokens, l.estimate AS estimate,
    l.latency / 1000.0 AS latency, l.rl_limit AS rl_limit, l.rl_remaining AS rl_remaining,
    (l.t + l.rl_reset) / 1000.0 AS rl_reset, l.retry_after / 1000.0 AS retry_after,
    l.message AS message, l.t AS t_ms
    FROM ledger_rows l;
"""
)

#: Schema 4: what ``Store.pack`` moves out of ``ledger_rows`` and ``job_rows`` (a day at 600
#: requests a minute: ~30 B a request where the rows took ~225), and the recorder's snapshot
#: blocks. The views ``ledger`` and ``jobs`` read only the rows still unpacked; the reader
#: (recording/reader.py) and the store's methods read both.
BLOCKS = """
CREATE TABLE IF NOT EXISTS ledger_blocks (
    id INTEGER PRIMARY KEY,
    t0 INTEGER NOT NULL,         -- unix ms: the earliest send time among its rows
    t1 INTEGER NOT NULL,         -- the latest
    n INTEGER NOT NULL,
    data BLOB NOT NULL           -- colblock of LEDGER_BLOCK_COLUMNS
);
CREATE INDEX IF NOT EXISTS ledger_blocks_t ON ledger_blocks(t1, t0);
CREATE TABLE IF NOT EXISTS job_blocks (
    id INTEGER PRIMARY KEY,
    seq0 INTEGER NOT NULL,       -- smallest and largest seq among its jobs
    seq1 INTEGER NOT NULL,
    t0 INTEGER NOT NULL,         -- unix ms: the earliest last update among its jobs
    t1 INTEGER NOT NULL,         -- the latest
    id_lo TEXT NOT NULL,         -- smallest and largest job id: where a lookup by id looks
    id_hi TEXT NOT NULL,
    states TEXT NOT NULL,        -- JSON {state code: jobs}
    n INTEGER NOT NULL,
    data BLOB NOT NULL           -- colblock of JOB_BLOCK_COLUMNS (finished jobs only)
);
CREATE TABLE IF NOT EXISTS snapshot_blocks (
    id INTEGER PRIMARY KEY,      -- written in time order
    t0 REAL NOT NULL UNIQUE,     -- the first snapshot's time
    t1 REAL NOT NULL,            -- the last one's
    key INTEGER NOT NULL,        -- 1: starts with a keyframe (decodes on its own)
    times TEXT NOT NULL,         -- JSON: each snapshot's time, ms after t0
    data BLOB NOT NULL           -- recording/codec.py (zblock1)
);
"""

SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY,
    t REAL NOT NULL,
    level TEXT NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL
);
-- WITHOUT ROWID: the rows are kept in time order in one b-tree, no index beside them.
CREATE TABLE IF NOT EXISTS snapshots (
    t REAL PRIMARY KEY,          -- wall time of the snapshot
    data BLOB NOT NULL           -- encoded by the recorder (see recording/codec.py)
) WITHOUT ROWID;
"""
    + DAILY_TOTALS
    + COMPACT
    + BLOCKS
)


def _seed_names() -> str:
    return "".join(
        f"INSERT OR IGNORE INTO names (id, name) VALUES ({i}, '{n}');"
        for i, n in enumerate(SEEDED_NAMES, 1)
    )


def _ms(col: str) -> str:
    return f"CAST(round({col} * 1000) AS INTEGER)"


def _code(col: str) -> str:
    return f"(SELECT id FROM names WHERE name = {col})"


#: Schema 2 to 3: every row re-encoded (codes, milliseconds), the text tables dropped.
_TO_COMPACT = (
    "ALTER TABLE jobs RENAME TO jobs_v2; ALTER TABLE ledger RENAME TO ledger_v2;"
    "DROP INDEX IF EXISTS jobs_open; DROP INDEX IF EXISTS ledger_t;"
    + COMPACT
    + _seed_names()
    + "INSERT OR IGNORE INTO names (name) SELECT method FROM jobs_v2 UNION "
    "SELECT path FROM jobs_v2 UNION SELECT endpoint FROM jobs_v2 UNION "
    "SELECT state FROM jobs_v2 UNION SELECT endpoint FROM ledger_v2 UNION "
    "SELECT method FROM ledger_v2 UNION SELECT path FROM ledger_v2 UNION "
    "SELECT kind FROM ledger_v2 UNION SELECT code FROM ledger_v2 WHERE code IS NOT NULL;"
    "INSERT INTO job_rows SELECT seq, id, "
    + ", ".join(_code(c) for c in ("method", "path", "endpoint"))
    + ", body, priority, "
    + _code("state")
    + ", estimate, actual, attempts, reason, "
    + _ms("created")
    + ", "
    + _ms("updated")
    + " - "
    + _ms("created")
    + " FROM jobs_v2 ORDER BY seq;"
    "INSERT INTO ledger_rows SELECT l.id, "
    + _ms("l.t")
    + ", "
    + _ms("l.t_done")
    + " - "
    + _ms("l.t")
    + ", COALESCE((SELECT seq FROM job_rows WHERE id = l.job_id), l.job_id), "
    + ", ".join(_code(f"l.{c}") for c in ("endpoint", "method", "path"))
    + ", l.attempt, l.status, "
    + _code("l.kind")
    + ", "
    + _code("l.code")
    + ", l.credits_used, l.tokens, l.estimate, "
    + _ms("l.latency")
    + ", l.rl_limit, l.rl_remaining, "
    + _ms("l.rl_reset")
    + " - "
    + _ms("l.t")
    + ", "
    + _ms("l.retry_after")
    + ", l.message FROM ledger_v2 l ORDER BY l.id;"
    "DROP TABLE jobs_v2; DROP TABLE ledger_v2;"
)

#: Schema changes from each version to the next, applied in order when a writer opens an
#: older file (readers accept older versions as they are: the views of schema 3 read as
#: the tables of schema 2 did).
MIGRATIONS: dict[int, str] = {
    1: DAILY_TOTALS + "DROP INDEX IF EXISTS jobs_state;"
    "CREATE INDEX IF NOT EXISTS jobs_open ON jobs(state) WHERE state NOT IN "
    "('succeeded', 'failed', 'cancelled', 'blocked_preflight');",
    2: _TO_COMPACT,
    3: BLOCKS,
}


@dataclass(frozen=True)
class StoredJob:
    """A job row as loaded for resuming."""

    id: str
    seq: int
    method: str
    path: str
    body: dict[str, Any]
    priority: int
    state: str
    estimate: int
    actual: int | None
    attempts: int
    reason: str
    created: float


def _to_ms(t: float) -> int:
    """Unix seconds (or a duration) as whole milliseconds, as the compact rows keep time."""
    return round(t * 1000)


def _create_private(path: Path) -> None:
    """Create the file (if absent) readable and writable by its owner only."""
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)
    with contextlib.suppress(OSError):
        os.chmod(path, 0o600)


class _Connection:
    """The store's connection: opening (one writer, a flock; readers read-only), the schema
    and its migrations, the codes of ``names``, and the single writer (group commit)."""

    def __init__(self, path: Path, db: aiosqlite.Connection, lock_fd: int | None, readonly: bool):
        self.path = path
        self._db = db
        self._lock_fd = lock_fd
        self.readonly = readonly
        self._pending: list[tuple[str, Sequence[Any] | Iterable[Sequence[Any]], bool]] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._closed = False
        self._busy = False  # a batch is being committed
        self.write_error: str | None = None
        #: string -> its code in ``names`` (a writer's cache; new strings are added as met)
        self._codes: dict[str, int] = {}
        self._next_code = 1

    # --- opening ---------------------------------------------------------------------------

    @classmethod
    async def open(cls, path: str | Path, *, readonly: bool = False) -> Self:
        p = Path(path)
        if readonly:
            if not p.exists():
                raise StoreError(f"no such recording or database: {p}")
            return await cls._open_readonly(p)
        if p.exists() and p.is_dir():
            raise StoreError(f"{p} is a directory; give a file path for --db")
        if not p.parent.exists():
            raise StoreError(f"directory {p.parent} does not exist; create it or pick --db")
        try:
            _create_private(p)
        except PermissionError:
            raise StoreError(
                f"cannot create or write {p} (permission denied); pick a writable --db path"
            ) from None
        except OSError as e:
            raise StoreError(f"cannot create {p}: {e.strerror}") from None
        lock_fd = os.open(p, os.O_RDONLY)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            raise StoreError(
                f"{p} is in use by another mavera-tui process (run, record or the monitor); "
                "stop it or use another --db. Reports and replays can read it meanwhile."
            ) from None
        db: aiosqlite.Connection | None = None
        try:
            with external():
                db = await aiosqlite.connect(p, isolation_level=None)
            store = cls(p, db, lock_fd, False)
            await store._init_schema()
        except (StoreError, sqlite3.DatabaseError) as e:
            # Close first: aiosqlite's thread would otherwise keep the process alive.
            if db is not None:
                with contextlib.suppress(Exception), external():
                    await db.close()
            os.close(lock_fd)
            if isinstance(e, StoreError):
                raise
            raise StoreError(
                f"{p} is not a mavera-tui database ({e}); pick another --db or move the file away"
            ) from None
        store._writer = asyncio.create_task(store._write_loop(), name="store-writer")
        return store

    @classmethod
    async def _open_readonly(cls, p: Path) -> Self:
        with external():
            try:
                db = await aiosqlite.connect(f"file:{p}?mode=ro", uri=True, isolation_level=None)
            except sqlite3.Error as e:
                raise StoreError(f"cannot open {p}: {e}") from None
        store = cls(p, db, None, True)
        try:
            await store._check_schema()
        except (StoreError, sqlite3.DatabaseError) as e:
            # Close first: aiosqlite's thread would otherwise keep the process alive.
            with contextlib.suppress(Exception), external():
                await db.close()
            if isinstance(e, StoreError):
                raise
            raise StoreError(f"{p} is not a mavera-tui recording ({e})") from None
        return store

    async def _q(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with external():
            async with self._db.execute(sql, params) as cur:
                return list(await cur.fetchall())

    async def _check_schema(self) -> None:
        tables = {r[0] for r in await self._q("SELECT name FROM sqlite_master WHERE type='table'")}
        if "meta" not in tables:
            raise StoreError(f"{self.path} is not a mavera-tui database (no meta table)")
        meta = {str(k): str(v) for k, v in await self._q("SELECT key, value FROM meta")}
        self.schema_version = check_meta(self.path, meta)

    async def _init_schema(self) -> None:
        with external():
            await self._db.execute("PRAGMA journal_mode=WAL")
            await self._db.execute("PRAGMA synchronous=NORMAL")
            await self._db.execute("PRAGMA busy_timeout=5000")
        tables = {r[0] for r in await self._q("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and "meta" not in tables:
            raise StoreError(f"{self.path} is an SQLite file of another program; pick another --db")
        if "meta" in tables:
            await self._check_schema()
            await self._migrate()
            return
        with external():
            await self._db.executescript(
                "BEGIN;" + SCHEMA + _seed_names() + f"INSERT INTO meta VALUES ('app', '{APP_ID}');"
                f"INSERT INTO meta VALUES ('schema_version', '{SCHEMA_VERSION}');"
                "COMMIT;"
            )
        self.schema_version = SCHEMA_VERSION
        await self._load_codes()

    async def _load_codes(self) -> None:
        self._codes = {str(n): int(i) for i, n in await self._q("SELECT id, name FROM names")}
        self._next_code = max(self._codes.values(), default=0) + 1

    def _code(self, name: str) -> int:
        """The code of ``name`` in ``names``; a new string is added (through the writer,
        before the row that uses it)."""
        code = self._codes.get(name)
        if code is None:
            code = self._codes[name] = self._next_code
            self._next_code += 1
            self._enqueue("INSERT INTO names (id, name) VALUES (?, ?)", (code, name))
        return code

    async def _migrate(self) -> None:
        """Bring an older file up to SCHEMA_VERSION in one transaction (before the writer
        starts, so nothing else writes meanwhile)."""
        version = self.schema_version
        if version >= SCHEMA_VERSION:
            await self._load_codes()
            return
        steps = "".join(MIGRATIONS[v] for v in range(version, SCHEMA_VERSION))
        with external():
            await self._db.executescript(
                "BEGIN;"
                + steps
                + f"UPDATE meta SET value = '{SCHEMA_VERSION}' WHERE key = 'schema_version';"
                "COMMIT;"
            )
        self.schema_version = SCHEMA_VERSION
        await self._load_codes()

    # --- the writer ------------------------------------------------------------------------

    def _enqueue(self, sql: str, params: Any, many: bool = False) -> None:
        if self.readonly:
            raise StoreError("the store is open read-only")
        self._pending.append((sql, params, many))
        self._wake.set()

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._pending:
                # Everything a waiter asked for was committed by an earlier batch.
                waiters, self._waiters = self._waiters, []
                for w in waiters:
                    if not w.done():
                        w.set_result(None)
                if self._closed:
                    return
                continue
            batch, self._pending = self._pending, []
            waiters, self._waiters = self._waiters, []
            self._busy = True
            try:
                with external():
                    await self._db.execute("BEGIN")
                    for sql, params, many in batch:
                        if many:
                            await self._db.executemany(sql, params)
                        else:
                            await self._db.execute(sql, params)
                    await self._db.execute("COMMIT")
                err: BaseException | None = None
            except sqlite3.Error as e:
                with contextlib.suppress(sqlite3.Error), external():
                    await self._db.execute("ROLLBACK")
                self.write_error = _describe_sqlite_error(self.path, e)
                err = StoreError(self.write_error)
                # Keep the batch: nothing is dropped; retry on the next wake-up.
                self._pending = batch + self._pending
            finally:
                self._busy = False
            for w in waiters:
                if not w.done():
                    if err is None:
                        w.set_result(None)
                    else:
                        w.set_exception(err)
            if self._closed and not self._pending:
                return
            if err is not None:
                await asyncio.sleep(0.5)
                self._wake.set()

    async def flush(self) -> None:
        """Wait until everything enqueued so far is committed."""
        if self.readonly or (not self._pending and not self._busy):
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        self._wake.set()
        await fut

    async def close(self) -> None:
        """Flush, stop the writer, close the connection and release the lock."""
        if not self.readonly and self._writer is not None:
            # Writes already failing (disk full, read-only): one more try, not ten seconds
            # of them. What cannot be written was reported when it failed.
            patience = 1.0 if self.write_error else 10.0
            with contextlib.suppress(StoreError, TimeoutError):
                if self._pending:
                    await asyncio.wait_for(self.flush(), timeout=patience)
            self._closed = True
            self._wake.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._writer, timeout=patience)
        with contextlib.suppress(Exception), external():
            await self._db.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def set_meta(self, key: str, value: str) -> None:
        self._enqueue("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    async def meta(self) -> dict[str, str]:
        return {k: v for k, v in await self._q("SELECT key, value FROM meta")}

    def write(self, sql: str, params: Any, *, many: bool = False) -> None:
        """Enqueue one statement for the single writer (for tables another module keeps,
        such as the fleet's ledger archive). Statements enqueued with no await between
        them are committed in one transaction."""
        self._enqueue(sql, params, many)

    async def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Read-only query for reports and replay."""
        return [tuple(r) for r in await self._q(sql, params)]


#: The columns of a ledger block: ``ledger_rows`` as stored (codes, milliseconds), except
#: ``job``, which is the job's id (text) there: the job's own row may be packed by then;
#: ``latency``, kept as its difference from ``done`` (the two differ by a millisecond or
#: so: the difference costs nothing, the latency itself two bytes a row); and ``rl_reset``
#: as the time it names (unix ms), which rows in a row share.
LEDGER_BLOCK_COLUMNS = (
    "id",
    "t",
    "done",
    "job",
    "endpoint",
    "method",
    "path",
    "attempt",
    "status",
    "kind",
    "code",
    "credits_used",
    "tokens",
    "estimate",
    "latency_less_done",
    "rl_limit",
    "rl_remaining",
    "rl_reset_at",
    "retry_after",
    "message",
)
#: The columns of a job block: ``job_rows`` as stored.
JOB_BLOCK_COLUMNS = (
    "seq",
    "id",
    "method",
    "path",
    "endpoint",
    "body",
    "priority",
    "state",
    "estimate",
    "actual",
    "attempts",
    "reason",
    "created",
    "updated",
)
#: Rows per block at most: 600 is a minute at 600 requests a minute; more compress little
#: better and make each lookup decode more.
BLOCK_ROWS = 600
#: The ``ledger`` view's columns, as ``ledger_view_row`` computes them from a block row.
LEDGER_VIEW_COLUMNS = (
    "id",
    "t",
    "t_done",
    "job_id",
    "endpoint",
    "method",
    "path",
    "attempt",
    "status",
    "kind",
    "code",
    "credits_used",
    "tokens",
    "estimate",
    "latency",
    "rl_limit",
    "rl_remaining",
    "rl_reset",
    "retry_after",
    "message",
    "t_ms",
)


def ledger_view_row(raw: Sequence[Any], names: dict[int, str]) -> tuple[Any, ...]:
    """A ledger block row as the ``ledger`` view shows a row (LEDGER_VIEW_COLUMNS): the same
    arithmetic as the view's SQL, so a packed row reads exactly as it did unpacked."""
    (i, t, done, job, ep, method, path, attempt, status, kind, code, credits, tokens, est,
     latency, rl_limit, rl_rem, rl_reset, retry_after, message) = raw  # fmt: skip
    return (
        i,
        t / 1000.0,
        (t + done) / 1000.0,
        job,
        names.get(ep),
        names.get(method),
        names.get(path),
        attempt,
        status,
        names.get(kind),
        None if code is None else names.get(code),
        credits,
        tokens,
        est,
        None if latency is None else (latency + done) / 1000.0,
        rl_limit,
        rl_rem,
        None if rl_reset is None else rl_reset / 1000.0,
        None if retry_after is None else retry_after / 1000.0,
        message,
        t,
    )


def _ledger_block(chunk: list[tuple[Any, ...]]) -> tuple[str, tuple[Any, ...]]:
    """The INSERT of a ledger block holding ``chunk`` (LEDGER_BLOCK_COLUMNS rows)."""
    ts = [r[1] for r in chunk]
    return (
        "INSERT INTO ledger_blocks (t0, t1, n, data) VALUES (?, ?, ?, ?)",
        (
            min(ts),
            max(ts),
            len(chunk),
            pack(LEDGER_BLOCK_COLUMNS, chunk, ("id", "t", "rl_reset_at"), ("job",)),
        ),
    )


def _job_block(chunk: list[tuple[Any, ...]]) -> tuple[str, tuple[Any, ...]]:
    """The INSERT of a job block holding ``chunk`` (JOB_BLOCK_COLUMNS rows)."""
    ids = sorted(str(r[1]) for r in chunk)
    states: dict[str, int] = {}
    for r in chunk:
        states[str(r[7])] = states.get(str(r[7]), 0) + 1
    return (
        "INSERT INTO job_blocks (seq0, seq1, t0, t1, id_lo, id_hi, states, n, data) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            chunk[0][0],
            chunk[-1][0],
            min(r[12] + r[13] for r in chunk),
            max(r[12] + r[13] for r in chunk),
            ids[0],
            ids[-1],
            json.dumps(states, separators=(",", ":")),
            len(chunk),
            pack(JOB_BLOCK_COLUMNS, chunk, ("seq", "created"), ("id",)),
        ),
    )


class _Packed(_Connection):
    """Packed history (schema 4): ``pack`` moves the ledger's rows and finished jobs into
    column blocks (colblock.py) in one transaction each, so nothing is ever only in memory;
    the readers here see rows and blocks as one."""

    _has_blocks: bool | None = None
    _names_by_code: dict[int, str] | None = None
    _job_ranges: list[tuple[int, str, str]] | None = None  # (block, id_lo, id_hi)
    _job_block_cache: dict[int, list[tuple[Any, ...]]] | None = None

    async def has_blocks(self) -> bool:
        """True if the file has the block tables (schema 4 or later)."""
        if self._has_blocks is None:
            rows = await self._q(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='ledger_blocks'"
            )
            self._has_blocks = bool(rows)
        return self._has_blocks

    async def names_by_code(self) -> dict[int, str]:
        """code -> string of ``names`` (a writer's from its own cache, which has every
        code it gave out; a reader's read anew)."""
        if not self.readonly and self._codes:
            if self._names_by_code is None or len(self._names_by_code) != len(self._codes):
                self._names_by_code = {c: n for n, c in self._codes.items()}
            return self._names_by_code
        return {int(i): str(n) for i, n in await self._q("SELECT id, name FROM names")}

    # --- packing -----------------------------------------------------------------------

    async def pack(self) -> dict[str, int]:
        """Move the ledger's rows (all but the newest: its id keeps SQLite from reusing
        ids) and the jobs in a final state that no unpacked ledger row names into blocks
        of at most BLOCK_ROWS rows. Each block is written and its rows deleted in the same
        transaction, so a crash leaves either the rows or the block. Returns the rows
        packed per table."""
        await self.flush()
        out = {"ledger": 0, "jobs": 0}
        cols = [f"l.{c}" for c in LEDGER_BLOCK_COLUMNS[4:]]
        cols[cols.index("l.latency_less_done")] = "l.latency - l.done"
        cols[cols.index("l.rl_reset_at")] = "l.t + l.rl_reset"
        rows = await self._q(
            "SELECT l.id, l.t, l.done, CASE typeof(l.job) WHEN 'integer' THEN "
            "(SELECT id FROM job_rows WHERE seq = l.job) ELSE l.job END, "
            + ", ".join(cols)
            + " FROM ledger_rows l WHERE l.id < (SELECT MAX(id) FROM ledger_rows) ORDER BY l.id"
        )
        for i in range(0, len(rows), BLOCK_ROWS):
            chunk = [tuple(r) for r in rows[i : i + BLOCK_ROWS]]
            self._enqueue(*_ledger_block(chunk))
            self._enqueue(
                "DELETE FROM ledger_rows WHERE id BETWEEN ? AND ?", (chunk[0][0], chunk[-1][0])
            )
            out["ledger"] += len(chunk)
        await self.flush()
        final = ",".join(str(_CODE[s]) for s in PRUNABLE_STATES)
        jobs = await self._q(
            f"SELECT {', '.join(JOB_BLOCK_COLUMNS)} FROM job_rows WHERE state IN ({final}) "
            "AND seq < (SELECT MAX(seq) FROM job_rows) AND seq NOT IN (SELECT job FROM "
            "ledger_rows WHERE typeof(job) = 'integer') ORDER BY seq"
        )
        for i in range(0, len(jobs), BLOCK_ROWS):
            chunk = [tuple(r) for r in jobs[i : i + BLOCK_ROWS]]
            self._enqueue(*_job_block(chunk))
            self._enqueue(
                f"DELETE FROM job_rows WHERE seq IN ({','.join('?' * len(chunk))})",
                [r[0] for r in chunk],
            )
            out["jobs"] += len(chunk)
        await self.flush()
        self._job_ranges = None
        return out

    async def unpack(self) -> dict[str, int]:
        """The inverse of ``pack``: every ledger and job block back into rows (the views
        then show the whole history to plain SQL), in one transaction. Snapshot blocks
        stay (their encoding is the recorder's). Returns the rows unpacked per table."""
        out = {"ledger": 0, "jobs": 0}
        if not await self.has_blocks():
            return out
        await self.flush()
        for (blob,) in await self._q("SELECT data FROM job_blocks ORDER BY seq0"):
            jobs = unpack(bytes(blob))[1]
            self._enqueue(
                f"INSERT INTO job_rows ({', '.join(JOB_BLOCK_COLUMNS)}) VALUES "
                f"({','.join('?' * len(JOB_BLOCK_COLUMNS))})",
                jobs,
                many=True,
            )
            out["jobs"] += len(jobs)
        cols = [c for c in LEDGER_BLOCK_COLUMNS if c != "latency_less_done"] + ["latency"]
        cols[cols.index("rl_reset_at")] = "rl_reset"
        k = LEDGER_BLOCK_COLUMNS.index("latency_less_done")
        z = LEDGER_BLOCK_COLUMNS.index("rl_reset_at")
        for (blob,) in await self._q("SELECT data FROM ledger_blocks ORDER BY id"):
            rows: list[tuple[Any, ...]] = []
            for r in unpack(bytes(blob))[1]:
                x = list(r)
                x[z] = None if r[z] is None else r[z] - r[1]
                rows.append((*x[:k], *x[k + 1 :], None if r[k] is None else r[k] + r[2]))
            # A job's id back to its seq where the job has a row (as record_attempt does).
            self._enqueue(
                f"INSERT INTO ledger_rows ({', '.join(cols)}) VALUES (?, ?, ?, "
                "COALESCE((SELECT seq FROM job_rows WHERE id = ?), ?), "
                f"{','.join('?' * (len(cols) - 4))})",
                [(*r[:3], r[3], r[3], *r[4:]) for r in rows],
                many=True,
            )
            out["ledger"] += len(rows)
        self._enqueue("DELETE FROM job_blocks", ())
        self._enqueue("DELETE FROM ledger_blocks", ())
        await self.flush()
        self._job_ranges = self._job_block_cache = None
        return out

    def add_snapshot_block(
        self,
        t0: float,
        t1: float,
        key: bool,
        times: list[int],
        data: bytes,
        *,
        merges: bool = False,
    ) -> None:
        """Write-behind: one block of snapshots (recording/codec.py). With ``merges`` it
        replaces the blocks it was merged from (those starting in [t0, t1]), in the same
        transaction: the writer commits what is enqueued together as one batch."""
        if merges:
            self._enqueue("DELETE FROM snapshot_blocks WHERE t0 >= ? AND t0 <= ?", (t0, t1))
        self._enqueue(
            "INSERT OR REPLACE INTO snapshot_blocks (t0, t1, key, times, data) "
            "VALUES (?, ?, ?, ?, ?)",
            (t0, t1, int(key), json.dumps(times, separators=(",", ":")), data),
        )

    # --- reading -----------------------------------------------------------------------

    async def ledger_block_rows(
        self, since_ms: int | None = None, until_ms: int | None = None
    ) -> list[tuple[Any, ...]]:
        """Packed ledger rows (LEDGER_VIEW_COLUMNS) sent in [since_ms, until_ms]."""
        if not await self.has_blocks():
            return []
        where, params = "WHERE 1=1", []
        if since_ms is not None:
            where += " AND t1 >= ?"
            params.append(since_ms)
        if until_ms is not None:
            where += " AND t0 <= ?"
            params.append(until_ms)
        names = await self.names_by_code()
        out = []
        for (blob,) in await self._q(f"SELECT data FROM ledger_blocks {where} ORDER BY id", params):
            for raw in unpack(bytes(blob))[1]:
                t = raw[1]
                if (since_ms is None or t >= since_ms) and (until_ms is None or t <= until_ms):
                    out.append(ledger_view_row(raw, names))
        return out

    async def _job_block_rows(self, block: int) -> list[tuple[Any, ...]]:
        cache = self._job_block_cache
        if cache is None:
            cache = self._job_block_cache = {}
        if block not in cache:
            rows = await self._q("SELECT data FROM job_blocks WHERE id = ?", (block,))
            cache[block] = unpack(bytes(rows[0][0]))[1] if rows else []
            while len(cache) > 32:  # a few recent blocks: lookups come in runs
                del cache[next(iter(cache))]
        return cache[block]

    async def archived_jobs(self, ids: Iterable[str]) -> dict[str, tuple[Any, ...]]:
        """Packed jobs by id (JOB_BLOCK_COLUMNS rows) among ``ids``: only the blocks whose
        id range holds one of them are decoded."""
        if not await self.has_blocks():
            return {}
        if self._job_ranges is None or self.readonly:
            self._job_ranges = [
                (int(b), str(lo), str(hi))
                for b, lo, hi in await self._q("SELECT id, id_lo, id_hi FROM job_blocks")
            ]
        want = set(ids)
        if not want or not self._job_ranges:
            return {}
        found: dict[str, tuple[Any, ...]] = {}
        lo_w, hi_w = min(want), max(want)
        for b, lo, hi in self._job_ranges:
            if hi < lo_w or lo > hi_w or not any(lo <= x <= hi for x in want):
                continue
            for r in await self._job_block_rows(b):
                if r[1] in want:
                    found[r[1]] = r
        return found

    async def archived_job_rows(self) -> list[tuple[Any, ...]]:
        """Every packed job (JOB_BLOCK_COLUMNS rows), in seq order."""
        if not await self.has_blocks():
            return []
        out: list[tuple[Any, ...]] = []
        for (blob,) in await self._q("SELECT data FROM job_blocks ORDER BY seq0"):
            out.extend(unpack(bytes(blob))[1])
        return out

    async def archived_states(self) -> dict[str, int]:
        """Packed jobs per state (from each block's counts: nothing decoded)."""
        if not await self.has_blocks():
            return {}
        names = await self.names_by_code()
        out: dict[str, int] = {}
        for (states,) in await self._q("SELECT states FROM job_blocks"):
            for code, n in json.loads(states).items():
                name = names.get(int(code), str(code))
                out[name] = out.get(name, 0) + int(n)
        return out

    async def snapshot_block_rows(
        self, since: float | None = None, until: float | None = None
    ) -> list[tuple[float, bool, list[float], bytes]]:
        """Snapshot blocks ``(t0, key, times, data)`` in time order, from the last block
        that starts with a keyframe at or before ``since`` up to ``until``."""
        if not await self.has_blocks():
            return []
        lo = since
        if since is not None:
            rows = await self._q(
                "SELECT MAX(t0) FROM snapshot_blocks WHERE key = 1 AND t0 <= ?", (since,)
            )
            lo = rows[0][0] if rows and rows[0][0] is not None else since
        where, params = "WHERE 1=1", []
        if lo is not None:
            where += " AND t0 >= ?"
            params.append(lo)
        if until is not None:
            where += " AND t0 <= ?"
            params.append(until)
        out = []
        for t0, key, times, data in await self._q(
            f"SELECT t0, key, times, data FROM snapshot_blocks {where} ORDER BY t0", params
        ):
            t0 = float(t0)
            ts = [round(t0 + ms / 1000.0, 3) for ms in json.loads(times)]
            out.append((t0, bool(key), ts, bytes(data)))
        return out


class _Retention(_Packed):
    """Retention (``record --keep``): old ledger rows folded into daily totals, old
    snapshots (up to a keyframe) and finished jobs dropped."""

    async def prune(self, before: float) -> dict[str, int]:
        """Retention: drop what was recorded before ``before`` (unix seconds), in one
        transaction through the writer (one more batch in the group-commit queue).

        Ledger rows sent before the cut are first added to ``daily_totals`` (per UTC day
        and endpoint: requests, 429s, 402s, credits, retries, and the first/last send time
        folded in), so a report over old days still answers; every request is counted in
        exactly one of the two. Snapshots go up to the last keyframe at or before the cut
        (what stays still decodes from its first row). Jobs in a final state last updated
        before the cut go too, and alerts; queued and in-flight jobs always stay. Returns
        the number of rows dropped per table."""
        final = ",".join("?" * len(PRUNABLE_STATES))
        # Jobs have no index on time (it would cost as much disk as retention saves), but
        # rows are appended as jobs are created: bound the scan by rowid, found by bisection.
        bound = await self._last_rowid_created_before(before)
        cut = _to_ms(before)
        jobs_where = f"seq <= ?1 AND created + updated < ?2 AND state IN ({final})"
        jobs_params = (bound, cut, *(_CODE[s] for s in PRUNABLE_STATES))
        counts = {
            str(k): int(n)
            for k, n in await self._q(
                "SELECT 'ledger', COUNT(*) FROM ledger_rows WHERE t < ?2 UNION ALL "
                f"SELECT 'jobs', COUNT(*) FROM job_rows WHERE {jobs_where}",
                jobs_params,
            )
        }
        key_t = await self.keyframe_at_or_before(before)
        snap_n = 0
        if key_t is not None:
            [(snap_n,)] = await self._q("SELECT COUNT(*) FROM snapshots WHERE t < ?", (key_t,))
        packed = await self._prune_blocks(before, key_t)
        if counts.get("ledger"):
            self._enqueue(
                "INSERT INTO daily_totals (day, endpoint, requests, r429, r402, credits, "
                "retries, first, last) SELECT date(t / 1000, 'unixepoch'), "
                "(SELECT name FROM names WHERE id = endpoint), COUNT(*), "
                "SUM(status = 429), SUM(status = 402), COALESCE(SUM(credits_used), 0), "
                "SUM(job IS NOT NULL AND attempt > 1), MIN(t) / 1000.0, MAX(t) / 1000.0 "
                "FROM ledger_rows WHERE t < ? GROUP BY 1, 2 "
                "ON CONFLICT (day, endpoint) DO UPDATE SET "
                "requests = requests + excluded.requests, r429 = r429 + excluded.r429, "
                "r402 = r402 + excluded.r402, credits = credits + excluded.credits, "
                "retries = retries + excluded.retries, "
                "first = MIN(first, excluded.first), last = MAX(last, excluded.last)",
                (cut,),
            )
            self._enqueue("DELETE FROM ledger_rows WHERE t < ?", (cut,))
        if snap_n:
            self._enqueue("DELETE FROM snapshots WHERE t < ?", (key_t,))
        if counts.get("jobs"):
            self._enqueue(f"DELETE FROM job_rows WHERE {jobs_where}", jobs_params)
        self._enqueue("DELETE FROM alerts WHERE t < ?", (before,))
        self.set_meta("retained_since", f"{before:.3f}")
        await self.flush()
        self._job_ranges = self._job_block_cache = None
        return {
            "ledger": int(counts.get("ledger", 0)) + packed["ledger"],
            "snapshots": int(snap_n) + packed["snapshots"],
            "jobs": int(counts.get("jobs", 0)) + packed["jobs"],
        }

    async def _prune_blocks(self, before: float, key_t: float | None) -> dict[str, int]:
        """The packed part of a retention pass (enqueued with the rest of it): ledger
        rows sent before the cut, folded into the daily totals as unpacked rows are, and
        jobs in a final state last updated before it, both out of their blocks (a block
        across the cut is written again with what stays); snapshot blocks before the last
        keyframe at or before the cut. Drops exactly what it would drop were nothing
        packed."""
        out = {"ledger": 0, "jobs": 0, "snapshots": 0}
        if not await self.has_blocks():
            return out
        cut = _to_ms(before)
        names = await self.names_by_code()
        totals: dict[tuple[str, str], list[Any]] = {}
        blocks = await self._q("SELECT id, data FROM ledger_blocks WHERE t0 < ?", (cut,))
        for block, blob in blocks:
            rows = unpack(bytes(blob))[1]
            keep = [r for r in rows if r[1] >= cut]
            for raw in rows:
                if raw[1] >= cut:
                    continue
                t, job, ep, attempt, status, credits = (
                    raw[1], raw[3], raw[4], raw[7], raw[8], raw[11]
                )  # fmt: skip
                day = datetime.fromtimestamp(t / 1000, UTC).strftime("%Y-%m-%d")
                e = totals.setdefault((day, names.get(ep, "")), [0, 0, 0, 0, 0, t, t])
                e[0] += 1
                e[1] += status == 429
                e[2] += status == 402
                e[3] += credits or 0
                e[4] += job is not None and attempt > 1
                e[5] = min(e[5], t)
                e[6] = max(e[6], t)
                out["ledger"] += 1
            self._replace_block("ledger_blocks", block, keep, _ledger_block)
        if totals:
            self._enqueue(
                "INSERT INTO daily_totals (day, endpoint, requests, r429, r402, credits, "
                "retries, first, last) VALUES (?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT (day, endpoint) DO UPDATE SET "
                "requests = requests + excluded.requests, r429 = r429 + excluded.r429, "
                "r402 = r402 + excluded.r402, credits = credits + excluded.credits, "
                "retries = retries + excluded.retries, "
                "first = MIN(first, excluded.first), last = MAX(last, excluded.last)",
                [
                    (day, ep, *v[:5], v[5] / 1000.0, v[6] / 1000.0)
                    for (day, ep), v in sorted(totals.items())
                ],
                many=True,
            )
        blocks = await self._q("SELECT id, data FROM job_blocks WHERE t0 < ?", (cut,))
        for block, blob in blocks:
            rows = unpack(bytes(blob))[1]
            keep = [r for r in rows if r[12] + r[13] >= cut]
            out["jobs"] += len(rows) - len(keep)
            self._replace_block("job_blocks", block, keep, _job_block)
        if key_t is not None:
            snaps = await self._q("SELECT times FROM snapshot_blocks WHERE t0 < ?", (key_t,))
            out["snapshots"] = sum(len(json.loads(r[0])) for r in snaps)
            if snaps:
                self._enqueue("DELETE FROM snapshot_blocks WHERE t0 < ?", (key_t,))
        return out

    def _replace_block(self, table: str, block: int, keep: list[Any], make: Any) -> None:
        """Delete ``block`` of ``table``; write ``keep`` (the rows that stay) as a new one."""
        self._enqueue(f"DELETE FROM {table} WHERE id = ?", (block,))
        if keep:
            sql, params = make(keep)
            self._enqueue(sql, params)

    async def keyframe_at_or_before(self, t: float) -> float | None:
        """Time of the last snapshot at or before ``t`` that decodes on its own (a 'K'
        blob, recording/codec.py), or None. Walks back from ``t``: at most one keyframe
        interval of rows is read."""
        rows = await self._q(
            "SELECT t FROM snapshots WHERE t <= ? AND substr(data, 1, 1) = "
            "X'4B' ORDER BY t DESC LIMIT 1",
            (t,),
        )
        found = [float(rows[0][0])] if rows else []
        if await self.has_blocks():  # or a block that starts with one
            rows = await self._q(
                "SELECT MAX(t0) FROM snapshot_blocks WHERE key = 1 AND t0 <= ?", (t,)
            )
            if rows and rows[0][0] is not None:
                found.append(float(rows[0][0]))
        return max(found) if found else None

    async def _last_rowid_created_before(self, t: float) -> int:
        """The largest jobs rowid whose job was created before ``t`` (0 if none), by
        bisection over rowids (each probe is one b-tree lookup; creation times grow with
        the rowid, and where a clock stepped back the bound is only a little off)."""
        t_ms = _to_ms(t)
        [(lo_id, hi_id)] = await self._q("SELECT MIN(seq), MAX(seq) FROM job_rows")
        if lo_id is None:
            return 0
        lo, hi = int(lo_id) - 1, int(hi_id)  # invariant: created(lo) < t <= created(hi+1)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            rows = await self._q(
                "SELECT seq, created FROM job_rows WHERE seq >= ? ORDER BY seq LIMIT 1", (mid,)
            )
            if rows and rows[0][1] < t_ms:
                lo = max(mid, int(rows[0][0]))
            else:
                hi = mid - 1
        return lo


class _JobReads(_Retention):
    """What the monitor reads of stored jobs: a page of the list, one job's request and
    its attempts (rows and packed blocks alike)."""

    #: Ledger columns ``job_attempts`` returns, by name.
    ATTEMPT_FIELDS = (
        "t",
        "t_done",
        "attempt",
        "status",
        "kind",
        "code",
        "credits_used",
        "estimate",
        "latency",
        "rl_limit",
        "rl_remaining",
        "rl_reset",
        "retry_after",
        "message",
    )
    #: Columns ``jobs_page`` may sort by (anything else falls back to creation order).
    JOB_ORDERS = {
        "created": "created",
        "id": "id",
        "state": "state",
        "endpoint": "endpoint",
        "estimate": "estimate",
        "actual": "actual",
        "attempts": "attempts",
        "priority": "priority",
        "updated": "updated",
        "reason": "reason",
    }

    async def job_attempts(self, job_id: str) -> list[dict[str, Any]]:
        """Every ledger row of one job, oldest first (read-only; writes still pending are
        not seen until the writer commits them, a few milliseconds later)."""
        # On the rows: the job's seq (or its id, for a job without a row), no decoding
        # of the whole ledger to find them.
        rows = await self._q(
            f"SELECT {', '.join(self.ATTEMPT_FIELDS)}, id FROM ledger WHERE id IN (SELECT id "
            "FROM ledger_rows WHERE job = (SELECT seq FROM job_rows WHERE id = ?1) "
            "OR job = ?1) ORDER BY t, id",
            (job_id,),
        )
        out = [tuple(r) for r in rows]
        if await self.has_blocks():
            # Packed attempts: in the blocks sent since the job was created.
            created = await self._q("SELECT created FROM job_rows WHERE id = ?", (job_id,))
            if created:
                since: int | None = int(created[0][0])
            else:
                packed = (await self.archived_jobs([job_id])).get(job_id)
                since = None if packed is None else int(packed[12])
            if since is not None:
                cols = [LEDGER_VIEW_COLUMNS.index(c) for c in (*self.ATTEMPT_FIELDS, "id")]
                out += [
                    tuple(r[i] for i in cols)
                    for r in await self.ledger_block_rows(since)
                    if r[3] == job_id
                ]
                out.sort(key=lambda r: (r[0], r[-1]))
        return [dict(zip(self.ATTEMPT_FIELDS, r[:-1], strict=True)) for r in out]

    async def job_request(self, job_id: str) -> tuple[str, str, dict[str, Any], int, str] | None:
        """``(method, path, body, priority, state)`` of a stored job, or None (read-only)."""
        rows = await self._q(
            "SELECT method, path, body, priority, state FROM jobs WHERE id = ?", (job_id,)
        )  # the view's id is the rows' (indexed) id: one lookup
        if rows:
            method, path, body, priority, state = tuple(rows[0])
        else:
            packed = (await self.archived_jobs([job_id])).get(job_id)
            if packed is None:
                return None
            names = await self.names_by_code()
            method, path, state = (names.get(packed[i], "") for i in (2, 3, 7))
            body, priority = packed[5], packed[6]
        try:
            parsed = json.loads(body)
        except (TypeError, ValueError):
            parsed = {}
        return method, path, parsed if isinstance(parsed, dict) else {}, priority, state

    async def jobs_page(
        self,
        offset: int,
        limit: int,
        text: str = "",
        order: str = "created",
        descending: bool = True,
    ) -> tuple[list[tuple[Any, ...]], int]:
        """A page of job rows ``(id, method, path, endpoint, state, priority, estimate,
        actual, attempts, reason, created, updated)`` matching ``text`` anywhere in id,
        state, endpoint or reason; and the number matching in all."""
        where, params = "", []
        if text:
            like = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            where = (
                " WHERE id LIKE ? ESCAPE '\\' OR state LIKE ? ESCAPE '\\'"
                " OR endpoint LIKE ? ESCAPE '\\' OR reason LIKE ? ESCAPE '\\'"
            )
            params = [like] * 4
        col = self.JOB_ORDERS.get(order, "created")
        direction = "DESC" if descending else "ASC"
        if await self.has_blocks() and (await self._q("SELECT 1 FROM job_blocks LIMIT 1")):
            return await self._jobs_page_packed(offset, limit, text, col, descending)
        [(total,)] = await self._q(f"SELECT COUNT(*) FROM jobs{where}", params)
        rows = await self._q(
            "SELECT id, method, path, endpoint, state, priority, estimate, actual, attempts, "
            f"reason, created, updated FROM jobs{where} ORDER BY {col} {direction}, seq "
            f"{direction} LIMIT ? OFFSET ?",
            [*params, max(0, int(limit)), max(0, int(offset))],
        )
        return [tuple(r) for r in rows], int(total)

    async def _jobs_page_packed(
        self, offset: int, limit: int, text: str, col: str, descending: bool
    ) -> tuple[list[tuple[Any, ...]], int]:
        """``jobs_page`` over the rows and the packed jobs: filtered and sorted here as the
        SQL would (LIKE: ASCII case-insensitive; NULL before any value). Decodes every
        job block: slower than SQL over rows alone, seconds for a day at 600 a minute."""
        cols = (
            "id", "method", "path", "endpoint", "state", "priority", "estimate", "actual",
            "attempts", "reason", "created", "updated", "seq",
        )  # fmt: skip
        rows: list[tuple[Any, ...]] = [
            tuple(r) for r in await self._q(f"SELECT {', '.join(cols)} FROM jobs")
        ]
        names = await self.names_by_code()
        for r in await self.archived_job_rows():
            seq, jid, m, p, ep, _b, prio, st, est, act, att, reason, created, upd = r
            rows.append(
                (jid, names.get(m), names.get(p), names.get(ep), names.get(st), prio, est, act)
                + (att, reason, created / 1000.0, (created + upd) / 1000.0, seq)
            )
        if text:
            needle = text.lower()
            rows = [r for r in rows if any(needle in str(r[i] or "").lower() for i in (0, 4, 3, 9))]
        k = cols.index(col)
        rows.sort(key=lambda r: (r[k] is not None, r[k] if r[k] is not None else 0, r[-1]))
        if descending:
            rows.reverse()
        start = max(0, int(offset))
        return [r[:-1] for r in rows[start : start + max(0, int(limit))]], len(rows)


class Store(_JobReads):
    """The SQLite store. Open with ``await Store.open(path)``; close with ``await close()``."""

    # --- jobs ------------------------------------------------------------------------------

    # One numbering for every engine on this store (the proxy runs one engine per key on one
    # file): each taking MAX(seq) + 1 on its own collided on the unique seq.
    _seq_counter: itertools.count[int] | None = None

    async def next_seq(self) -> int:
        """The largest seq given out so far (packed jobs included), 0 if none."""
        rows = await self._q("SELECT COALESCE(MAX(seq), 0) FROM job_rows")
        top = int(rows[0][0])
        if await self.has_blocks():
            rows = await self._q("SELECT COALESCE(MAX(seq1), 0) FROM job_blocks")
            top = max(top, int(rows[0][0]))
        return top

    async def seq_counter(self) -> itertools.count[int]:
        """The job numbers to give out, shared by every scheduler on this store."""
        if self._seq_counter is None:
            top = await self.next_seq()
            if self._seq_counter is None:  # another engine may have made it meanwhile
                self._seq_counter = itertools.count(top + 1)
        return self._seq_counter

    async def existing_ids(self, ids: Iterable[str]) -> set[str]:
        ids = list(ids)
        found: set[str] = set()
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            rows = await self._q(
                f"SELECT id FROM job_rows WHERE id IN ({','.join('?' * len(chunk))})", chunk
            )
            found.update(r[0] for r in rows)
        found.update(await self.archived_jobs(set(ids) - found))
        return found

    async def job_states(self, ids: Iterable[str]) -> dict[str, str]:
        """id -> state of the stored jobs among ``ids`` (packed ones included)."""
        ids = list(ids)
        out: dict[str, str] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            rows = await self._q(
                f"SELECT id, state FROM jobs WHERE id IN ({','.join('?' * len(chunk))})", chunk
            )
            out.update((str(r[0]), str(r[1])) for r in rows)
        names = await self.names_by_code() if await self.has_blocks() else {}
        for job_id, row in (await self.archived_jobs(set(ids) - set(out))).items():
            out[job_id] = names.get(row[7], str(row[7]))
        return out

    async def add_jobs(self, rows: list[tuple[Any, ...]]) -> None:
        """Insert jobs: (id, seq, method, path, endpoint, body_json, priority, state,
        estimate, reason, created). Durable when this returns."""
        c = self._code
        encoded = [
            (i, seq, c(m), c(p), c(ep), body, prio, c(st), est, reason, _to_ms(created))
            for i, seq, m, p, ep, body, prio, st, est, reason, created in rows
        ]
        self._enqueue(
            "INSERT INTO job_rows (id, seq, method, path, endpoint, body, priority, state, "
            "estimate, reason, created, updated) VALUES (?,?,?,?,?,?,?,?,?,?,?,0)",
            encoded,
            many=True,
        )
        await self.flush()

    async def mark_dispatch(self, rows: list[tuple[str, int, float]]) -> None:
        """Durably mark jobs in flight before their requests leave: (id, attempts, wall)."""
        self._enqueue(
            "UPDATE job_rows SET state=?, attempts=?, updated=? - created WHERE id=?",
            [(self._code("in_flight"), a, _to_ms(t), i) for i, a, t in rows],
            many=True,
        )
        await self.flush()

    def set_priority(self, job_id: str, priority: int) -> None:
        """Write-behind priority change (an operator's; a restart keeps it)."""
        self._enqueue("UPDATE job_rows SET priority=? WHERE id=?", (int(priority), job_id))

    def update_job(
        self,
        job_id: str,
        state: str,
        *,
        reason: str = "",
        actual: int | None = None,
        attempts: int | None = None,
        wall: float,
    ) -> None:
        """Write-behind state change."""
        self._enqueue(
            "UPDATE job_rows SET state=?, reason=?, actual=COALESCE(?, actual), "
            "attempts=COALESCE(?, attempts), updated=? - created WHERE id=?",
            (self._code(state), reason, actual, attempts, _to_ms(wall), job_id),
        )

    def record_attempt(self, row: dict[str, Any]) -> None:
        """Write-behind ledger row (keys: the ``ledger`` view's column names; ``t``,
        ``t_done``, ``job_id``, ``endpoint``, ``method``, ``path``, ``attempt`` and ``kind``
        are required, the rest default to NULL, or 0 for the estimate and '' for the
        message). Stored compact: codes for strings, milliseconds for times, the job's seq
        for its id."""
        get = row.get
        t = _to_ms(row["t"])
        code = get("code")
        job = row["job_id"]

        def after_t(v: float | None) -> int | None:
            return None if v is None else _to_ms(v) - t

        def ms(v: float | None) -> int | None:
            return None if v is None else _to_ms(v)

        self._enqueue(
            "INSERT INTO ledger_rows (t, done, job, endpoint, method, path, attempt, status, "
            "kind, code, credits_used, tokens, estimate, latency, rl_limit, rl_remaining, "
            "rl_reset, retry_after, message) VALUES (?, ?, "
            "COALESCE((SELECT seq FROM job_rows WHERE id = ?), ?), "
            "?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                t,
                after_t(row["t_done"]),
                job,
                job,
                self._code(row["endpoint"]),
                self._code(row["method"]),
                self._code(row["path"]),
                row["attempt"],
                get("status"),
                self._code(row["kind"]),
                None if code is None else self._code(code),
                get("credits_used"),
                get("tokens"),
                get("estimate") or 0,
                ms(get("latency")),
                get("rl_limit"),
                get("rl_remaining"),
                after_t(get("rl_reset")),
                ms(get("retry_after")),
                get("message") or "",
            ),
        )

    def add_alert(self, t: float, level: str, kind: str, message: str) -> None:
        self._enqueue(
            "INSERT INTO alerts (t, level, kind, message) VALUES (?,?,?,?)",
            (t, level, kind, message),
        )

    def add_snapshot(self, t: float, data: bytes) -> None:
        self._enqueue("INSERT OR REPLACE INTO snapshots (t, data) VALUES (?, ?)", (t, data))

    async def load_jobs(self, states: Sequence[str] | None = None) -> list[StoredJob]:
        sql = (
            "SELECT id, seq, method, path, body, priority, state, estimate, actual, "
            "attempts, reason, created FROM jobs"
        )
        params: list[Any] = []
        if states:
            # On the rows, by code: the view's state is text, which no index covers.
            codes = [self._codes.get(str(s), _CODE.get(str(s), -1)) for s in states]
            sql += (
                " WHERE seq IN (SELECT seq FROM job_rows WHERE state IN "
                f"({','.join('?' * len(codes))})"
            )
            params = codes
            if not set(states) & set(PRUNABLE_STATES):
                sql += f" AND {OPEN_JOBS}"  # lets SQLite use the jobs_open index
            sql += ")"
        sql += " ORDER BY seq"
        out = []
        for r in await self._q(sql, params):
            try:
                body = json.loads(r[4])
            except (TypeError, ValueError):
                body = {}
            out.append(
                StoredJob(
                    r[0],
                    r[1],
                    r[2],
                    r[3],
                    body if isinstance(body, dict) else {},
                    r[5],
                    r[6],
                    r[7],
                    r[8],
                    r[9],
                    r[10],
                    r[11],
                )
            )
        return out


def check_file(path: Path | str) -> dict[str, str]:
    """The meta table of a mavera-tui database at ``path``, read synchronously; StoreError
    with a one-line reason if it is missing, not SQLite, another program's file, or of a
    newer schema (``check_meta``). Readers call this before ``Store.open(readonly=True)``:
    a failed aiosqlite open leaves its (non-daemon) thread running, which would keep the
    process alive."""
    p = Path(path)
    if not p.exists():
        raise StoreError(f"no such recording or database: {p}")
    if p.is_dir():
        raise StoreError(f"{p} is a directory, not a recording")
    try:
        with open(p, "rb") as f:
            head = f.read(16)
    except OSError as e:
        raise StoreError(f"cannot read {p}: {e.strerror}") from None
    if head != b"SQLite format 3\x00":
        raise StoreError(f"{p} is not a mavera-tui recording (not an SQLite file)")
    try:
        db = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
        try:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if "meta" not in tables:
                raise StoreError(
                    f"{p} is an SQLite file of another program, not a mavera-tui recording"
                )
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        finally:
            db.close()
    except sqlite3.DatabaseError as e:
        raise StoreError(f"{p} is not a readable mavera-tui recording ({e})") from None
    check_meta(p, meta)
    return meta


def check_meta(path: Path | str, meta: dict[str, str]) -> int:
    """The schema version of a database with this meta table; StoreError if we cannot read
    it (another program's file, or a newer schema than this version understands)."""
    if meta.get("app") != APP_ID:
        raise StoreError(f"{path} was not written by mavera-tui")
    try:
        version = int(meta.get("schema_version", "0"))
    except ValueError:
        raise StoreError(f"{path}: unreadable schema version") from None
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path} has schema version {version}, newer than this mavera-tui "
            f"understands ({SCHEMA_VERSION}); upgrade mavera-tui to open it"
        )
    if version < 1:
        raise StoreError(f"{path}: schema version {version} is not supported")
    return version


def _describe_sqlite_error(path: Path, e: sqlite3.Error) -> str:
    text = str(e).lower()
    if "full" in text:
        return f"cannot write {path}: the disk is full. Free space; nothing has been lost yet."
    if "readonly" in text or "read-only" in text:
        return f"cannot write {path}: the database is read-only. Fix its permissions."
    if "locked" in text or "busy" in text:
        return f"{path} is locked by another process"
    return f"database error on {path}: {e}"
