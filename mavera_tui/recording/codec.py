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
from dataclasses import dataclass, fields
from typing import Any

from ..colblock import split_number
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


# ====================================================================== zblock1 =======
#
# Since schema 4 the recorder writes snapshots in blocks of up to BLOCK_SNAPSHOTS, one row
# per block (store.snapshot_blocks): each snapshot a JSON document (a keyframe: the whole
# state; otherwise what changed), the block's documents deflated together with the
# chain's earlier documents (since its keyframe) as preset dictionary. Against zdelta1 a
# delta says less: integer counters as differences, a job already in the list as its
# position and the fields that changed, job times as milliseconds from the snapshot's own.
# A keyframe always starts a block, so seeking decodes from a block that starts with one.

BLOCK_ENCODING = "zblock1"
#: Snapshots per block at most: at 1 s, what a SIGKILL of the recorder may lose.
BLOCK_SNAPSHOTS = 10
#: Seconds a block spans at most (at a longer interval, fewer snapshots make a block).
BLOCK_SECONDS = 10.0
#: Snapshots between keyframes in zblock1 (a seek decodes at most this many documents).
BLOCK_KEYFRAME_EVERY = 600
#: Blocks merged into one once written (``BlockEncoder``): two minutes at 1 s.
MERGE_BLOCKS = 12
_TIME_FIELDS = ("created", "updated")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class _RowCoder:
    """How one document writes job rows: times as ``[ms]`` after the time written before
    it in the document (the first: after the snapshot's own), an ``updated`` equal to its
    row's ``created`` as ``"="``, and a new job's id as the difference of its trailing
    number from the one before it (``demo-3083`` after ``demo-3082``: ``1``). Encoder and
    decoder meet the values in the same order, so they keep the same state."""

    def __init__(self, t: Any, times: tuple[int | None, int | None], ref: Any):
        self.last = t
        self.created, self.updated = times
        self.ref = ref  # the id of the new job before (a string)

    # --- encoding -----------------------------------------------------------------------

    def time(self, v: Any) -> Any:
        if isinstance(v, float) and isinstance(self.last, float):
            ms = round((v - self.last) * 1000)
            if round(self.last + ms / 1000, 3) == v:
                self.last = v
                return [ms]
        return v

    def row(self, r: list[Any]) -> list[Any]:
        out = list(r)
        if self.created is not None:
            out[self.created] = self.time(r[self.created])
        if self.updated is not None:
            same = self.created is not None and r[self.updated] == r[self.created]
            out[self.updated] = "=" if same else self.time(r[self.updated])
        jid = r[0]
        a = split_number(jid) if isinstance(jid, str) else None
        b = split_number(self.ref) if isinstance(self.ref, str) else None
        if a is not None and b is not None and a[0] == b[0]:
            out[0] = a[1] - b[1]
        self.ref = jid
        return out

    def diff(self, old: list[Any], new: list[Any]) -> dict[str, Any]:
        times = (self.created, self.updated)
        return {
            str(i): (self.time(b) if i in times else b)
            for i, (a, b) in enumerate(zip(old, new, strict=True))
            if a != b
        }

    # --- decoding -----------------------------------------------------------------------

    def untime(self, v: Any) -> Any:
        if isinstance(v, list):
            v = round(self.last + v[0] / 1000, 3)
            self.last = v
        return v

    def unrow(self, r: list[Any]) -> list[Any]:
        out = list(r)
        if self.created is not None:
            out[self.created] = self.untime(r[self.created])
        if self.updated is not None:
            v = r[self.updated]
            same = v == "=" and self.created is not None
            out[self.updated] = out[self.created] if same else self.untime(v)  # type: ignore[index]
        if _is_int(out[0]):
            b = split_number(self.ref) if isinstance(self.ref, str) else None
            if b is None:
                raise DecodeError("a job id relative to no id")
            out[0] = f"{b[0]}{b[1] + out[0]}"
        self.ref = out[0]
        return out

    def undiff(self, row: list[Any], diff: dict[str, Any]) -> list[Any]:
        out = list(row)
        times = (self.created, self.updated)
        for i, v in diff.items():
            k = int(i)
            out[k] = self.untime(v) if k in times else v
        return out


