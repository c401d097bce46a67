"""mavera-tui: run work against the rate-limited, credit-billed Mavera API, and watch it.

The Python API (``from mavera_tui import Governor``) is imported on first use, so that
``import mavera_tui`` stays light for the monitor's first frame."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .api_types import StreamSink
    from .governor import GovernedResponse, Governor, JobResult
    from .jobs import JobSpec

__all__ = ["GovernedResponse", "Governor", "JobResult", "JobSpec", "StreamSink", "__version__"]

_LAZY = {
    "Governor": "governor",
    "GovernedResponse": "governor",
    "JobResult": "governor",
    "JobSpec": "jobs",
    "StreamSink": "api_types",
}


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'mavera_tui' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{mod}", __name__), name)
