"""JSON on the hot path: orjson where it reads and writes exactly what ``json`` would,
the standard library everywhere else (and where orjson is not installed).

json.dumps and json.loads were 5% of the client's CPU in a 20,000-request flood; reading
a 20,000-line job file is one ``loads`` a line. orjson differs from json in a few corners,
each sent back to json here so that every body means, and every file reads, as before:
it writes a NaN or an infinity as null, refuses keys that are not strings and integers
past 64 bits, and reads such integers as floats; it refuses NaN, Infinity, a BOM and lone
surrogates, which json takes.
"""

from __future__ import annotations

import json
from typing import Any

try:
    import orjson
except ImportError:  # pragma: no cover - a dependency; a platform without a wheel
    orjson = None  # type: ignore[assignment]

#: 19 digits in a row: an integer orjson may read as a float (past 64 bits), json exactly.
#: Found by mapping every digit to "0" and everything else to " " (a regex took as long as
#: orjson's whole parse).
_DIGITS_AS_ZERO = bytes(0x30 if 0x30 <= i <= 0x39 else 0x20 for i in range(256))
_LONG_DIGITS = b"0" * 19


def dumps_bytes(value: Any) -> bytes:
    """``json.dumps(value).encode()`` in meaning (orjson's compact form where it agrees)."""
    if orjson is not None:
        try:
            out = orjson.dumps(value)
        except TypeError:
            pass
        else:
            if b"null" not in out:  # a null may have been a NaN: let json.dumps say
                return out
    return json.dumps(value).encode()


def loads(text: bytes | str) -> Any:
    """``json.loads(text)``: the same value, and the same exception where it raises."""
    if orjson is not None:
        try:
            raw = text.encode() if isinstance(text, str) else text
        except UnicodeEncodeError:  # a lone surrogate: json's to read (or refuse)
            return json.loads(text)
        if _LONG_DIGITS not in raw.translate(_DIGITS_AS_ZERO):
            try:
                return orjson.loads(raw)
            except orjson.JSONDecodeError:
                pass
    return json.loads(text)
