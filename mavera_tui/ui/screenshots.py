"""Regenerate the README screenshots: SVG from Textual, PNG via cairosvg where installed.

``main(out_dir)`` first runs twelve minutes of the demo workload on the embedded simulator
(real engine, fast-forwarded time, seeded: the same pictures every time), then builds each
app through ``create_app`` exactly as the monitor does, on that state, and saves: the main
screen at 200x60, the new-job form with an estimate, the 80x24 layout and an alert state.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from textual.pilot import Pilot

from ..demo import simulate_demo
from ..history import History
from ..snapshot import AlertView, Snapshot
from .app import MaveraApp, create_app
from .fixtures import FrozenEngine

Setup = Callable[[Pilot], Awaitable[None]]

_BRAILLE = re.compile(r"(<text[^>]*?)(>[^<]*[\u2800-\u28ff][^<]*</text>)")


async def _nothing(pilot: Pilot) -> None:
    await pilot.pause()


async def _open_form(pilot: Pilot) -> None:
    await pilot.press("n")
    await pilot.pause()
    form = pilot.app.screen
    form.query_one("#sample_size").value = "50"
    form.query_one("#questions").value = "5"
    await pilot.pause()


def _alert_engine(snap: Snapshot) -> FrozenEngine:
    alerts = (
        AlertView(snap.t - 2, "error", "credits_exhausted",
                  "402 credits_exhausted: balance 0; 3 jobs parked until credits return"),
        AlertView(snap.t - 20, "warning", "429_storm",
                  "14 responses 429 in 60s; key held 30s (Retry-After)"),
        AlertView(snap.t - 60, "warning", "budget_90", "90% of the monthly allocation used"),
    ) + snap.alerts
    return FrozenEngine(dataclasses.replace(
        snap, alerts=alerts, remaining=2, window_used=snap.limit - 2, key_hold_s=30.0,
        balance=0, plan_remaining=0, purchased=0, month_used=snap.allocation, eta_s=0.0))


SHOTS: dict[str, tuple[tuple[int, int], Callable[[Snapshot], FrozenEngine], Setup]] = {
    "main-200x60": ((200, 60), FrozenEngine, _nothing),
    "form-100x30": ((100, 30), FrozenEngine, _open_form),
    "compact-80x24": ((80, 24), FrozenEngine, _nothing),
    "alerts-200x60": ((200, 60), _alert_engine, _nothing),
}


async def _shoot(name: str, out: Path, snap: Snapshot, history: History) -> Path:
    size, make_engine, setup = SHOTS[name]
    app: MaveraApp = create_app(make_engine(snap), history=history, watch_terminal=False)
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        await setup(pilot)
        await pilot.pause()
        path = Path(app.save_screenshot(filename=f"{name}.svg", path=str(out)))
    return path


def _to_png(svg: Path) -> Path | None:
    try:
        import cairosvg  # type: ignore[import-untyped]
    except ImportError:
        return None
    text = svg.read_text(encoding="utf-8")
    text = text.replace("Fira Code", "DejaVu Sans Mono")
    # Braille chart dots are missing from DejaVu Sans Mono but present in DejaVu Sans.
    text = _BRAILLE.sub(lambda m: m.group(1) + ' font-family="DejaVu Sans"' + m.group(2),
                        text)
    png = svg.with_suffix(".png")
    cairosvg.svg2png(bytestring=text.encode("utf-8"), write_to=str(png))
    return png


def main(out_dir: str = "screenshots") -> int:
    """Write every screenshot into ``out_dir``; returns a process exit code."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    snap, history = simulate_demo(12)
    for name in SHOTS:
        svg = asyncio.run(_shoot(name, out, snap, history))
        png = _to_png(svg)
        print(f"wrote {svg}" + (f" and {png.name}" if png else " (no cairosvg: SVG only)"))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
