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
from .reader import Recording

#: How the report names the two scopes.
FLEET_LABEL = "fleet: every process on the key, from the archived ledger stream"
OWN_LABEL = "this process: the recorder's own ledger"


async def fleet_totals(
    rec: Recording, since: float | None = None, until: float | None = None
) -> dict[str, Any] | None:
    """The fleet's totals over [since, until] (Redis time of each entry), or None when the
    recording has no archived fleet ledger (not recorded with ``--shared``)."""
    tables = await rec.store.query(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'fleet_ledger'"
    )
    if not tables:
        return None
    where, params = "WHERE 1=1", []
    if since is not None:
        where += " AND ms >= ?"
        params.append(since * 1000)
    if until is not None:
        where += " AND ms <= ?"
        params.append(until * 1000)
    # A charge is unknown only where the work may have run unread (a timeout, a dropped
    # connection, an unreadable 2xx: ErrorKind.charge_unknown, as the run summary counts
    # them); a 429, a 404 or a 402 has no usage and charged nothing.
    unknown_kinds = ", ".join(f"'{k.value}'" for k in ErrorKind if k.charge_unknown)
    rows = await rec.store.query(
        "SELECT proc, host, pid, role, COUNT(*), COALESCE(SUM(credits), 0), "
        "SUM(status = 429), SUM(status = 402), "
        f"SUM(credits IS NULL AND kind IN ({unknown_kinds})), MIN(ms), MAX(ms) "
        f"FROM fleet_ledger {where} GROUP BY proc, host, pid, role ORDER BY MIN(ms)",
        params,
    )
    procs = [
        {
            "process": proc,
            "host": host,
            "pid": pid,
            "role": role,
            "requests": n,
            "credits_used": credits,
            "429": r429 or 0,
            "402": r402 or 0,
            "credits_unknown": unknown or 0,
        }
        for proc, host, pid, role, n, credits, r429, r402, unknown, _, _ in rows
    ]
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
        "first": min((r[9] for r in rows), default=None),
        "last": max((r[10] for r in rows), default=None),
        "archived_to": cursor[0][0] if cursor else None,
        "gaps": gaps,
        # Known exactly: each process's entries whose numbers never came.
        "missing_entries": sum(g["missing"] or 0 for g in gaps if g["kind"] == "sequence"),
    }


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
    for g in fleet["gaps"]:
        lines.append(f"  gap ({g['kind']}): {g['message']}")
    if fleet["gaps"]:
        lines.append(
            f"  entries known missing (by the processes' numbers): {fleet['missing_entries']}"
        )
    return lines
