"""Front ends reach the engine only through its interfaces (``mavera_tui.control``).

The monitor, the CLI, the recorder, the replay, the demo and the panes hold a started
scheduler as a :class:`~mavera_tui.control.RunControl`; if one of them reads a scheduler's
part or private attribute again, a change to the scheduler's insides breaks a front end
that no test of the scheduler would notice. These tests read the front ends' source.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from mavera_tui.control import EngineControl, RunControl

PKG = Path(__file__).resolve().parents[1] / "mavera_tui"

#: The modules on the far side of the interface (the engine's own modules are not here).
FRONT_ENDS = sorted(
    [
        *PKG.glob("ui/*.py"),
        *PKG.glob("recording/*.py"),
        *PKG.glob("cli*.py"),
        *PKG.glob("cli/*.py"),
        *(PKG / name for name in ("monitor.py", "record.py", "demo.py", "metrics.py")),
    ]
)

#: Private attributes of the standard library the CLI needs (argparse offers no other way
#: to list the sub-commands).
STDLIB_PRIVATE = {"_actions", "_SubParsersAction"}

#: How front ends name a started scheduler: ``sched``, ``scheduler``, ``x.sched``, ...
SCHEDULER_NAMES = {"sched", "scheduler"}


def _members(*protocols: type) -> set[str]:
    names: set[str] = set()
    for p in protocols:
        for klass in p.__mro__:
            if klass is object:
                continue
            names.update(n for n in vars(klass) if not n.startswith("_"))
            names.update(getattr(klass, "__annotations__", {}))
    return names


ALLOWED = _members(RunControl)


def _names_scheduler(node: ast.expr) -> bool:
    if isinstance(node, ast.Name):
        return node.id in SCHEDULER_NAMES
    return isinstance(node, ast.Attribute) and node.attr in SCHEDULER_NAMES


def _violations(source: str) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Attribute):
            continue
        attr, owner = node.attr, node.value
        private = attr.startswith("_") and not attr.startswith("__")
        if private and attr not in STDLIB_PRIVATE:
            if not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")):
                found.append((node.lineno, f"{ast.unparse(node)}: a private attribute"))
                continue
        if _names_scheduler(owner) and attr not in ALLOWED:
            found.append((node.lineno, f"{ast.unparse(node)}: not in RunControl"))
    return found


def test_the_front_ends_are_all_scanned() -> None:
    names = {p.name for p in FRONT_ENDS}
    assert {"monitor.py", "cli.py", "app.py", "recorder.py", "replay.py", "demo.py"} <= names
    assert all(p.exists() for p in FRONT_ENDS)


@pytest.mark.parametrize("path", FRONT_ENDS, ids=lambda p: str(p.relative_to(PKG)))
def test_a_front_end_reaches_the_scheduler_only_through_its_interface(path: Path) -> None:
    bad = _violations(path.read_text(encoding="utf-8"))
    assert not bad, "\n".join(f"{path.name}:{line}: {what}" for line, what in bad)


def test_the_scan_catches_a_reach_past_the_interface() -> None:
    # The scan itself must be able to fail: these are the reaches it replaced.
    src = inspect.cleandoc(
        """
        def f(live, sched):
            sched._alert("warning", "job_file", "x")
            live.sched.jobs.get("a")
            return live.engine.scheduler.window.limit
        """
    )
    found = [what for _, what in _violations(src)]
    assert any("sched._alert" in w for w in found)
    assert any("live.sched.jobs" in w for w in found)
    assert any("scheduler.window" in w for w in found)
    assert not _violations("def g(sched):\n    return sched.snapshot().limit, sched.job_ids()")


async def test_the_live_scheduler_implements_run_control() -> None:
    from mavera_tui.scheduler import Scheduler

    class Never:
        async def request(self, *a: object, **kw: object) -> None:
            raise AssertionError("nothing is sent")

    sched = Scheduler(Never())
    assert isinstance(sched, RunControl)
    assert isinstance(sched, EngineControl)
    missing = [n for n in ALLOWED if not hasattr(sched, n)]
    assert not missing
