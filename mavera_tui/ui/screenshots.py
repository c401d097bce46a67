"""Regenerate the README screenshots: SVG from Textual, PNG via cairosvg where installed.

``main(out_dir)`` first runs twelve minutes of the demo workload on the embedded simulator
(real engine, fast-forwarded time, seeded: the same pictures every time), then builds each
app through ``create_app`` exactly as the monitor does, on that state, and saves: the main
screen at 200x60, the new-job form with an estimate, the 80x24 layout, an alert state and the
Fleet view of a shared key at 80x24.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from textual.pilot import Pilot
from textual.widgets import Input

from ..demo import simulate_demo
from ..history import History
from ..snapshot import Snapshot
from .app import MaveraApp, create_app
from .fixtures import FrozenEngine, demo_fleet

Setup = Callable[[Pilot], Awaitable[None]]

_BRAILLE = re.compile(r"(<text[^>]*?)(>[^<]*[\u2800-\u28ff][^<]*</text>)")


async def _nothing(pilot: Pilot) -> None:
    await pilot.pause()


async def _open_form(pilot: Pilot) -> None:
    await pilot.press("n")
    await pilot.pause()
    form = pilot.app.screen
    form.query_one("#sample_size", Input).value = "50"
    form.query_one("#questions", Input).value = "5"
    await pilot.pause()


async def _fleet(pilot: Pilot) -> None:
    await pilot.press("F")
    await pilot.pause()


def _alert_state() -> tuple[Snapshot, History]:
    """A real alert state: the demo with no auto-recharge running through its credits
    (budget alerts, pre-flight refusals, jobs waiting for credits) and a 429 storm from the
    simulator's fault switches (the key held on Retry-After)."""
    from ..sim.config import AutoRecharge, Faults, SimConfig

    return simulate_demo(
        7,
        sim_config=SimConfig(
            tier="professional",
            plan="professional",
            purchased=5000,
            seed=3,
            auto_recharge=AutoRecharge(enabled=False),
            faults=Faults(storm_start=330.0, storm_seconds=25.0),
        ),
    )


SHOTS: dict[str, tuple[tuple[int, int], Callable[[Snapshot], FrozenEngine], Setup]] = {
    "main-200x60": ((200, 60), FrozenEngine, _nothing),
    "form-100x30": ((100, 30), FrozenEngine, _open_form),
    "compact-80x24": ((80, 24), FrozenEngine, _nothing),
    "alerts-200x60": ((200, 60), FrozenEngine, _nothing),
    "fleet-80x24": ((80, 24), FrozenEngine, _fleet),
}


async def _shoot(name: str, out: Path, snap: Snapshot, history: History) -> Path:
    size, make_engine, setup = SHOTS[name]
    app: MaveraApp = create_app(
        make_engine(snap), history=history, watch_terminal=False, show_health=False
    )
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        await setup(pilot)
        await pilot.pause()
        path = Path(app.save_screenshot(filename=f"{name}.svg", path=str(out)))
    return path


def _to_png(svg: Path) -> Path | None:
    try:
        import cairosvg
    except ImportError:
        return None
    text = svg.read_text(encoding="utf-8")
    text = text.replace("Fira Code", "DejaVu Sans Mono")
    # Textual lays cells out 0.61 em apart (Fira Code); DejaVu Sans Mono advances 0.602 em
    # and cairosvg ignores textLength, so long runs came out short: a border drawn as one
    # run ended before the border piece drawn at its own x (a stray strip beside modals).
    # Letter spacing makes up the difference.
    m = re.search(r"font-size: (\d+(?:\.\d+)?)px;", text)
    if m:
        size = float(m.group(1))
        spacing = 0.61 * size - size * 1233 / 2048
        text = text.replace(
            f"font-size: {m.group(1)}px;",
            f"font-size: {m.group(1)}px;\n        letter-spacing: {spacing:.3f}px;",
            1,
        )
    # Braille chart dots are missing from DejaVu Sans Mono but present in DejaVu Sans.
    text = _BRAILLE.sub(lambda m: m.group(1) + ' font-family="DejaVu Sans"' + m.group(2), text)
    png = svg.with_suffix(".png")
    cairosvg.svg2png(bytestring=text.encode("utf-8"), write_to=str(png))
    return png


def main(out_dir: str = "screenshots") -> int:
    """Write every screenshot into ``out_dir``; returns a process exit code."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    demo = simulate_demo(12)
    alerts = _alert_state()
    for name in SHOTS:
        snap, history = alerts if name.startswith("alerts") else demo
        if name.startswith("fleet"):  # the demo moment on a key shared by four processes
            fleet = dataclasses.replace(demo_fleet(snap.t, hostile=False), limit=snap.limit)
            snap = dataclasses.replace(snap, fleet=fleet)
        svg = asyncio.run(_shoot(name, out, snap, history))
        png = _to_png(svg)
        print(f"wrote {svg}" + (f" and {png.name}" if png else " (no cairosvg: SVG only)"))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
