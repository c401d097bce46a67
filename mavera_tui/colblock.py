"""Column blocks: many table rows as one zlib-compressed blob (the store's packed history).

A block keeps each column as one JSON list, integer columns named in ``deltas`` as the
differences from the previous non-null value (times and ids that grow by little compress
to a byte or two), text columns named in ``split`` as two lists, the text before its
trailing number and the number as a difference (``job-1041`` after ``job-1040``: ``1``),
then the whole document deflated at level 9. ``unpack`` gives back the
exact rows, in order. Used for the ledger and finished jobs (store.py) at about 30 bytes a
row where an SQLite row with its index took 130-175.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["BlockError", "pack", "unpack"]


class BlockError(ValueError):
    """A block that cannot be read (corrupt, or written by a newer version)."""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def split_number(s: str) -> tuple[str, int] | None:
    """``s`` as (text, trailing number) when the number reads back the same (no sign, no
    leading zero); None when it has none."""
    i = len(s)
    while i > 0 and s[i - 1].isdigit() and s[i - 1].isascii():
        i -= 1
    digits = s[i:]
    if not digits or (len(digits) > 1 and digits[0] == "0") or len(digits) > 15:
        return None
    return s[:i], int(digits)


def _delta(col: list[Any]) -> list[Any]:
    prev = 0
    out: list[Any] = []
    for v in col:
        if v is None:
            out.append(None)
        else:
            out.append(v - prev)
            prev = v
    return out


def _undelta(col: list[Any]) -> list[Any]:
    prev = 0
    out: list[Any] = []
    for v in col:
        if v is None:
            out.append(None)
        else:
            prev += v
            out.append(prev)
    return out


def pack(
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    deltas: Iterable[str] = (),
    split: Iterable[str] = (),
) -> bytes:
    """``rows`` (tuples in ``columns`` order) as one block."""
    rows = list(rows)
    want = set(deltas)
    cols: list[list[Any]] = [list(c) for c in zip(*rows, strict=True)] if rows else []
    splits: dict[str, list[Any]] = {}
    for i, name in enumerate(columns):
        if not cols or name not in set(split) or not all(isinstance(v, str) for v in cols[i]):
            continue
        parts = [split_number(v) for v in cols[i]]
        cols[i] = [v if p is None else p[0] for v, p in zip(cols[i], parts, strict=True)]
        splits[str(i)] = _delta([None if p is None else p[1] for p in parts])
    delta: list[int] = []
    for i, name in enumerate(columns):
        if not cols or name not in want or not all(v is None or _is_int(v) for v in cols[i]):
            continue
        cols[i] = _delta(cols[i])
        delta.append(i)
    doc = {"v": 1, "cols": list(columns), "n": len(rows), "delta": delta, "data": cols}
    if splits:
        doc["split"] = splits
    raw = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
    return zlib.compress(raw, 9)


def unpack(blob: bytes) -> tuple[list[str], list[tuple[Any, ...]]]:
    """The column names and rows of a block; BlockError if it cannot be read."""
    try:
        doc = json.loads(zlib.decompress(blob))
        if doc.get("v") != 1:
            raise BlockError(f"column block version {doc.get('v')!r} is not known")
        cols = [list(c) for c in doc["data"]]
        for i in doc["delta"]:
            cols[i] = _undelta(cols[i])
        for i, nums in doc.get("split", {}).items():
            k = int(i)
            cols[k] = [
                v if n is None else f"{v}{n}" for v, n in zip(cols[k], _undelta(nums), strict=True)
            ]
        names = [str(c) for c in doc["cols"]]
        rows = list(zip(*cols, strict=True)) if cols else []
    except BlockError:
        raise
    except (zlib.error, ValueError, KeyError, TypeError, IndexError) as e:
        raise BlockError(f"corrupt column block: {e}") from None
    if len(rows) != doc.get("n", len(rows)):
        raise BlockError("corrupt column block: row count differs")
    return names, rows
