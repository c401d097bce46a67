"""The event loop the headless commands (``run``, ``record``, ``proxy``) run on.

uvloop where it is installed (a dependency on the platforms it supports), plain asyncio
otherwise or when ``MAVERA_LOOP=asyncio`` asks for it. Measured on a 20,000-request flood
through the simulator on loopback at 600 in flight (``bench/bench_http.py --cells flood-20k``):
see pyproject.toml for the number. The interactive app keeps Textual's own loop, and the
tests' ``clock.VirtualTimeLoop`` is a plain asyncio loop: neither comes through here.

uvloop's ``loop.time()`` counts whole milliseconds (``Clock.now()`` reads it): far below
anything the scheduler decides on (a window is seconds, the write-to-count margin at least
0.1 s).

While they run, the cyclic garbage collector's first generation is collected after 20,000
new objects rather than 700 (``GC_THRESHOLDS``). A batch keeps every job in memory and
each request in flight holds a few dozen objects, so at the default the collector ran 1,400
young and a dozen full collections in a 20,000-request flood: 1.4 s of its 6 s of CPU.
At 20,000 it ran 40 young ones and no full one (0.07 s), with the same peak memory (85 MB).
"""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

#: Set to ``asyncio`` to run the headless commands on the standard library's loop.
LOOP_ENV = "MAVERA_LOOP"
#: ``gc.set_threshold`` while a headless command runs (the default is 700, 10, 10).
GC_THRESHOLDS = (20_000, 10, 10)


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
    """``asyncio.run(main)`` on the loop ``loop_factory`` picks, with ``GC_THRESHOLDS``."""
    factory = loop_factory()
    before = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        if factory is None:
            return asyncio.run(main)
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(main)
    finally:
        gc.set_threshold(*before)
