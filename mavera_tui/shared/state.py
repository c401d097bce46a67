"""One key's shared state in Redis: the scripts, called through one small async API.

Nothing here knows the scheduler: it admits, releases, renews and reads, and says what
Redis answered. Keys are named from a hash of the API key (``key_prefix``), never the key.
Every call has a short socket timeout and no retries of its own: a Redis that does not
answer is :class:`SharedUnavailable` at once, and the caller decides (wait or fall back).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

from ..config import SharedSettings
from . import scripts

#: The admission script's answer for each job.
REFUSED_WINDOW = 0
ADMITTED = 1
REFUSED_SLOT = 2
REFUSED_CREDITS = 3
REFUSED_HOLD = 4
REFUSED_PARK = 5
YIELDED = 6  # the last room is left to a process with higher-priority work waiting

#: The engine's own requests (balance reads) go before any job in the fleet's order...
OWN_PRIORITY = 1 << 30
#: ... except a read that must cost the fleet nothing: it takes only room that no queued
#: send of the fleet needs (``scripts.ADMIT``, ``read_is_free``).
FREE_PRIORITY = -(1 << 30)
CODES = {
    REFUSED_WINDOW: "window full",
    ADMITTED: "admitted",
    REFUSED_SLOT: "slots full",
    REFUSED_CREDITS: "credits reserved by the fleet",
    REFUSED_HOLD: "key held (429)",
    REFUSED_PARK: "parked (402)",
    YIELDED: "left to higher-priority work",
}


class SharedUnavailable(Exception):
    """Redis did not answer (down, unreachable, too slow) or refused the call."""


def key_prefix(api_key: str) -> str:
    """``mavera:{<first 16 hex of sha256(key)>}:``: every key of this API key's state, in
    one cluster slot (the braces are the hash tag). The key itself is never stored."""
    digest = hashlib.sha256(api_key.encode()).hexdigest()[:16]
    return f"mavera:{{{digest}}}:"


def safe_url(url: str) -> str:
    """A Redis URL without its password, for messages."""
    from urllib.parse import urlsplit

    try:
        u = urlsplit(url)
        host = u.hostname or ""
        port = f":{u.port}" if u.port else ""
        return f"{u.scheme}://{host}{port}{u.path}"
    except ValueError:
        return "redis://?"


@dataclass
class AdmitRequest:
    """One job (or engine request) asking the fleet for admission."""

    lease: str
    endpoint: str
    cap: int  # the endpoint's concurrency cap (0: uncapped)
    priority: int
    needed: int  # credits pre-flight needs available (estimate + buffer; 0: free)
    reserve: int  # credits reserved until the answer (the estimate)


@dataclass
class AdmitResult:
    """The admission script's answer: Redis time (ms), the state's epoch, when a refused
    job may try again (Redis ms, or None), the room left, the foreign estimate, the limit,
    and one code per job. ``asked``: this process's monotonic clock when the call was
    sent (Redis's ``now_ms`` came after it: a duration measured from it to a write, added
    to ``now_ms``, puts the admission no earlier than the write, whatever the answer's
    trip back and the wait for the loop took)."""

    now_ms: float
    epoch: str
    retry_ms: float | None
    room: int
    foreign: int
    limit: int
    codes: list[int]
    asked: float = 0.0

    def retry_in(self) -> float | None:
        """Seconds from the answer until a refused job may try again (None: unknown)."""
        return None if self.retry_ms is None else max(0.0, (self.retry_ms - self.now_ms) / 1000)


@dataclass
class Release:
    """A lease to release with what its answer said."""

    lease: str
    credits: int = -1  # charged; -1 unknown
    remaining: int = -1  # X-RateLimit-Remaining; -1 none
    limit: int = -1  # X-RateLimit-Limit; -1 none
    fresh: bool = False  # answered within a tenth of the window
    hold_ms: float = 0.0  # a 429 holds the whole key this long
    park_ms: float = 0.0  # a 402 parks paid work this long (renewed by the poller)
    unsent: bool = False  # never written: its admission is taken back
    entry: dict[str, Any] = field(default_factory=dict)  # the ledger row ({} none)
    delay: float = 0.0  # seconds from admission to the write (a duration, not a time)


@dataclass
class SharedBalance:
    """A balance the fleet keeps: ``credits`` now (as read, less what the fleet was charged
    since), ``read`` as read, the answer's other fields, its age and who read it."""

    credits: int
    read: int
    fields: dict[str, Any]
    age: float
    by: str


@dataclass
class LedgerRead:
    """One read of the ledger stream: the state's epoch (None: no state yet), the entries
    ever appended to the stream (``entries-added``; None before Redis 7), its length now,
    its first entry's id, and the entries read, as (stream id, fields)."""

    epoch: str | None
    added: int | None
    length: int
    first: str
    entries: list[tuple[str, dict[str, str]]]


