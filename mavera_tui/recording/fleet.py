"""The fleet's totals in a report: what every process on a shared key did, from the ledger
stream the recording archived (``record --shared``: the ``fleet_ledger`` table, see
``shared/archive.py``), beside the recording process's own ledger.

Requests, credits charged, 429s and 402s for the whole fleet and per process (host, pid,
role), and the gaps the archive found (a trim, the state lost, a process's entries that
never came): a total with a gap is a lower bound, and the report says so.
"""

from __future__ import annotations

from typing import Any

from ..states import ErrorKind
from ..store import Store
from .reader import Recording, has_table

#: What retention keeps of the archived fleet ledger (created with the archive's tables, and
#: by a retention pass on a store archived before they existed).
RETENTION_TABLES = (
    """CREATE TABLE IF NOT EXISTS fleet_daily (
    stream TEXT NOT NULL,        -- the key's Redis prefix
    day TEXT NOT NULL,           -- UTC day (YYYY-MM-DD) of the entries' Redis time
    proc TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER,
    role TEXT NOT NULL,
    requests INTEGER NOT NULL,
    credits INTEGER NOT NULL,
    r429 INTEGER NOT NULL,
    r402 INTEGER NOT NULL,
    unknown INTEGER NOT NULL,    -- attempts whose charge is unknown
    first_ms INTEGER NOT NULL,   -- the folded entries' first and last Redis time (ms)
    last_ms INTEGER NOT NULL,
    PRIMARY KEY (stream, day, proc, role)
)""",
    # Each run's highest entry number among the rows retention dropped: the archive goes
    # on checking a long-lived process's numbers after its old entries are gone.
    """CREATE TABLE IF NOT EXISTS fleet_runs (
    run TEXT PRIMARY KEY,
    max_n INTEGER NOT NULL
)""",
)


def _unknown_kinds() -> str:
    # A charge is unknown only where the work may have run unread (a timeout, a dropped
    # connection, an unreadable 2xx: ErrorKind.charge_unknown, as the run summary counts
    # them); a 429, a 404 or a 402 has no usage and charged nothing.
    return ", ".join(f"'{k.value}'" for k in ErrorKind if k.charge_unknown)


async def prune_fleet(store: Store, before: float) -> int:
    """Retention for the archived fleet ledger: entries older than ``before`` (unix
    seconds, by their Redis time) are folded into ``fleet_daily`` (per UTC day, per
    process) and dropped, in one transaction; each run's highest entry number is kept in
    ``fleet_runs``. The gaps the archive found stay. Returns the entries dropped (0 for a
    store with no fleet archive)."""
    if not await has_table(store, "fleet_ledger"):
        return 0
    cut = int(before * 1000)
    [(n,)] = await store.query("SELECT COUNT(*) FROM fleet_ledger WHERE ms < ?", (cut,))
    if not n:
        return 0
    # No await between these: the writer commits them in one transaction.
    for sql in RETENTION_TABLES:
        store.write(sql, ())
    store.write(
        "INSERT INTO fleet_runs (run, max_n) SELECT run, MAX(n) FROM fleet_ledger "
        "WHERE ms < ? AND n IS NOT NULL GROUP BY run "
        "ON CONFLICT (run) DO UPDATE SET max_n = MAX(max_n, excluded.max_n)",
        (cut,),
    )
    store.write(
        "INSERT INTO fleet_daily (stream, day, proc, host, pid, role, requests, credits, "
        "r429, r402, unknown, first_ms, last_ms) "
        "SELECT stream, date(ms / 1000, 'unixepoch'), proc, host, pid, role, COUNT(*), "
        "COALESCE(SUM(credits), 0), SUM(status = 429), SUM(status = 402), "
        f"SUM(credits IS NULL AND kind IN ({_unknown_kinds()})), MIN(ms), MAX(ms) "
        "FROM fleet_ledger WHERE ms < ? GROUP BY 1, 2, 3, 6 "
        "ON CONFLICT (stream, day, proc, role) DO UPDATE SET "
        "requests = requests + excluded.requests, credits = credits + excluded.credits, "
        "r429 = r429 + excluded.r429, r402 = r402 + excluded.r402, "
        "unknown = unknown + excluded.unknown, first_ms = MIN(first_ms, excluded.first_ms), "
        "last_ms = MAX(last_ms, excluded.last_ms)",
        (cut,),
    )
    store.write("DELETE FROM fleet_ledger WHERE ms < ?", (cut,))
    await store.flush()
    return int(n)


#: How the report names the two scopes.
FLEET_LABEL = "fleet: every process on the key, from the archived ledger stream"
OWN_LABEL = "this process: the recorder's own ledger"


