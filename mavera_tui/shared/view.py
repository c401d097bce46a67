"""What the fleet looks like, for a monitor: the processes on the key, the shared window with
each process's share, the slots and credits held, and the recent alerts of all of them.

Read-only: nothing here changes the shared state. Ages are measured by Redis ``TIME``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError

from .. import catalog
from .state import SharedState, SharedUnavailable


@dataclass
class ProcessInfo:
    """One process on the key, as its last heartbeat said."""

    proc: str  # "host:pid"
    host: str
    pid: int
    role: str  # run, record, monitor, proxy
    in_flight: int
    queued: int
    best_waiting: int | None  # its highest waiting priority (None: nothing waits)
    last_seen: float  # seconds since its last heartbeat (Redis time)
    alive: bool  # seen within a lease time
    window_share: int = 0  # its admissions in the shared window now


@dataclass
class FleetSnapshot:
    """The whole fleet at one Redis instant."""

    processes: list[ProcessInfo]
    window_used: int  # the fleet's admissions in the window
    limit: int | None  # the key's limit, once a server answer said it
    foreign: int  # what the server counted beyond the fleet's log
    hold: float  # seconds the key is still held after a 429 (0: not held)
    parked: bool  # a 402 parks paid work
    balance: int | None  # the fleet's balance (last read, less charges since)
    reserved: int  # credits reserved by live leases
    slots: dict[str, int] = field(default_factory=dict)  # capped endpoint -> leases held
    alerts: list[dict[str, Any]] = field(default_factory=list)  # newest first


class FleetView:
    """Reads the fleet of one key (``state``: a SharedState on its prefix)."""

    def __init__(self, state: SharedState, window: float, margin: float = 0.15) -> None:
        self.state = state
        self.window = window
        self.margin = margin

    async def read(self) -> list[ProcessInfo]:
        """The processes on the key, most recently seen first."""
        return (await self.snapshot()).processes

    async def snapshot(self, alerts: int = 20) -> FleetSnapshot:
        """Everything at once (one pipeline, so one Redis round trip)."""
        p, r = self.state.prefix, self.state.r
        capped = [k for k, e in catalog.ENDPOINTS.items() if e.cap is not None]
        try:
            procs: list[str] = [str(x) for x in await r.zrange(p + "procs", 0, -1)]
            async with r.pipeline(transaction=True) as pipe:
                pipe.time()
                for proc in procs:
                    pipe.hgetall(p + "proc:" + proc)
                pipe.zrange(p + "win", 0, -1, withscores=True)
                pipe.mget(
                    [p + "limit", p + "foreign", p + "balance", p + "resv", p + "park", p + "hold"]
                )
                pipe.pttl(p + "hold")
                for k in capped:
                    pipe.zcard(p + "slots:" + k)
                pipe.lrange(p + "alerts", 0, alerts - 1)
                out = await pipe.execute()
        except (RedisError, OSError, TimeoutError) as e:
            raise SharedUnavailable(f"{type(e).__name__}: {e}") from e
        sec, usec = out[0]
        now = int(sec) * 1000 + int(usec) / 1000
        fields = out[1 : 1 + len(procs)]
        rest = out[1 + len(procs) :]
        win, (limit, foreign, balance, resv, park, _hold), hold_ms = rest[0], rest[1], rest[2]
        slot_counts = rest[3 : 3 + len(capped)]
        alert_rows = rest[3 + len(capped)]
        cut = now - (self.window + self.margin) * 1000
        share: dict[str, int] = {}
        used = 0
        for member, score in win:
            if score > cut:
                used += 1
                owner = member.rsplit("#", 1)[0]
                share[owner] = share.get(owner, 0) + 1
        infos = []
        for proc, f in zip(procs, fields, strict=True):
            if not f:
                continue  # expired between the two reads
            seen = (now - float(f.get("last_seen", 0))) / 1000
            ttl = float(f.get("ttl", 0)) / 1000
            infos.append(
                ProcessInfo(
                    proc,
                    f.get("host", ""),
                    int(f.get("pid", 0)),
                    f.get("role", ""),
                    int(f.get("in_flight", 0)),
                    int(f.get("queued", 0)),
                    int(f["best"]) if f.get("best") else None,
                    max(0.0, seen),
                    seen <= ttl,
                    share.get(proc, 0),
                )
            )
        infos.sort(key=lambda i: i.last_seen)
        parsed = []
        for row in alert_rows:
            try:
                parsed.append(json.loads(row))
            except ValueError:
                continue
        return FleetSnapshot(
            infos,
            used,
            int(limit) if limit else None,
            int(foreign or 0),
            max(0, hold_ms) / 1000,
            park is not None,
            int(balance) if balance is not None else None,
            int(resv or 0),
            dict(zip(capped, (int(c) for c in slot_counts), strict=True)),
            parsed,
        )
