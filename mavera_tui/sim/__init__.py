"""A faithful, fault-injecting simulator of the Mavera API (raw ASGI; see ``app``)."""

from .app import (
    HOSTILE_TEXT,
    SimulatedDrop,
    Simulator,
    charge_for,
    charge_range,
    create_sim,
    sim_transport,
)
from .config import AutoRecharge, Faults, Readings, SimConfig
from .records import Records, RequestRecord, fingerprint
from .state import Account, Transaction

__all__ = [
    "HOSTILE_TEXT",
    "Account",
    "AutoRecharge",
    "Faults",
    "Readings",
    "Records",
    "RequestRecord",
    "SimConfig",
    "SimulatedDrop",
    "Simulator",
    "Transaction",
    "charge_for",
    "charge_range",
    "create_sim",
    "fingerprint",
    "sim_transport",
]
