"""The event loop the headless commands (``run``, ``record``, ``proxy``) run on.

uvloop where it is installed (a dependency on the platforms it supports), plain asyncio
otherwise or when ``MAVERA_LOOP=asyncio`` asks for it. Measured on a 20,000-request flood
through the simulator on loopback at 600 in flight (``bench/bench_http.py --cells flood-20k``):
see pyproject.toml for the number. The interactive app keeps Textual's own loop, and the
tests' ``clock.VirtualTimeLoop`` is a plain asyncio loop: neither comes through here.

uvloop's ``loop.time()`` counts whole milliseconds (``Clock.now()`` reads it): far below
anything the scheduler decides on (a window is seconds, the write-to-count margin at least
0.1 s).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

#: Set to ``asyncio`` to run the headless commands on the standard library's loop.
LOOP_ENV = "MAVERA_LOOP"


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's ``new_event_loop`` if it is usable here and not turned off, else None."""
    if os.environ.get(LOOP_ENV, "").strip().lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:  # not installed (or no wheel for this platform): plain asyncio
        return None
    return uvloop.new_event_loop


def loop_name() -> str:
    """Which loop ``run`` would use: "uvloop" or "asyncio"."""
    return "asyncio" if loop_factory() is None else "uvloop"


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on the loop ``loop_factory`` picks."""
    factory = loop_factory()
    if factory is None:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
