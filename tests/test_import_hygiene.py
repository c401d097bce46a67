"""Headless modules never import textual (checked in a fresh interpreter, as Harlequin does)."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEADLESS = [
    "mavera_tui.record",
    "mavera_tui.recording",
    "mavera_tui.recording.codec",
    "mavera_tui.recording.recorder",
    "mavera_tui.recording.reader",
    "mavera_tui.recording.timespec",
    "mavera_tui.recording.report",
    "mavera_tui.metrics",
    "mavera_tui.engine",
    "mavera_tui.scheduler",
    "mavera_tui.store",
    "mavera_tui.history",
    "mavera_tui.snapshot",
]


@pytest.mark.parametrize("module", HEADLESS)
def test_headless_module_does_not_import_textual(module):
    code = (
        f"import sys, importlib; importlib.import_module({module!r}); "
        "bad = sorted(m for m in sys.modules if m == 'textual' or "
        "m.startswith('textual.')); print(bad[:5]); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"{module} imports textual: {r.stdout} {r.stderr}"


def test_the_replay_engine_alone_does_not_import_textual():
    code = (
        "import sys; from mavera_tui.recording.replay import ReplayEngine; "
        "sys.exit(1 if 'textual' in sys.modules else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
