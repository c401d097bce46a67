"""The snapshot codec (``zdelta1``): how a recording stores one Snapshot per interval.

A self-contained *keyframe* every ``keyframe_every`` snapshots, and in between *deltas*
holding only what changed (top-level fields, endpoint rows, jobs that moved to the front of
the recent list or changed, new alerts), each zlib-compressed with the preceding raw
documents of the chain as preset dictionary, so a job id or path seen a tick ago costs a
back-reference, not its bytes. The recorder encodes; the reader (replay, report) decodes.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from ..snapshot import AlertView, EndpointState, FleetState, JobView, Snapshot

__all__ = [
    "ENCODING",
    "KEYFRAME_EVERY",
    "DecodeError",
    "SnapshotDecoder",
    "SnapshotEncoder",
    "is_keyframe",
    "snapshot_state",
    "state_to_snapshot",
]

ENCODING = "zdelta1"
#: Snapshots between keyframes: bounds how far replay decodes to reach any instant.
KEYFRAME_EVERY = 120
_ZDICT_MAX = 32768  # zlib's window: older preset-dictionary bytes would be ignored
_ROWS = {"endpoints": EndpointState, "jobs": JobView, "alerts": AlertView}
_ROW_FIELDS = {k: [f.name for f in fields(c)] for k, c in _ROWS.items()}
_TOP_FIELDS = [f.name for f in fields(Snapshot)]


class DecodeError(ValueError):
    """A snapshot blob that cannot be decoded (corrupt, or its chain is broken)."""


def _r(v: Any) -> Any:
    # Millisecond precision is plenty for every float a pane shows, and compresses better.
    return round(v, 3) if isinstance(v, float) else v


def snapshot_state(snap: Snapshot) -> dict[str, Any]:
    """A snapshot as the encoder's normal form: rows as positional lists, floats rounded.

    Reads attributes directly: ``dataclasses.asdict`` deep-copies and costs ~15 ms a tick
    with 200 jobs, which a recorder at 1 s should not spend."""
    state: dict[str, Any] = {}
    for name in _TOP_FIELDS:
        v = getattr(snap, name)
        if name in _ROWS:
            names = _ROW_FIELDS[name]
            state[name] = [[_r(getattr(row, n)) for n in names] for row in v]
        elif name == "fleet":
            state[name] = None if v is None else _fleet_state(v)
        elif isinstance(v, dict):
            state[name] = dict(v)
        else:
            state[name] = _r(v)
    return state


def _fleet_state(fleet: FleetState) -> dict[str, Any]:
    """The fleet as plain JSON (a top-level field: a delta carries it whole when it changed,
    which at one read a second is what the chain's zlib dictionary makes cheap)."""
    d = fleet.to_dict()
    d["processes"] = [{k: _r(v) for k, v in p.items()} for p in d["processes"]]
    d["alerts"] = [{k: _r(v) for k, v in a.items()} for a in d["alerts"]]
    d["slots"] = [list(kv) for kv in d["slots"]]
    return {k: _r(v) for k, v in d.items()}


def state_to_snapshot(
    state: dict[str, Any], names: dict[str, list[str]] | None = None, *, rows: bool = True
) -> Snapshot:
    """Build a Snapshot from a decoded state (``rows=False`` skips jobs/alerts: cheaper)."""
    names = names or _ROW_FIELDS
    d = {k: v for k, v in state.items() if k not in _ROWS}
    for k in _ROWS:
        if k == "endpoints" or rows:
            d[k] = [
                dict(zip(names.get(k, _ROW_FIELDS[k]), r, strict=False)) for r in state.get(k, ())
            ]
    return Snapshot.from_dict(d)


def _list_delta(
    prev: list[list[Any]], new: list[list[Any]], key: Callable[[list[Any]], Any]
) -> dict[str, Any]:
    """Encode ``new`` against ``prev``: the smallest front of ``new`` such that the rest is
    ``prev``'s order with the front removed, plus rows of the rest whose content changed."""
    pk = [key(r) for r in prev]
    nk = [key(r) for r in new]
    n = len(nk)
    front: set[Any] = set()
    k = 0
    while k <= n:
        rest = [x for x in pk if x not in front][: n - k]
        if rest == nk[k:]:
            break
        front.add(nk[k])
        k += 1
    by_key = {key(r): r for r in prev}
    upd = {str(i): new[i] for i in range(k, n) if by_key.get(nk[i]) != new[i]}
    out: dict[str, Any] = {"n": n}
    if k:
        out["f"] = new[:k]
    if upd:
        out["u"] = upd
    return out


def _list_apply(
    prev: list[list[Any]], delta: dict[str, Any], key: Callable[[list[Any]], Any]
) -> list[list[Any]]:
    frontrows = delta.get("f", [])
    front = {key(r) for r in frontrows}
    n = delta["n"]
    out = list(frontrows) + [r for r in prev if key(r) not in front][: n - len(frontrows)]
    for i, row in delta.get("u", {}).items():
        out[int(i)] = row
    return out


def _job_key(r: list[Any]) -> Any:
    return r[0]


def _alert_key(r: list[Any]) -> Any:
    return tuple(r)


class SnapshotEncoder:
    """Turns successive snapshots into ``zdelta1`` blobs (stateful: feed them in order)."""

    def __init__(self, keyframe_every: int = KEYFRAME_EVERY, level: int = 6):
        self.keyframe_every = max(1, keyframe_every)
        self.level = level
        self._prev: dict[str, Any] | None = None
        self._seq = 0
        self._since_key = 0
        self._chain = b""

    def encode(self, snap: Snapshot) -> bytes:
        state = snapshot_state(snap)
        self._seq += 1
        if self._prev is None or self._since_key >= self.keyframe_every:
            doc: dict[str, Any] = {"s": self._seq, "fields": _ROW_FIELDS, "d": state}
            raw = _dumps(doc)
            comp = zlib.compressobj(self.level)
            blob = b"K" + comp.compress(raw) + comp.flush()
            self._since_key = 0
            self._chain = raw[-_ZDICT_MAX:]
        else:
            doc = {"s": self._seq}
            prev = self._prev
            changed = {k: v for k, v in state.items() if k not in _ROWS and prev.get(k) != v}
            if changed:
                doc["c"] = changed
            pe, ne = prev["endpoints"], state["endpoints"]
            if len(pe) != len(ne):
                doc["e"] = {"all": ne}
            else:
                e = {str(i): r for i, r in enumerate(ne) if pe[i] != r}
                if e:
                    doc["e"] = e
            if prev["jobs"] != state["jobs"]:
                doc["j"] = _list_delta(prev["jobs"], state["jobs"], _job_key)
            if prev["alerts"] != state["alerts"]:
                doc["a"] = _list_delta(prev["alerts"], state["alerts"], _alert_key)
            raw = _dumps(doc)
            comp = (
                zlib.compressobj(self.level, zdict=self._chain)
                if self._chain
                else zlib.compressobj(self.level)
            )
            blob = b"D" + comp.compress(raw) + comp.flush()
            self._chain = (self._chain + raw)[-_ZDICT_MAX:]
        self._since_key += 1
        self._prev = state
        return blob


class SnapshotDecoder:
    """Inverse of SnapshotEncoder: feed blobs in recorded order; ``decode`` returns the
    state dict (see ``state_to_snapshot``). A delta whose chain is broken (a row lost, or a
    second recording session interleaved) raises DecodeError until the next keyframe."""

    def __init__(self) -> None:
        self.state: dict[str, Any] | None = None
        self.names: dict[str, list[str]] = dict(_ROW_FIELDS)
        self._seq: int | None = None
        self._chain = b""

    def reset(self) -> None:
        self.state, self._seq, self._chain = None, None, b""

    def decode(self, blob: bytes) -> dict[str, Any]:
        if not blob:
            raise DecodeError("empty snapshot")
        kind, body = blob[:1], blob[1:]
        try:
            if kind == b"K":
                raw = zlib.decompress(body)
                doc = json.loads(raw)
                self.names = {k: list(v) for k, v in doc.get("fields", _ROW_FIELDS).items()}
                self.state = doc["d"]
                self._chain = raw[-_ZDICT_MAX:]
            elif kind == b"D":
                if self.state is None:
                    raise DecodeError("delta without a keyframe before it")
                d = zlib.decompressobj(zdict=self._chain) if self._chain else zlib.decompressobj()
                raw = d.decompress(body) + d.flush()
                doc = json.loads(raw)
                if self._seq is None or doc.get("s") != self._seq + 1:
                    raise DecodeError("snapshot chain broken")
                st = dict(self.state)
                st.update(doc.get("c", {}))
                e = doc.get("e")
                if e is not None:
                    if "all" in e:
                        st["endpoints"] = e["all"]
                    else:
                        eps = list(st["endpoints"])
                        for i, r in e.items():
                            eps[int(i)] = r
                        st["endpoints"] = eps
                if "j" in doc:
                    st["jobs"] = _list_apply(st["jobs"], doc["j"], _job_key)
                if "a" in doc:
                    st["alerts"] = _list_apply(st["alerts"], doc["a"], _alert_key)
                self.state = st
                self._chain = (self._chain + raw)[-_ZDICT_MAX:]
            else:
                raise DecodeError(f"unknown snapshot kind {kind!r}")
        except DecodeError:
            self.reset()
            raise
        except (zlib.error, ValueError, KeyError, TypeError, IndexError) as e:
            self.reset()
            raise DecodeError(f"corrupt snapshot: {e}") from None
        self._seq = doc.get("s")
        return self.state

    def snapshot(self, blob: bytes, *, rows: bool = True) -> Snapshot:
        return state_to_snapshot(self.decode(blob), self.names, rows=rows)


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def is_keyframe(blob: bytes) -> bool:
    """True if ``blob`` decodes on its own (a chain may start there)."""
    return blob[:1] == b"K"
