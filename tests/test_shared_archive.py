"""The fleet's ledger archive against a real redis-server: the key's ledger stream copied
into a store from the last archived id, each entry once (by stream id, and by its
process's run and number), and every loss said: a trim past the cursor, the state lost
with a Redis restart, a process's entries whose numbers never came."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from mavera_tui.shared import key_prefix
from mavera_tui.shared.archive import LedgerArchive, entry_row
from mavera_tui.shared.state import Release, SharedState
from mavera_tui.store import Store

PREFIX = key_prefix("mvra_archive_test")


def entry(run: str, n: int, *, credits: int = 2, status: int = 200) -> dict[str, Any]:
    host = f"host-{run}"
    return {
        "proc": f"{host}:{100 + len(run)}",
        "host": host,
        "pid": 100 + len(run),
        "role": "run",
        "run": run,
        "n": n,
        "job": f"{run}-{n}",
        "endpoint": "responses",
        "attempt": 1,
        "status": status,
        "kind": "ok" if status == 200 else "rate_limited",
        "credits": credits if status == 200 else 0,
        "latency": 0.01,
    }


async def append(state: SharedState, run: str, numbers: range | list[int]) -> None:
    """Entries as the release script appends them (the real script, a lease per entry)."""
    await state.release([Release(f"{run}#{n}", entry=entry(run, n)) for n in numbers], window=2.0)


def rows(db: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as c:
        return c.execute("SELECT run, n, ms, seq FROM fleet_ledger ORDER BY ms, seq").fetchall()


def gaps(db: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as c:
        return c.execute("SELECT kind, proc, missing FROM fleet_gaps ORDER BY id").fetchall()


async def archive_once(url: str, db: Path, **kw: Any) -> LedgerArchive:
    """An archive as a restarted recorder makes one: open, read what there is, close."""
    store = await Store.open(db)
    arch = LedgerArchive(SharedState(url, PREFIX), store, **kw)
    await arch.start()
    await arch.close(drain=5.0)
    await store.close()
    return arch


async def test_archive_resumes_without_duplicates_and_says_every_gap(
    tmp_path: Path, redis_server: Any
) -> None:
    url = redis_server.url
    db = tmp_path / "fleet.db"
    state = SharedState(url, PREFIX)
    r = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        await r.set(PREFIX + "epoch", "1000.000")
        await append(state, "a", range(1, 16))
        await append(state, "b", range(1, 16))
        arch = await archive_once(url, db, batch=7)  # several batches
        assert arch.archived == 30 and arch.gaps == 0
        assert sorted((run, n) for run, n, *_ in rows(db)) == sorted(
            [("a", n) for n in range(1, 16)] + [("b", n) for n in range(1, 16)]
        )
        # Every archived stream id is the stream's, in its order.
        stream = [sid for sid, _ in await r.xrange(PREFIX + "ledger")]
        assert [f"{ms}-{seq}" for *_, ms, seq in rows(db)] == stream

        # A restart goes on from the cursor; the cursor rewound to the start (an archive
        # that lost its cursor) re-reads the stream and keeps nothing twice.
        await append(state, "a", [16])
        await archive_once(url, db)
        assert len(rows(db)) == 31
        with sqlite3.connect(db) as c:
            c.execute("UPDATE fleet_archive SET last_id = '0-0', position = 0")
        await archive_once(url, db)
        assert len(rows(db)) == 31
        # An entry its process sent twice (a release whose answer timed out, sent again):
        # two stream ids, one number: kept once.
        await append(state, "a", [16])
        await archive_once(url, db)
        assert len(rows(db)) == 31 and gaps(db) == []

        # Trimmed past the cursor: the trim and each process's missing numbers are said.
        await append(state, "a", range(17, 27))
        await r.xtrim(PREFIX + "ledger", maxlen=3, approximate=False)  # keeps a 24, 25, 26
        await append(state, "b", [16])
        arch = await archive_once(url, db)
        assert [g[0] for g in gaps(db)] == ["trimmed", "sequence"]
        assert gaps(db)[0][2] == gaps(db)[1][2] == 7  # a's 17..23, by both counts
        assert arch.missing == 7
        assert {n for run, n, *_ in rows(db) if run == "a"} == set(range(1, 17)) | set(
            range(24, 27)
        )

        # Redis restarted empty (a new epoch): said; the new stream is archived from its
        # start; a's entry 27 was lost with the old stream.
        await r.flushall()
        await r.set(PREFIX + "epoch", "2000.000")
        await append(state, "a", [28, 29])
        await append(state, "b", [17])
        await archive_once(url, db)
        kinds = [g[0] for g in gaps(db)]
        assert kinds == ["trimmed", "sequence", "lost", "sequence"]
        assert gaps(db)[3][2] == 1
        got = [(run, n) for run, n, *_ in rows(db)]
        assert len(got) == len(set(got)) == 16 + 3 + 2 + 17
    finally:
        await r.aclose()
        await state.close()


def test_an_entry_from_redis_is_checked_field_by_field() -> None:
    good = {"rt": "1.5", "a": json.dumps(entry("r", 3))}
    row = entry_row("1700000000000-4", good)
    assert row is not None
    assert row[:9] == (1700000000000, 4, 1.5, "host-r:101", "host-r", 101, "run", "r", 3)
    for bad in ({"a": "not json"}, {"a": "[1]"}, {"a": json.dumps({"job": 1})}, {}):
        assert entry_row("1-1", bad) is None
    odd = entry("r", 3)
    odd.update(status="200", credits=True, n=None, role=["x"])
    row = entry_row("5-0", {"a": json.dumps(odd)})
    assert row is not None and row[8] is None and row[12] is None and row[14] is None
    assert row[6] == "?"
