"""The one clock everything that waits asks, and a fast-forwarding event loop for tests.

``Clock.now()`` is the running loop's monotonic time; ``Clock.wall()`` is Unix time derived
from it, so that under ``VirtualTimeLoop`` an hour of traffic (the scheduler, the simulator,
the ledger's timestamps) runs in a fraction of a second and stays self-consistent.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import selectors
import time
from collections.abc import Coroutine, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import FileDescriptorLike  # an int, or anything with fileno()

T = TypeVar("T")


class Clock:
    """Monotonic seconds from the running loop, plus Unix time that moves with it."""

    def __init__(self, wall0: float | None = None):
        self._wall0 = wall0
        self._mono0: float | None = None

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def wall(self) -> float:
        return self.wall_at(self.now())

    def wall_at(self, loop_now: float) -> float:
        """Unix time at ``loop_now`` (a ``now()`` just read: one clock read, not two)."""
        if self._mono0 is None:
            self._mono0 = loop_now
            if self._wall0 is None:
                self._wall0 = time.time()
        assert self._wall0 is not None
        return self._wall0 + (loop_now - self._mono0)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class _FastForwardSelector(selectors.BaseSelector):
    """Wraps the real selector: when the loop would block for a timer, jump time instead."""

    def __init__(self, real: selectors.BaseSelector, loop: VirtualTimeLoop):
        self._real = real
        self._loop = loop

    def register(
        self, fileobj: FileDescriptorLike, events: int, data: Any = None
    ) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: FileDescriptorLike) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(
        self, fileobj: FileDescriptorLike, events: int, data: Any = None
    ) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def select(
        self,
        timeout: float | None = None,
    ) -> list[tuple[selectors.SelectorKey, int]]:
        loop = self._loop
        if loop.external_pending > 0:
            # A thread (aiosqlite) is working for us: wait for it in real time, and do not
            # let virtual time run ahead of it.
            real_timeout = 0.005 if timeout is None else min(timeout, 0.005)
            return self._real.select(real_timeout)
        events = self._real.select(0)
        if events or timeout is None or timeout <= 0:
            if not events and timeout is None:
                return self._real.select(None)
            return events
        loop.advance(timeout)
        return []

    def close(self) -> None:
        self._real.close()

    def get_map(self) -> Mapping[FileDescriptorLike, selectors.SelectorKey]:
        return self._real.get_map()

    def get_key(self, fileobj: FileDescriptorLike) -> selectors.SelectorKey:
        return self._real.get_key(fileobj)


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock jumps to the next timer whenever nothing else is ready.

    Only for in-process work (the simulator over ASGITransport, the scheduler, the store);
    real sockets still work but time is not meaningful for them. Code that hands work to a
    thread wraps it in ``external()`` so that time does not run ahead of the thread.
    """

    def __init__(self, start: float = 1_000.0):
        selector = selectors.DefaultSelector()
        self._virtual_now = start
        self.external_pending = 0
        super().__init__(_FastForwardSelector(selector, self))
        # asyncio runs a timer due within the clock's resolution (1e-9 s, a real clock's)
        # without waiting for it, so time never moves for a timer 2e-12 s ahead and a loop
        # that waits for that instant (a window's room, computed in floats) spins forever.
        # Timers are kept at least two resolutions ahead: the loop then advances to them.
        self._clock_resolution = 1e-12

    def time(self) -> float:
        return self._virtual_now

    def call_at(  # type: ignore[override]  # same call, typed loosely
        self, when: float, callback: Any, *args: Any, context: Any = None
    ) -> asyncio.TimerHandle:
        now = self._virtual_now
        if now < when < now + 2 * self._clock_resolution:
            when = now + 2 * self._clock_resolution
        return super().call_at(when, callback, *args, context=context)

    def advance(self, seconds: float) -> None:
        if seconds <= 0:
            return
        t = self._virtual_now + seconds
        # A wait shorter than the clock's resolution at this time (1e-13 s near 1,000 s)
        # would leave it unchanged, and a timer due just ahead would be waited for forever.
        self._virtual_now = t if t > self._virtual_now else math.nextafter(t, math.inf)


@contextlib.contextmanager
def external() -> Iterator[None]:
    """Mark work done by another thread, so a VirtualTimeLoop waits for it in real time."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if isinstance(loop, VirtualTimeLoop):
        loop.external_pending += 1
        try:
            yield
        finally:
            loop.external_pending -= 1
    else:
        yield


def run_virtual(main: Coroutine[Any, Any, T], start: float = 1_000.0) -> T:
    """Run ``main`` to completion on a fresh VirtualTimeLoop."""
    loop = VirtualTimeLoop(start)
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(main)
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()
