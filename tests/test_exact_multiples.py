"""A batch that fills its windows exactly (N = k x L) has no spare room: every chain of the
window's sends carries k requests. In virtual time with the documented window and the
realistic mix of bench/bench_http.py (capped work about 60% of the window bound), such a
batch ended a whole window late (1.25-1.34 of the bound) until holds for capped jobs were
weighed against the batch's end (mavera_tui/gates/plan.py) and the balance read stopped
being request N + 1 by default. bench/bench_multiples.py prints the same numbers."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from mavera_tui.clock import run_virtual
from mavera_tui.scheduler import SchedulerConfig

_BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(_BENCH))  # bench_multiples imports its neighbours by name
_spec = importlib.util.spec_from_file_location("bench_multiples", _BENCH / "bench_multiples.py")
assert _spec is not None and _spec.loader is not None
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


@pytest.mark.parametrize(
    ("n", "limit", "kind", "at_most"),
    [
        (600, 120, "mix", 1.18),  # 1.25-1.26 before
        (600, 120, "burst", 1.05),  # 1.26 before (the read was request 601)
        (500, 120, "mix", 1.03),  # not a multiple: as before
        # 1.27 before: the first burst, counted by the server in its own order, read as a
        # server counting at the answer, and the sends leaving the window as foreign ones.
        (3000, 600, "burst", 1.05),
    ],
)
def test_the_default_run_of_a_batch_filling_its_windows_ends_near_the_bound(
    n: int, limit: int, kind: str, at_most: float
) -> None:
    assert SchedulerConfig().balance_read == "auto"  # what `run` does unless told otherwise
    r = run_virtual(bench.one(n, limit, 1, "auto", kind))
    assert r["r429"] == 0 and r["requests"] == n + (n % limit != 0)
    assert r["ratio"] <= at_most
