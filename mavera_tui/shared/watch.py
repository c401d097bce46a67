"""The fleet for a monitor or a recording: :class:`FleetWatch` reads the key's fleet
(:class:`~.view.FleetView`) in the background about once a second and keeps the last read
as the snapshot's immutable :class:`~mavera_tui.snapshot.FleetState`.

Off the hot path: the snapshot a pane or the recorder takes only picks up ``latest``, never
waits on Redis. Never raises: a read that fails (Redis away, a timeout) keeps the last good
read and says why in ``error``, which the Fleet view shows as a marker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..snapshot import FleetAlert, FleetProcess, FleetState
from .state import safe_url
from .view import FleetSnapshot, FleetView

log = logging.getLogger(__name__)

#: Seconds between reads: the panes redraw a few times a second, a fleet's heartbeat is ~1 s.
READ_EVERY = 1.0


def fleet_state(snap: FleetSnapshot, *, redis: str, me: str, at: float) -> FleetState:
    """A FleetView read as the snapshot's immutable value."""
    procs = tuple(
        FleetProcess(
            p.proc,
            p.host,
            p.pid,
            p.role,
            p.in_flight,
            p.queued,
            round(p.last_seen, 1),
            p.alive,
            p.window_share,
        )
        for p in snap.processes
    )
    alerts = []
    for a in snap.alerts:
        if not isinstance(a, dict):
            continue
        try:
            t = float(a.get("t", 0.0))
        except (TypeError, ValueError):
            t = 0.0
        alerts.append(
            FleetAlert(
                t,
                str(a.get("proc", "")),
                str(a.get("level", "info")),
                str(a.get("kind", "")),
                str(a.get("message", "")),
            )
        )
    return FleetState(
        redis=redis,
        me=me,
        at=at,
        error="",
        processes=procs,
        window_used=snap.window_used,
        limit=snap.limit,
        foreign=snap.foreign,
        hold_s=round(snap.hold, 1),
        parked=snap.parked,
        balance=snap.balance,
        reserved=snap.reserved,
        slots=tuple(sorted(snap.slots.items())),
        alerts=tuple(alerts),
    )


class FleetWatch:
    """Reads the fleet of ``fleet`` (a :class:`~.fleet.Fleet`) every ``every`` seconds."""

    def __init__(
        self,
        fleet: Any,
        *,
        every: float = READ_EVERY,
        timeout: float = 2.0,
        wall: Callable[[], float] = time.time,
    ) -> None:
        sched = getattr(fleet, "sched", None)
        window = sched.window.window if sched is not None else 60.0
        self.view = FleetView(fleet.state, window=window)
        self.every = every
        self.timeout = timeout
        self.wall = wall
        self.latest = FleetState(
            redis=safe_url(fleet.state.url), me=fleet.proc, error="not read yet"
        )
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> FleetState:
        """One read; on any failure keep the last good read, marked with why."""
        try:
            snap = await asyncio.wait_for(self.view.snapshot(), self.timeout)
            self.latest = fleet_state(
                snap, redis=self.latest.redis, me=self.latest.me, at=self.wall()
            )
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            self.latest = replace(self.latest, error=f"no answer within {self.timeout:g} s")
        except Exception as e:  # a monitor must outlive Redis (and odd data): shown, not raised
            why = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
            self.latest = replace(self.latest, error=why)
        return self.latest

    def start(self) -> None:
        """Read in the background until :meth:`close`."""
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="fleet-watch")

    async def _loop(self) -> None:
        while True:
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:  # refresh catches all; this is the last guard of a loop
                log.exception("fleet watch")
            await asyncio.sleep(self.every)

    async def close(self) -> None:
        """Stop reading (bounded: a Redis client stuck in clean-up must not hang a quit)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 1.0)
