"""One API key, many processes and hosts: the key's window, slots, credits and ledger kept
in Redis (``--shared redis://HOST:PORT/DB``).

* :mod:`.scripts`: the Lua scripts (atomic, timed by Redis ``TIME``, one hash tag);
* :mod:`.state`: :class:`SharedState`, the scripts behind a small async API;
* :mod:`.fleet`: the scheduler's side: shared window and slot gates and the :class:`Fleet`
  hook (wiring, Redis away); :mod:`.admission`: its admission per batch; :mod:`.upkeep`:
  its release per answer, heartbeat and pub/sub wake-ups;
* :mod:`.archive`: :class:`LedgerArchive`, the key's ledger stream copied into a store
  (the recorder's, and any process's with ``[shared] archive = true``);
* :mod:`.view`: :class:`FleetView`, a read-only view for a monitor.
"""

from .state import SharedState, SharedUnavailable, key_prefix
from .view import FleetSnapshot, FleetView, ProcessInfo

__all__ = [
    "FleetSnapshot",
    "FleetView",
    "ProcessInfo",
    "SharedState",
    "SharedUnavailable",
    "key_prefix",
]