class SharedState:
    """The scripts on one Redis for one key (``prefix`` from :func:`key_prefix`)."""

    def __init__(self, url: str, prefix: str, *, socket_timeout: float = 0.5) -> None:
        self.url = url
        self.prefix = prefix
        self.r: aioredis.Redis = aioredis.Redis.from_url(
            url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            decode_responses=True,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self._admit = self.r.register_script(scripts.ADMIT)
        self._release = self.r.register_script(scripts.RELEASE)
        self._written = self.r.register_script(scripts.WRITTEN)
        self._heartbeat = self.r.register_script(scripts.HEARTBEAT)
        self._leave = self.r.register_script(scripts.LEAVE)
        self._balance = self.r.register_script(scripts.BALANCE)
        self._balance_take = self.r.register_script(scripts.BALANCE_TAKE)
        self._balance_drop = self.r.register_script(scripts.BALANCE_DROP)

    @property
    def channel(self) -> str:
        """The pub/sub channel on which releases say what they freed."""
        return self.prefix + "wake"

    async def _call(self, script: Any, args: Sequence[Any]) -> Any:
        try:
            return await script(keys=[self.prefix], args=list(args))
        except ResponseError as e:  # a script error is a bug, not an outage: say which
            raise SharedUnavailable(f"Redis refused a script: {e}") from e
        except (RedisError, OSError, TimeoutError) as e:
            await self._drop_connections()
            raise SharedUnavailable(f"{type(e).__name__}: {e}") from e

    async def _drop_connections(self) -> None:
        """After a failure, no pooled connection is trusted: a Redis that restarted closed
        them all, and each would fail once more on its next use."""
        try:
            await self.r.connection_pool.disconnect()
        except (RedisError, OSError, TimeoutError):
            pass

    async def ping(self) -> None:
        """Raise SharedUnavailable unless Redis answers."""
        try:
            await self.r.ping()
        except (RedisError, OSError, TimeoutError) as e:
            await self._drop_connections()
            raise SharedUnavailable(f"{type(e).__name__}: {e}") from e

    async def admit(
        self,
        proc: str,
        jobs: Sequence[AdmitRequest],
        *,
        limit: int,
        window: float,
        margin: float,
        ttl: float,
        best: int | None,
        known_epoch: str | None,
        need: int = 0,
        queued: int | None = None,
    ) -> AdmitResult:
        """Admit what fits of ``jobs`` (in order), atomically: the fleet's window, capped
        slots, credits, the 429 hold, the 402 park and the fleet-wide order (priorities,
        and ``need``: admissions this process wants kept for its capped jobs). ``queued``:
        the jobs this process has waiting to be sent besides ``jobs`` (for a free read's
        reckoning: those of ``jobs`` not admitted are added)."""
        args: list[Any] = [
            proc,
            limit,
            window * 1000,
            margin * 1000,
            ttl * 1000,
            "" if best is None else best,
            known_epoch or "",
            max(0, need),
            len(jobs),
            "" if queued is None else max(0, queued),
        ]
        for j in jobs:
            args += [j.lease, j.endpoint, j.cap, j.priority, j.needed, j.reserve]
        asked = time.monotonic()
        out = await self._call(self._admit, args)
        return AdmitResult(
            float(out[0]),
            str(out[1]),
            float(out[2]) if out[2] else None,
            int(out[3]),
            int(out[4]),
            int(out[5]),
            [int(c) for c in out[6:]],
            asked,
        )

    async def release(
        self, items: Sequence[Release], *, window: float, margin: float = SharedSettings.margin
    ) -> int:
        """Release leases (idempotent), settle their credits, learn from their answers
        (``margin``: how much later than its admission's log entry the server may count a
        send, as ``admit``'s), and append them to the ledger. Returns how many were still
        live."""
        args: list[Any] = [window * 1000, len(items), margin * 1000]
        for it in items:
            args += [
                it.lease,
                it.credits,
                it.remaining,
                it.limit,
                "1" if it.fresh else "0",
                it.hold_ms,
                it.park_ms,
                "1" if it.unsent else "0",
                json.dumps(it.entry, separators=(",", ":")) if it.entry else "",
                round(max(0.0, it.delay) * 1000, 3),
            ]
        return int(await self._call(self._release, args))

    async def written(self, items: Sequence[tuple[str, float]]) -> None:
        """Move admissions (lease, seconds from admission to write) to their writes."""
        args: list[Any] = [len(items)]
        for lease, delay in items:
            args += [lease, round(max(0.0, delay) * 1000, 3)]
        await self._call(self._written, args)

    async def heartbeat(
        self,
        proc: str,
        *,
        host: str,
        pid: int,
        role: str,
        in_flight: int,
        queued: int,
        best: int | None,
        ttl: float,
        leases: Sequence[str],
        need: int = 0,
        parked: bool = False,
    ) -> tuple[float, int]:
        """Renew this process's leases and registry entry (and the fleet's 402 park while
        ``parked``: its jobs wait for credits); returns (Redis ms, live procs)."""
        args: list[Any] = [
            proc,
            host,
            pid,
            role,
            in_flight,
            queued,
            "" if best is None else best,
            ttl * 1000,
            max(0, need),
            "1" if parked else "0",
            len(leases),
            *leases,
        ]
        out = await self._call(self._heartbeat, args)
        return float(out[0]), int(out[1])

    async def leave(self, proc: str) -> None:
        """This process is going: drop it from the registry and the order."""
        await self._call(self._leave, [proc])

    async def set_balance(
        self,
        credits: int,
        *,
        proc: str = "",
        read_at_ms: float | None = None,
        fields: dict[str, Any] | None = None,
        fresh: float = 300.0,
        idle: float = 30.0,
    ) -> bool:
        """A balance read (admitted at Redis time ``read_at_ms``; None: now): the fleet's
        balance becomes it, adoptable for ``fresh`` seconds while the fleet is never idle
        for ``idle`` seconds, and a positive one ends a 402 park. False when a 402 reached
        the fleet after the read was admitted (it changed nothing)."""
        args = [
            credits,
            proc,
            "" if read_at_ms is None else f"{read_at_ms:.3f}",
            json.dumps(fields or {}, separators=(",", ":")),
            max(0.0, fresh) * 1000,
            max(0.001, idle) * 1000,
        ]
        return bool(int(await self._call(self._balance, args)))

    async def take_balance(
        self, proc: str, *, claim_ttl: float, claim: bool = True
    ) -> SharedBalance | str:
        """The fleet's balance to adopt, if it has one fresh; else ``"claimed"`` (this process
        reads it for the fleet: it holds the claim, for ``claim_ttl`` seconds unless renewed
        by calling again), ``"wait"`` (another process holds the claim) or ``"none"``."""
        out = await self._call(self._balance_take, [proc, claim_ttl * 1000, "1" if claim else "0"])
        if out[0] != "fresh":
            return str(out[0])
        try:
            fields = json.loads(out[3]) if out[3] else {}
        except ValueError:
            fields = {}
        return SharedBalance(
            int(out[1]),
            int(out[2]),
            fields if isinstance(fields, dict) else {},
            float(out[4]) / 1000,
            str(out[5]),
        )

    async def drop_claim(self, proc: str) -> None:
        """Give up this process's claim to read the balance (if it holds it)."""
        await self._call(self._balance_drop, [proc])

    async def add_alert(self, entry: dict[str, Any], keep: int = 100) -> None:
        """Keep an alert among the fleet's recent ones (newest first)."""
        try:
            async with self.r.pipeline(transaction=True) as pipe:
                pipe.lpush(self.prefix + "alerts", json.dumps(entry, separators=(",", ":")))
                pipe.ltrim(self.prefix + "alerts", 0, keep - 1)
                await pipe.execute()
        except (RedisError, OSError, TimeoutError) as e:
            raise SharedUnavailable(f"{type(e).__name__}: {e}") from e

    async def read_ledger(self, after: str, count: int) -> LedgerRead:
        """The ledger stream's entries after id ``after`` (at most ``count``), read in
        one transaction with the state's epoch and the stream's counts, so that what was
        trimmed (or lost with the state) before this read is known exactly."""
        key = self.prefix + "ledger"
        try:
            async with self.r.pipeline(transaction=True) as pipe:
                pipe.get(self.prefix + "epoch")
                pipe.exists(key)
                pipe.xinfo_stream(key)
                pipe.xrange(key, min="(" + after, max="+", count=count)
                epoch, exists, info, entries = await pipe.execute(raise_on_error=False)
        except (RedisError, OSError, TimeoutError) as e:
            await self._drop_connections()
            raise SharedUnavailable(f"{type(e).__name__}: {e}") from e
        if not exists:  # no stream yet (or lost with the state): XINFO said so
            return LedgerRead(epoch, 0, 0, "0-0", [])
        for part in (info, entries):
            if isinstance(part, Exception):
                raise SharedUnavailable(f"Redis refused a ledger read: {part}")
        added = info.get("entries-added")  # Redis 7: every entry ever appended
        return LedgerRead(
            epoch,
            int(added) if added is not None else None,
            int(info.get("length") or 0),
            str(info.get("recorded-first-entry-id") or "0-0"),
            [(str(i), dict(f)) for i, f in entries],
        )

    async def close(self) -> None:
        """Close the connections."""
        try:
            await self.r.aclose()
        except (RedisError, OSError, TimeoutError):
            pass
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await self.r.connection_pool.disconnect()
