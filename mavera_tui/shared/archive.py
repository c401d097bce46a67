"""The fleet's ledger, archived: the key's ledger stream (Redis) copied into a store (SQLite).

Every process on a shared key appends each attempt to one Redis stream (``ledger``, in the
release script). A :class:`LedgerArchive` reads it from the last id it archived, in
batches (``XRANGE`` with ``COUNT``), and writes each entry into the store's
``fleet_ledger`` table in the same transaction as the new cursor (``fleet_archive``):

* a restart (of the recorder, of Redis) goes on from the cursor: nothing twice, nothing
  skipped. An entry is kept once by its stream id (the table's key), and once by its
  process's run and number (an entry a process sent twice, after a timeout that had in
  fact reached Redis, has two stream ids but one number);
* what is gone from the stream before it was read is said, never skipped silently: a
  trim past the cursor (``MAXLEN ~``: ``max-deleted-entry-id``, read in the same
  transaction as the entries), the state lost (Redis restarted empty: a new epoch), and a
  process's entries whose numbers never came (counted exactly) are each a row of
  ``fleet_gaps`` and an alert;
* Redis away: the archive waits and goes on from its cursor when it is back;
* it runs as its own task, one batch per await: the engine's loop never waits on it.

The recorder (``record --shared``) always archives; any other process does with
``[shared] archive = true`` (``MAVERA_TUI_SHARED__ARCHIVE=true``) and a ``--db``.
Its own tables, created when the archive starts, so a store without them is unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from ..errors import StoreError
from ..recording.fleet import RETENTION_TABLES
from .state import LedgerRead, SharedState, SharedUnavailable, safe_url

log = logging.getLogger("mavera_tui.shared")

#: The archive's tables (``CREATE ... IF NOT EXISTS``: created when an archive starts).
TABLES = (
    """CREATE TABLE IF NOT EXISTS fleet_ledger (
    stream TEXT NOT NULL,        -- the key's Redis prefix (a proxy's store may hold several)
    ms INTEGER NOT NULL,         -- the stream id (Redis time ms, sequence): an entry
    seq INTEGER NOT NULL,        -- archived twice is kept once
    rt REAL,                     -- Redis time (ms) of the release that appended it
    proc TEXT NOT NULL,          -- the process that made the attempt: host:pid ...
    host TEXT NOT NULL,
    pid INTEGER,
    role TEXT NOT NULL,          -- run, record, monitor, proxy
    run TEXT NOT NULL,           -- ... in which of its runs, and the entry's number in it
    n INTEGER,
    job TEXT,                    -- NULL: the engine's own request (a balance read)
    endpoint TEXT NOT NULL,
    attempt INTEGER,
    status INTEGER,              -- HTTP status (NULL: no answer)
    kind TEXT NOT NULL,          -- ok, rate_limited, credits_exhausted, timeout, ...
    credits INTEGER,             -- charged (usage.credits_used; NULL unknown)
    latency REAL,
    PRIMARY KEY (stream, ms, seq)
) WITHOUT ROWID""",
    "CREATE UNIQUE INDEX IF NOT EXISTS fleet_ledger_run ON fleet_ledger(run, n)",
    """CREATE TABLE IF NOT EXISTS fleet_archive (
    stream TEXT PRIMARY KEY,     -- the key's Redis prefix (a hash of the key, never the key)
    last_id TEXT NOT NULL,       -- the last stream id archived: reading goes on after it
    epoch TEXT,                  -- the shared state's epoch it was read in
    position INTEGER NOT NULL,   -- last_id's place in the stream (1: its first entry ever)
    archived INTEGER NOT NULL,   -- entries read into fleet_ledger so far
    updated REAL NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS fleet_gaps (
    id INTEGER PRIMARY KEY,
    t REAL NOT NULL,             -- when the archive found it (wall time)
    kind TEXT NOT NULL,          -- trimmed, lost, sequence, unreadable
    proc TEXT,                   -- sequence: whose entries are missing
    after_id TEXT,               -- the stream ids around the gap, where known
    before_id TEXT,
    missing INTEGER,             -- entries known to be missing (NULL: not countable)
    message TEXT NOT NULL
)""",
)

_INSERT = (
    "INSERT OR IGNORE INTO fleet_ledger (stream, ms, seq, rt, proc, host, pid, role, run, n, "
    "job, endpoint, attempt, status, kind, credits, latency) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_GAP = (
    "INSERT INTO fleet_gaps (t, kind, proc, after_id, before_id, missing, message) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_CURSOR = (
    "INSERT OR REPLACE INTO fleet_archive (stream, last_id, epoch, position, archived, "
    "updated) VALUES (?, ?, ?, ?, ?, ?)"
)


def stream_id(sid: str) -> tuple[int, int]:
    """A stream id ``ms-seq`` as a pair that orders as Redis orders them."""
    ms, _, seq = sid.partition("-")
    return int(ms), int(seq or 0)


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _text(v: Any, default: str = "") -> str:
    return v[:200] if isinstance(v, str) else default


def entry_row(sid: str, fields: dict[str, str]) -> tuple[Any, ...] | None:
    """One stream entry as a ``fleet_ledger`` row (None: not an entry this package wrote).
    The entry comes from Redis: every field is checked, none trusted."""
    try:
        ms, seq = stream_id(sid)
        a = json.loads(fields.get("a", ""))
    except (ValueError, TypeError):
        return None
    if not isinstance(a, dict):
        return None
    proc = _text(a.get("proc"))
    if not proc:
        return None
    try:
        rt = float(fields.get("rt", ""))
    except ValueError:
        rt = None
    host = _text(a.get("host")) or proc.rpartition(":")[0]
    pid = _int(a.get("pid"))
    if pid is None:
        tail = proc.rpartition(":")[2]
        pid = int(tail) if tail.isdigit() else None
    job = a.get("job")
    return (
        ms,
        seq,
        rt,
        proc,
        host,
        pid,
        _text(a.get("role"), "?"),
        _text(a.get("run")),
        _int(a.get("n")),
        job[:200] if isinstance(job, str) else None,
        _text(a.get("endpoint"), "?"),
        _int(a.get("attempt")),
        _int(a.get("status")),
        _text(a.get("kind"), "?"),
        _int(a.get("credits")),
        _num(a.get("latency")),
    )


class LedgerArchive:
    """Copies one key's ledger stream into ``store`` (see the module's docstring).

    ``state``: a :class:`SharedState` of its own (its connections are not the fleet's, so
    a slow read never delays an admission); ``alert(level, kind, message)``: where gaps
    are said (the scheduler's alerts); ``batch``: entries per read; ``every``: seconds
    between reads once caught up."""

    def __init__(
        self,
        state: SharedState,
        store: Any,
        *,
        alert: Callable[[str, str, str], None] | None = None,
        batch: int = 200,
        every: float = 0.5,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.state = state
        self.store = store
        self.alert = alert
        self.batch = max(1, batch)
        self.every = every
        self.wall = wall
        self.last_id = "0-0"
        self.pos = 0  # last_id's place in the stream: entries ever appended up to it
        self.epoch: str | None = None
        self.archived = 0
        self.gaps = 0
        self.missing = 0  # entries known (by their numbers) never to have been archived
        self.down: str | None = None
        self._seen: dict[str, int] = {}  # run -> the highest entry number archived
        self._task: asyncio.Task[None] | None = None

    # ================================================================ lifecycle ====

    async def start(self) -> None:
        """Create the tables, read the cursor, and archive in the background."""
        for sql in (*TABLES, *RETENTION_TABLES):
            self.store.write(sql, ())
        await self.store.flush()
        rows = await self.store.query(
            "SELECT last_id, epoch, position, archived FROM fleet_archive WHERE stream = ?",
            (self.state.prefix,),
        )
        if rows:
            last_id, self.epoch, pos, archived = rows[0]
            self.last_id, self.pos, self.archived = str(last_id), int(pos), int(archived)
        # Each run's highest number, retention's dropped entries included (fleet_runs).
        for run, n in await self.store.query(
            "SELECT run, MAX(n) FROM (SELECT run, n FROM fleet_ledger WHERE n IS NOT NULL "
            "UNION ALL SELECT run, max_n FROM fleet_runs) GROUP BY run"
        ):
            self._seen[str(run)] = int(n)
        self._task = asyncio.create_task(self._loop(), name="fleet-archive")

    async def close(self, drain: float = 3.0) -> None:
        """Stop reading in the background, then read what the stream still has (for at most
        ``drain`` seconds: the fleet's last releases, ours among them), and flush."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 1.0)
        with contextlib.suppress(SharedUnavailable, StoreError):
            await self.drain(drain)
        with contextlib.suppress(StoreError):
            await self.store.flush()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.state.close(), 1.0)

    async def drain(self, timeout: float) -> None:
        """Read until the stream has nothing more after the cursor (or ``timeout`` s)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            n = await self.step()
            if 0 <= n < self.batch:
                break
        await self.store.flush()

    def stats(self) -> dict[str, Any]:
        """What was archived, from where, and what is known to be missing."""
        return {
            "redis": safe_url(self.state.url),
            "archived": self.archived,
            "last_id": self.last_id,
            "gaps": self.gaps,
            "missing": self.missing,
        }

    async def _loop(self) -> None:
        while True:
            try:
                n = await self.step()
            except SharedUnavailable as e:
                if self.down is None:  # the fleet says Redis is away; the archive just waits
                    self.down = str(e)
                    log.info("fleet archive waits for Redis (%s) at %s", e, self.last_id)
                await asyncio.sleep(self.every)
                continue
            except Exception:  # the archive must never take the engine down
                log.exception("fleet archive")
                await asyncio.sleep(max(self.every, 1.0))
                continue
            self.down = None
            try:  # a full batch: more is waiting; bounded memory: let the writer catch up
                if n < 0 or n >= self.batch:
                    await self.store.flush()
                    continue
            except StoreError:
                pass  # the store says so itself; its writer keeps the batch and retries
            await asyncio.sleep(self.every)

    # ================================================================== reading ====

    async def step(self) -> int:
        """One read: archive what follows the cursor (at most ``batch`` entries). Returns
        how many entries were read, or -1 when the state was lost and the new stream is
        to be read from its start (at once). Raises SharedUnavailable (nothing changed)."""
        read = await self.state.read_ledger(self.last_id, self.batch)
        # From here on nothing awaits: the rows, the gaps and the cursor go to the store's
        # writer together, one transaction.
        last = stream_id(self.last_id)
        first_pos = None  # the place of the first entry read, when the cursor was trimmed
        if read.added is not None and read.entries and stream_id(read.first) > last:
            first_pos = read.added - read.length + 1
        recreated = read.added is not None and (
            read.added < self.pos or (first_pos is not None and first_pos <= self.pos)
        )
        if recreated or (read.epoch is not None and self.epoch not in (None, read.epoch)):
            self._gap(
                "lost",
                None,
                self.last_id,
                None,
                None,
                "the shared state was lost (Redis restarted empty): fleet ledger entries "
                f"appended after {self.last_id} and before the restart are not in the "
                "archive (each process's own store has its own); reading the new stream "
                "from its start",
            )
            self.epoch = read.epoch
            self.last_id, self.pos = "0-0", 0
            self._save()
            return -1
        if read.epoch is not None:
            self.epoch = read.epoch
        pos = self.pos
        self._trimmed(read, first_pos)
        rows = []
        unreadable = 0
        for sid, fields in read.entries:
            row = entry_row(sid, fields)
            if row is None:
                unreadable += 1
                continue
            if self._numbered(sid, row):
                rows.append(row)
        if unreadable:
            self._gap(
                "unreadable",
                None,
                self.last_id,
                read.entries[-1][0],
                unreadable,
                f"{unreadable} fleet ledger entries could not be read (not written by "
                "mavera-tui?): skipped",
            )
        if read.entries:
            self.last_id = read.entries[-1][0]
        if rows:
            key = self.state.prefix
            self.store.write(_INSERT, [(key, *r) for r in rows], many=True)
            self.archived += len(rows)
        if read.entries or self.pos != pos:
            self._save()
        return len(read.entries)

    def _trimmed(self, read: LedgerRead, first_pos: int | None) -> None:
        """Entries appended after the cursor and gone before this read (``MAXLEN ~``
        trimmed them): counted from the stream's own counts, said, and passed over."""
        if read.added is None:  # before Redis 7: only the processes' numbers tell
            self.pos += len(read.entries)
            return
        if first_pos is not None:  # the cursor's entry was trimmed: read from the first left
            gone = first_pos - self.pos - 1
            self.pos = first_pos + len(read.entries) - 1
        elif read.entries:
            gone = 0
            self.pos += len(read.entries)
        else:  # nothing after the cursor: whatever was appended after it is gone
            gone = read.added - self.pos
            self.pos = read.added
        if gone > 0:
            before = read.entries[0][0] if read.entries else None
            self._gap(
                "trimmed",
                None,
                self.last_id,
                before,
                gone,
                f"the fleet ledger stream was trimmed past the archive (MAXLEN ~100000): "
                f"{gone} entries after {self.last_id} were deleted before they were read",
            )

    def _numbered(self, sid: str, row: tuple[Any, ...]) -> bool:
        """Check the entry's number in its process's run: False for one already archived
        (sent twice); a number past the next one is a gap, counted exactly."""
        proc, role, run, n = row[3], row[6], row[7], row[8]
        if not run or n is None:
            return True
        last = self._seen.get(run)
        if last is not None and n <= last:
            return False
        expected = 1 if last is None else last + 1
        if n > expected:
            missing = n - expected
            what = f"entries {expected} to {n - 1}" if missing > 1 else f"entry {expected}"
            self._gap(
                "sequence",
                proc,
                self.last_id,
                sid,
                missing,
                f"{missing} fleet ledger entries of {proc} ({role}) never reached the "
                f"archive ({what} of its run {run}): trimmed or lost with Redis's state "
                "before they were read",
            )
            self.missing += missing
        self._seen[run] = n
        return True

    def _gap(
        self,
        kind: str,
        proc: str | None,
        after: str | None,
        before: str | None,
        missing: int | None,
        message: str,
    ) -> None:
        self.gaps += 1
        self.store.write(_GAP, (self.wall(), kind, proc, after, before, missing, message))
        log.warning("fleet archive: %s", message)
        if self.alert is not None:
            self.alert("warning", "fleet_archive_gap", message)

    def _save(self) -> None:
        self.store.write(
            _CURSOR,
            (self.state.prefix, self.last_id, self.epoch, self.pos, self.archived, self.wall()),
        )