def _jobs_delta(prev: list[list[Any]], new: list[list[Any]], coder: _RowCoder) -> Any:
    """The job list against the previous one: as ``_list_delta`` (a front of rows, then
    the previous order), but a front row already known is its old position and a diff,
    and rows are written by ``coder``."""
    base = _list_delta(prev, new, _job_key)
    pos = {_job_key(r): i for i, r in enumerate(prev)}
    front: list[Any] = []
    for r in base.get("f", []):
        i = pos.get(_job_key(r))
        if i is None or len(prev[i]) != len(r):
            front.append(coder.row(r))
        else:
            front.append({"p": i, "c": coder.diff(prev[i], r)})
    out: dict[str, Any] = {"n": base["n"]}
    if front:
        out["f"] = front
    upd = base.get("u")
    if upd:
        by_key = {_job_key(r): r for r in prev}
        out["u"] = {
            i: coder.diff(by_key[_job_key(r)], r)
            if len(by_key[_job_key(r)]) == len(r)
            else coder.row(r)
            for i, r in upd.items()
        }
    return out


def _jobs_apply(prev: list[list[Any]], delta: dict[str, Any], coder: _RowCoder) -> Any:
    front = []
    for r in delta.get("f", []):
        if isinstance(r, dict):
            front.append(coder.undiff(prev[r["p"]], r.get("c", {})))
        else:
            front.append(coder.unrow(r))
    keys = {_job_key(r) for r in front}
    n = delta["n"]
    out = front + [r for r in prev if _job_key(r) not in keys][: n - len(front)]
    for i, d in delta.get("u", {}).items():
        k = int(i)
        out[k] = coder.undiff(out[k], d) if isinstance(d, dict) else coder.unrow(d)
    return out


def _coder(names: dict[str, list[str]], prev_jobs: list[list[Any]], t: Any) -> _RowCoder:
    jobs = names.get("jobs", _ROW_FIELDS["jobs"])
    idx = tuple(jobs.index(f) if f in jobs else None for f in _TIME_FIELDS)
    ref = prev_jobs[0][0] if prev_jobs and prev_jobs[0] else None
    return _RowCoder(t, (idx[0], idx[1]), ref)


def _endpoints_delta(pe: list[list[Any]], ne: list[list[Any]]) -> dict[str, Any]:
    """Endpoint rows that changed: ``e`` the new values, ``ed`` integer differences (all
    rows again under ``e.all`` if the table's shape changed)."""
    if len(pe) != len(ne) or any(len(a) != len(b) for a, b in zip(pe, ne, strict=False)):
        return {"e": {"all": ne}}
    e: dict[str, Any] = {}
    ed: dict[str, Any] = {}
    for i, (a, b) in enumerate(zip(pe, ne, strict=True)):
        if a == b:
            continue
        for j, (x, y) in enumerate(zip(a, b, strict=True)):
            if x == y:
                continue
            if _is_int(x) and _is_int(y):
                ed.setdefault(str(i), {})[str(j)] = y - x
            else:
                e.setdefault(str(i), {})[str(j)] = y
    out: dict[str, Any] = {}
    if e:
        out["e"] = e
    if ed:
        out["ed"] = ed
    return out


