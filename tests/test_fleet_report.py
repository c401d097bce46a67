"""The report's fleet totals over an archived ledger (``recording/fleet.py``), on rows
written as ``shared/archive.py`` writes them."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from conftest import fleet_report

from mavera_tui.shared.archive import TABLES
from mavera_tui.store import Store


def test_only_an_answer_never_read_counts_as_a_charge_unknown(tmp_path: Path) -> None:
    # A 429, a 404 (the billing path's first try) and a 402 have no usage and charged
    # nothing: the run summary does not count them as unknown, and neither may the fleet.
    db = tmp_path / "rec.db"

    async def make() -> None:
        store = await Store.open(db)
        await store.close()

    asyncio.run(make())
    rows = [
        # (n, status, kind, credits)
        (1, 200, "ok", 12),
        (2, 429, "rate_limited", None),
        (3, 429, "concurrency_limited", None),
        (4, 404, "client_error", None),
        (5, 402, "credits_exhausted", None),
        (6, None, "timeout", None),
        (7, None, "connection_error", None),
        (8, 200, "bad_response", None),
    ]
    con = sqlite3.connect(db)
    for ddl in TABLES:
        con.execute(ddl)
    con.executemany(
        "INSERT INTO fleet_ledger (stream, ms, seq, rt, proc, host, pid, role, run, n, job, "
        "endpoint, attempt, status, kind, credits, latency) "
        "VALUES ('p', ?, 0, NULL, 'h:1', 'h', 1, 'run', 'r', ?, 'j', 'responses', 1, ?, ?, ?, 0.1)",
        [(1000 + n, n, status, kind, credits) for n, status, kind, credits in rows],
    )
    con.commit()
    con.close()

    fleet = asyncio.run(fleet_report(db))
    assert fleet["requests_total"] == 8
    assert fleet["credits_used_total"] == 12
    assert (fleet["429_count"], fleet["402_count"]) == (2, 1)
    assert fleet["credits_unknown"] == 3  # the timeout, the dropped connection, the unreadable
    assert fleet["processes"][0]["credits_unknown"] == 3
