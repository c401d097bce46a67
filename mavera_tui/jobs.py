"""Job specifications and the JSONL job-file parser, with errors that name the line and field.

A job file has one JSON object per line: ``{"id", "method", "path", "body"}`` with ``path``
relative to the base URL (e.g. ``/focus-groups``) and an optional integer ``priority``
(higher runs first). Blank lines and lines starting with ``#`` are skipped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import catalog, fastjson
from .estimate import Estimate, EstimateError, estimate

MAX_LINE_BYTES = 1_000_000
MAX_ID_LEN = 200
PRIORITY_RANGE = (-1000, 1000)


@dataclass(frozen=True)
class JobSpec:
    """What to send: one request, with an id unique in its batch and a priority."""

    id: str
    method: str
    path: str
    body: dict[str, Any] = field(default_factory=dict)
    priority: int = 0

    @property
    def endpoint(self) -> catalog.Endpoint:
        ep = catalog.find_endpoint(self.method, self.path)
        assert ep is not None, "JobSpec built for an unknown endpoint"
        return ep

    def estimate(self) -> Estimate:
        return estimate(self.method, self.path, self.body)


@dataclass(frozen=True)
class LineError:
    """One rejected line of a job file."""

    line: int
    field: str | None
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" + (f", field '{self.field}'" if self.field else "")
        return f"{where}: {self.message}"


class JobFileError(Exception):
    """The job file as a whole cannot be used (unreadable, not text)."""


def parse_job(obj: Any, line: int = 0) -> JobSpec:
    """Validate one decoded job object. Raises ``_Bad``, whose ``error`` is the LineError
    naming the line and the field."""
    if not isinstance(obj, dict):
        raise _Bad(
            line,
            None,
            "each line must be a JSON object like "
            '{"id": "j1", "method": "POST", "path": "/responses", "body": {}}',
        )
    jid = obj.get("id")
    if isinstance(jid, int) and not isinstance(jid, bool):
        jid = str(jid)
    if not isinstance(jid, str) or not jid.strip():
        raise _Bad(line, "id", "missing or empty; give each job a unique string id")
    if len(jid) > MAX_ID_LEN:
        raise _Bad(line, "id", f"longer than {MAX_ID_LEN} characters")
    method = obj.get("method", "POST")
    if not isinstance(method, str) or method.upper() not in ("GET", "POST"):
        raise _Bad(line, "method", f"must be GET or POST, got {method!r}")
    path = obj.get("path")
    if not isinstance(path, str) or not path.startswith("/"):
        raise _Bad(line, "path", "must be a path relative to the base URL, e.g. /focus-groups")
    body = obj.get("body", {})
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise _Bad(line, "body", "must be a JSON object")
    priority = obj.get("priority", 0)
    if (
        isinstance(priority, bool)
        or not isinstance(priority, int)
        or not (PRIORITY_RANGE[0] <= priority <= PRIORITY_RANGE[1])
    ):
        raise _Bad(
            line,
            "priority",
            f"must be a whole number from {PRIORITY_RANGE[0]} to {PRIORITY_RANGE[1]}",
        )
    spec = JobSpec(jid, method.upper(), "/" + path.strip().lstrip("/"), body, priority)
    try:
        spec.estimate()
    except EstimateError as e:
        fld = e.field if e.field in ("path", "body", None) else f"body.{e.field}"
        raise _Bad(line, fld, str(e)) from None
    return spec


class _Bad(Exception):
    def __init__(self, line: int, fld: str | None, message: str):
        super().__init__(message)
        self.error = LineError(line, fld, message)


def parse_lines(lines: list[str] | Any) -> tuple[list[JobSpec], list[LineError]]:
    """Parse JSONL text lines. Returns the valid jobs and one error per rejected line.

    Duplicate ids: the first occurrence wins, later ones are errors.
    """
    jobs: list[JobSpec] = []
    errors: list[LineError] = []
    seen: set[str] = set()
    for n, raw in enumerate(lines, start=1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        if len(text) > MAX_LINE_BYTES:
            errors.append(LineError(n, None, f"line longer than {MAX_LINE_BYTES} bytes"))
            continue
        try:
            obj = fastjson.loads(text)
        except json.JSONDecodeError as e:
            errors.append(LineError(n, None, f"invalid JSON: {e.msg} at column {e.colno}"))
            continue
        except RecursionError:
            errors.append(LineError(n, None, "invalid JSON: nested too deeply"))
            continue
        try:
            spec = parse_job(obj, n)
        except _Bad as b:
            errors.append(b.error)
            continue
        if spec.id in seen:
            errors.append(LineError(n, "id", f"duplicate id {spec.id!r} (first use wins)"))
            continue
        seen.add(spec.id)
        jobs.append(spec)
    return jobs, errors


def read_job_file(path: str | Path) -> tuple[list[JobSpec], list[LineError]]:
    """Read and parse a JSONL job file. Raises JobFileError if it cannot be read as text."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise JobFileError(f"job file not found: {p}") from None
    except IsADirectoryError:
        raise JobFileError(f"job file is a directory: {p}") from None
    except PermissionError:
        raise JobFileError(f"job file is not readable (permission denied): {p}") from None
    except OSError as e:
        raise JobFileError(f"cannot read job file {p}: {e.strerror}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise JobFileError(f"job file {p} is not UTF-8 text (byte {e.start})") from None
    return parse_lines(text.splitlines())