def delta_doc(prev: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    """What changed from ``prev`` to ``state`` (both ``snapshot_state`` forms)."""
    doc: dict[str, Any] = {}
    c: dict[str, Any] = {}
    ci: dict[str, Any] = {}
    for k, v in state.items():
        if k in _ROWS:
            continue
        pv = prev.get(k)
        if k not in prev or pv != v:
            if _is_int(v) and _is_int(pv):
                ci[k] = v - pv
            else:
                c[k] = v
    if c:
        doc["c"] = c
    if ci:
        doc["ci"] = ci
    doc.update(_endpoints_delta(prev["endpoints"], state["endpoints"]))
    if prev["jobs"] != state["jobs"]:
        coder = _coder(_ROW_FIELDS, prev["jobs"], state["t"])
        doc["j"] = _jobs_delta(prev["jobs"], state["jobs"], coder)
    if prev["alerts"] != state["alerts"]:
        doc["a"] = _list_delta(prev["alerts"], state["alerts"], _alert_key)
    return doc


def apply_doc(
    prev: dict[str, Any], doc: dict[str, Any], names: dict[str, list[str]]
) -> dict[str, Any]:
    """``prev`` with the changes of ``doc`` (a ``delta_doc``)."""
    st = dict(prev)
    st.update(doc.get("c", {}))
    for k, d in doc.get("ci", {}).items():
        st[k] = st[k] + d
    e = doc.get("e")
    if e is not None and "all" in e:
        st["endpoints"] = e["all"]
    elif e is not None or "ed" in doc:
        eps = [list(r) for r in st["endpoints"]]
        for i, ch in (e or {}).items():
            for j, v in ch.items():
                eps[int(i)][int(j)] = v
        for i, ch in doc.get("ed", {}).items():
            for j, d in ch.items():
                eps[int(i)][int(j)] += d
        st["endpoints"] = eps
    if "j" in doc:
        st["jobs"] = _jobs_apply(st["jobs"], doc["j"], _coder(names, st["jobs"], st["t"]))
    if "a" in doc:
        st["alerts"] = _list_apply(st["alerts"], doc["a"], _alert_key)
    return st


@dataclass(frozen=True, eq=False)
class SnapshotBlock:
    """One stored block: its snapshots' times, whether it starts with a keyframe, and the
    compressed documents. Frames refer to it by position (``BlockFrame``)."""

    t0: float
    times: tuple[float, ...]
    key: bool
    data: bytes


@dataclass(frozen=True)
class BlockFrame:
    """The ``pos``-th snapshot of ``block``: a frame of a zblock1 recording."""

    block: SnapshotBlock
    pos: int


class BlockEncoder:
    """Snapshots into zblock1 blocks (stateful: feed them in order).

    ``add`` returns the blocks it completed: a block is complete when it holds
    ``block_snapshots``, or when a keyframe is due (the keyframe starts the next). Every
    ``merge_blocks`` blocks (and at a keyframe, and at ``flush(final=True)``) the blocks
    since the last merge come back once more as one block, ``merges`` True: stored in
    place of them. Small blocks bound what a crash loses; merged ones pack into SQLite's
    pages without the slack a 2 KB row leaves in a 4 KB page, and compress a little better.
    The merged block decodes with the same preset dictionary as its first part, and leaves
    the chain as its parts did, so the blocks after it decode either way."""

    def __init__(
        self,
        keyframe_every: int = BLOCK_KEYFRAME_EVERY,
        block_snapshots: int = BLOCK_SNAPSHOTS,
        level: int = 9,
        merge_blocks: int = MERGE_BLOCKS,
    ):
        self.keyframe_every = max(1, keyframe_every)
        self.block_snapshots = max(1, block_snapshots)
        self.merge_blocks = max(1, merge_blocks)
        self.level = level
        self._prev: dict[str, Any] | None = None
        self._since_key = 0
        self._chain = b""
        self._docs: list[bytes] = []
        self._times: list[float] = []
        self._key = False
        self._group: list[tuple[SnapshotBlock, bytes]] = []  # (block, its raw documents)
        self._group_chain = b""

    def add(self, t: float, snap: Snapshot) -> list[tuple[SnapshotBlock, bool]]:
        """Encode one snapshot; the blocks completed, each with ``merges``."""
        state = snapshot_state(snap)
        done: list[tuple[SnapshotBlock, bool]] = []
        keyframe = self._prev is None or self._since_key >= self.keyframe_every
        full = len(self._docs) >= self.block_snapshots or (
            bool(self._times) and t - self._times[0] >= BLOCK_SECONDS - 1e-6
        )
        if keyframe or full:
            done += self.flush(final=keyframe)
        if keyframe:
            doc: dict[str, Any] = {"fields": _ROW_FIELDS, "d": state}
            self._since_key = 0
            self._key = True
            self._chain = b""
        else:
            assert self._prev is not None
            doc = delta_doc(self._prev, state)
        first = self._prev is None
        self._docs.append(_dumps(doc))
        self._times.append(t)
        self._since_key += 1
        self._prev = state
        if first:  # the first snapshot is written at once: a recording shows from its start
            done += self.flush()
        return done

    def flush(self, *, final: bool = False) -> list[tuple[SnapshotBlock, bool]]:
        """Complete the block being filled; with ``final`` (or a full group) also the
        merged block of the group."""
        out: list[tuple[SnapshotBlock, bool]] = []
        if self._docs:
            raw = b"\n".join(self._docs)
            if not self._group:
                self._group_chain = self._chain
            block = SnapshotBlock(
                self._times[0], tuple(self._times), self._key, self._compress(raw, self._chain)
            )
            self._chain = (self._chain + raw + b"\n")[-_ZDICT_MAX:]
            self._group.append((block, raw))
            self._docs, self._times, self._key = [], [], False
            out.append((block, False))
        if self._group and (final or len(self._group) >= self.merge_blocks):
            group, self._group = self._group, []
            if len(group) == 1:  # the block is its own merge (the writer counts it once)
                out.append((group[0][0], True))
            else:
                raw = b"\n".join(r for _, r in group)
                times = tuple(t for b, _ in group for t in b.times)
                data = self._compress(raw, self._group_chain)
                out.append((SnapshotBlock(times[0], times, group[0][0].key, data), True))
        return out

    def _compress(self, raw: bytes, chain: bytes) -> bytes:
        comp = zlib.compressobj(self.level, zdict=chain) if chain else zlib.compressobj(self.level)
        return comp.compress(raw) + comp.flush()


class FrameDecoder:
    """Decodes frames in recorded order: a zdelta1 blob (bytes) or a zblock1
    ``BlockFrame``; ``decode`` returns the state dict (see ``state_to_snapshot``). A frame
    that does not follow the one before (a gap, damage) raises DecodeError until the next
    keyframe."""

    def __init__(self) -> None:
        self._legacy = SnapshotDecoder()
        self.state: dict[str, Any] | None = None
        self.names: dict[str, list[str]] = dict(_ROW_FIELDS)
        self._block: SnapshotBlock | None = None
        self._docs: list[bytes] = []
        self._pos = -1
        self._chain = b""

    def reset(self) -> None:
        self._legacy.reset()
        self.state, self._block, self._docs, self._pos, self._chain = None, None, [], -1, b""

    def decode(self, frame: bytes | BlockFrame) -> dict[str, Any]:
        if isinstance(frame, bytes | bytearray | memoryview):
            self._block = None
            st = self._legacy.decode(bytes(frame))
            self.state, self.names = st, self._legacy.names
            return st
        try:
            self._enter(frame)
            doc = json.loads(self._docs[frame.pos])
            if "d" in doc:
                self.names = {k: list(v) for k, v in doc.get("fields", _ROW_FIELDS).items()}
                self.state = doc["d"]
            elif self.state is None:
                raise DecodeError("delta without a keyframe before it")
            else:
                self.state = apply_doc(self.state, doc, self.names)
        except DecodeError:
            self.reset()
            raise
        except (zlib.error, ValueError, KeyError, TypeError, IndexError) as e:
            self.reset()
            raise DecodeError(f"corrupt snapshot block: {e}") from None
        self._pos = frame.pos
        assert self.state is not None
        return self.state

    def _enter(self, frame: BlockFrame) -> None:
        """Make ``frame``'s block the current one (decompressing it at its first frame)."""
        block = frame.block
        if block is self._block:
            if frame.pos != self._pos + 1:
                raise DecodeError("snapshot chain broken")
            return
        if frame.pos != 0:
            raise DecodeError("snapshot chain broken")
        if block.key:
            self._chain = b""
            self.state = None
        elif self.state is None:
            raise DecodeError("delta without a keyframe before it")
        d = zlib.decompressobj(zdict=self._chain) if self._chain else zlib.decompressobj()
        raw = d.decompress(block.data) + d.flush()
        docs = raw.split(b"\n")
        if len(docs) != len(block.times):
            raise DecodeError("snapshot block holds fewer snapshots than its times")
        self._chain = (self._chain + raw + b"\n")[-_ZDICT_MAX:]
        self._block, self._docs, self._pos = block, docs, -1

    def snapshot(self, frame: bytes | BlockFrame, *, rows: bool = True) -> Snapshot:
        return state_to_snapshot(self.decode(frame), self.names, rows=rows)


def is_key_frame(frame: bytes | BlockFrame) -> bool:
    """True if decoding may start at ``frame`` (a zdelta1 keyframe, or the first
    snapshot of a block that starts with one)."""
    if isinstance(frame, BlockFrame):
        return frame.pos == 0 and frame.block.key
    return is_keyframe(frame)


def block_frames(blocks: list[SnapshotBlock]) -> list[tuple[float, BlockFrame]]:
    """Every snapshot of ``blocks`` as ``(t, frame)``, in order."""
    return [(t, BlockFrame(b, i)) for b in blocks for i, t in enumerate(b.times)]
