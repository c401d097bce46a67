"""The headless commands' loop (mavera_tui/runloop.py): uvloop where installed, asyncio on
request, the GC thresholds set while running and put back after."""

from __future__ import annotations

import asyncio
import gc

import pytest

from mavera_tui import runloop


async def _probe() -> tuple[str, tuple[int, int, int]]:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop()).__module__, gc.get_threshold()


def test_run_uses_uvloop_where_installed_and_restores_the_gc_thresholds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("uvloop")
    monkeypatch.delenv(runloop.LOOP_ENV, raising=False)
    before = gc.get_threshold()
    module, inside = runloop.run(_probe())
    assert module.startswith("uvloop") and runloop.loop_name() == "uvloop"
    assert inside == runloop.GC_THRESHOLDS
    assert gc.get_threshold() == before


def test_mavera_loop_asyncio_asks_for_the_standard_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(runloop.LOOP_ENV, "asyncio")
    module, _ = runloop.run(_probe())
    assert module.startswith("asyncio") and runloop.loop_name() == "asyncio"


def test_the_thresholds_come_back_when_the_command_raises() -> None:
    before = gc.get_threshold()

    async def boom() -> None:
        raise RuntimeError("x")

    with pytest.raises(RuntimeError):
        runloop.run(boom())
    assert gc.get_threshold() == before