async def fleet_totals(
    rec: Recording, since: float | None = None, until: float | None = None
) -> dict[str, Any] | None:
    """The fleet's totals over [since, until] (Redis time of each entry), or None when the
    recording has no archived fleet ledger (not recorded with ``--shared``)."""
    if not await has_table(rec.store, "fleet_ledger"):
        return None
    where, params = _span("ms", "ms", since, until)
    unknown_kinds = _unknown_kinds()
    rows = await rec.store.query(
        "SELECT proc, host, pid, role, COUNT(*), COALESCE(SUM(credits), 0), "
        "SUM(status = 429), SUM(status = 402), "
        f"SUM(credits IS NULL AND kind IN ({unknown_kinds})), MIN(ms), MAX(ms) "
        f"FROM fleet_ledger {where} GROUP BY proc, host, pid, role ORDER BY MIN(ms)",
        params,
    )
    by_proc: dict[tuple[Any, ...], dict[str, Any]] = {}
    folded = await _daily(rec, since, until)
    days = {r[0] for r in folded}
    spans: list[tuple[int, int]] = []
    for proc, host, pid, role, n, credits, r429, r402, unknown, first, last in [
        *rows,
        *(r[1:] for r in folded),
    ]:
        p = by_proc.setdefault(
            (proc, host, pid, role),
            {
                "process": proc,
                "host": host,
                "pid": pid,
                "role": role,
                "requests": 0,
                "credits_used": 0,
                "429": 0,
                "402": 0,
                "credits_unknown": 0,
                "_first": first,
            },
        )
        p["requests"] += n
        p["credits_used"] += credits
        p["429"] += r429 or 0
        p["402"] += r402 or 0
        p["credits_unknown"] += unknown or 0
        p["_first"] = min(p["_first"], first)
        spans.append((first, last))
    procs = sorted(by_proc.values(), key=lambda p: p["_first"])
    for p in procs:
        del p["_first"]
    gap_rows = await rec.store.query(
        "SELECT t, kind, proc, missing, message FROM fleet_gaps ORDER BY id"
    )
    gaps = [
        {"t": t, "kind": kind, "process": proc, "missing": missing, "message": message}
        for t, kind, proc, missing, message in gap_rows
    ]
    cursor = await rec.store.query("SELECT last_id, archived, updated FROM fleet_archive")
    return {
        "label": FLEET_LABEL,
        "processes": procs,
        "hosts": len({p["host"] for p in procs}),
        "requests_total": sum(p["requests"] for p in procs),
        "credits_used_total": sum(p["credits_used"] for p in procs),
        "429_count": sum(p["429"] for p in procs),
        "402_count": sum(p["402"] for p in procs),
        "credits_unknown": sum(p["credits_unknown"] for p in procs),
        "first": min((a for a, _ in spans), default=None),
        "last": max((b for _, b in spans), default=None),
        # Days whose entries retention folded (record --keep): counted whole, per process.
        "from_daily_totals": sorted(days),
        "archived_to": cursor[0][0] if cursor else None,
        "gaps": gaps,
        # Known exactly: each process's entries whose numbers never came.
        "missing_entries": sum(g["missing"] or 0 for g in gaps if g["kind"] == "sequence"),
    }


def _span(
    first: str, last: str, since: float | None, until: float | None
) -> tuple[str, list[float]]:
    """WHERE for rows whose [first, last] (Redis ms) overlaps [since, until] (seconds)."""
    where, params = "WHERE 1=1", []
    if since is not None:
        where += f" AND {last} >= ?"
        params.append(since * 1000)
    if until is not None:
        where += f" AND {first} <= ?"
        params.append(until * 1000)
    return where, params


async def _daily(rec: Recording, since: float | None, until: float | None) -> list[Any]:
    """The folded days overlapping [since, until], as (day, proc, host, pid, role, requests,
    credits, 429s, 402s, unknown, first ms, last ms)."""
    if not await has_table(rec.store, "fleet_daily"):
        return []
    where, params = _span("first_ms", "last_ms", since, until)
    return await rec.store.query(
        "SELECT day, proc, host, pid, role, requests, credits, r429, r402, unknown, first_ms, "
        f"last_ms FROM fleet_daily {where} ORDER BY day, proc",
        params,
    )


def render_fleet(fleet: dict[str, Any]) -> list[str]:
    """The fleet's section of the text report."""
    lower = " (at least: see the gaps)" if fleet["gaps"] else ""
    lines = [
        f"{fleet['label']}:",
        f"  {len(fleet['processes'])} processes on {fleet['hosts']} host(s){lower}",
        f"  credits_used_total   {fleet['credits_used_total']:,}"
        + (
            f" ({fleet['credits_unknown']} attempt(s) with the charge unknown)"
            if fleet["credits_unknown"]
            else ""
        ),
        f"  requests_total       {fleet['requests_total']}",
        f"  429_count            {fleet['429_count']}",
        f"  402_count            {fleet['402_count']}",
        f"  {'process':<28}{'role':<9}{'requests':>9}{'credits':>10}{'429':>6}{'402':>6}",
    ]
    for p in fleet["processes"]:
        lines.append(
            f"  {p['process'][:27]:<28}{p['role'][:8]:<9}{p['requests']:>9}"
            f"{p['credits_used']:>10,}{p['429']:>6}{p['402']:>6}"
        )
    if fleet.get("from_daily_totals"):
        lines.append(
            "  older days from daily totals (retention): " + ", ".join(fleet["from_daily_totals"])
        )
    for g in fleet["gaps"]:
        lines.append(f"  gap ({g['kind']}): {g['message']}")
    if fleet["gaps"]:
        lines.append(
            f"  entries known missing (by the processes' numbers): {fleet['missing_entries']}"
        )
    return lines
