"""The new-job form (key ``n``): endpoint, its fields, live estimate and pre-flight, submit.

Validation comes from the estimator (``EstimateError.field`` names the field, its message
the allowed range) plus the text fields a request needs. Submit stays disabled while the
input is invalid or pre-flight refuses; the form then says why and what to reduce.
"""

from __future__ import annotations

import itertools
import math
import re
import time
from dataclasses import dataclass
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static

from .. import catalog
from ..control import EngineControl
from ..estimate import (
    MAX_QUESTIONS,
    MAX_SAMPLE_SIZE,
    MAX_VIDEO_SECONDS,
    Estimate,
    EstimateError,
    Verdict,
    estimate,
    with_buffer,
)
from ..jobs import PRIORITY_RANGE, JobSpec
from ..snapshot import Snapshot
from .text import clean, num


@dataclass(frozen=True)
class Field:
    """One input of the form: its body key, label, placeholder and whether it is a number."""

    key: str
    label: str
    placeholder: str
    kind: str = "text"  # text | int | number | questions | complexity
    required: bool = True
    default: str = ""


SAMPLE = Field(
    "sample_size",
    "Sample size",
    f"respondents, 1 to {MAX_SAMPLE_SIZE:,}",
    "int",
    default=str(catalog.FOCUS_GROUP_DEFAULT_SAMPLE),
)
QUESTIONS = Field(
    "questions",
    "Questions",
    f"a count (0 to {MAX_QUESTIONS}) or questions separated by ';'",
    "questions",
    default="5",
)
VIDEO = Field(
    "video_seconds",
    "Duration (s)",
    f"video length, 1 to {MAX_VIDEO_SECONDS:,} s",
    "number",
    default="90",
)
COMPLEXITY = Field(
    "complexity", "Complexity", "", "complexity", default=catalog.DEFAULT_MAVE_COMPLEXITY
)
MESSAGE = Field("message", "Message", "what to ask")
PROMPT = Field("prompt", "Prompt", "what to generate")
STORY = Field("story_id", "Story id", "the news story to analyse")
NAME = Field("name", "Name", "a name for it")

#: The fields each endpoint asks for (by catalog key); the rest of the body is empty.
FIELDS: dict[str, tuple[Field, ...]] = {
    "focus_groups": (SAMPLE, QUESTIONS),
    "video_analyses": (VIDEO,),
    "mave": (COMPLEXITY, MESSAGE),
    "responses": (MESSAGE,),
    "generations": (PROMPT,),
    "news_analyze": (STORY,),
    "personas_create": (NAME,),
    "brand_voices": (NAME,),
    "personas_list": (),
}
ALL_FIELDS: tuple[Field, ...] = tuple(dict.fromkeys(f for fs in FIELDS.values() for f in fs))
# Reads of one thing (a balance, a persona) are not work to submit from the form.
FORM_ENDPOINTS = [
    e for e in catalog.ENDPOINTS.values() if e.key not in ("billing_credits", "personas_get")
]

_ids = itertools.count(1)
#: Seconds between looks at the engine's balance while the form is open.
LIVE_EVERY = 1.0


def new_job_id() -> str:
    """A job id unique within this process: ``ui-<unix time>-<n>``."""
    return f"ui-{int(time.time())}-{next(_ids)}"


class FormError(Exception):
    """Invalid input in one field of the form."""

    def __init__(self, field: str | None, message: str):
        super().__init__(message)
        self.field = field


_WHOLE = re.compile(r"[+-]?(\d+|\d{1,3}(,\d{3})+)")
_DECIMAL = re.compile(r"[+-]?((\d+|\d{1,3}(,\d{3})+)(\.\d*)?|\.\d+)")
_NUMBERISH = re.compile(r"[+-]?[\d.,_]+([eE][+-]?\d+)?")
_BIG = re.compile(r"(?<![\w.,])-?\d{4,}(?![\w.]|,\d)")


def grouped(text: str) -> str:
    """``text`` with every whole number of 4+ digits written with thousands separators, so
    the estimator's and pre-flight's messages read like the rest of the form."""
    return _BIG.sub(lambda m: f"{int(m.group()):,}", text)


def plural(n: int, word: str) -> str:
    """``1 respondent``, ``2 respondents``, ``1,000 respondents``."""
    return f"{num(n)} {word}{'' if n == 1 else 's'}"


def whole_number(key: str, raw: str, what: str) -> int:
    """A whole number typed in a field: ``50`` or ``1,000``. ``2.5`` and ``2,5`` are errors,
    never quietly another number."""
    if not _WHOLE.fullmatch(raw):
        raise FormError(key, f"must be a whole number ({what}), got {raw!r}")
    return int(raw.replace(",", ""))


def parse_questions(raw: str) -> int | list[str]:
    """A count (``5``) or the questions themselves, separated by ';'.

    Anything that looks like a number must be a whole count from 0 to MAX_QUESTIONS (``-3``
    and ``2.5`` are errors). Text without ';' counts as one question only if it reads like
    one (has a space or a '?'): a lone word such as ``abc`` is more likely a typo."""
    if _NUMBERISH.fullmatch(raw):
        if not raw.isdigit() or int(raw) > MAX_QUESTIONS:
            raise FormError(
                "questions",
                f"a count of questions is a whole number from 0 to {MAX_QUESTIONS}, got {raw!r}",
            )
        return int(raw)
    if ";" not in raw and not re.search(r"\s|\?", raw):
        raise FormError(
            "questions",
            f"{raw!r} is neither a count nor a question: type a count "
            f"(0 to {MAX_QUESTIONS}) or the questions, separated by ';'",
        )
    return [q.strip() for q in raw.split(";") if q.strip()]


def video_seconds(raw: str) -> int | float:
    """Seconds of video, from 1 to MAX_VIDEO_SECONDS as the placeholder says."""
    if not _DECIMAL.fullmatch(raw):
        raise FormError(
            "video_seconds", f"must be a number of seconds, 1 to {MAX_VIDEO_SECONDS:,}, got {raw!r}"
        )
    v = float(raw.replace(",", ""))
    if not math.isfinite(v) or not 1 <= v <= MAX_VIDEO_SECONDS:
        raise FormError(
            "video_seconds", f"must be from 1 to {MAX_VIDEO_SECONDS:,} seconds, got {raw}"
        )
    return int(v) if v.is_integer() else v


def build_request(endpoint_key: str, values: dict[str, str]) -> tuple[str, str, dict[str, Any]]:
    """(method, path, body) from the raw field texts. Raises FormError naming the field."""
    ep = catalog.ENDPOINTS[endpoint_key]
    body: dict[str, Any] = {}
    path = ep.path
    for f in FIELDS.get(endpoint_key, ()):
        raw = values.get(f.key, "").strip()
        if not raw:
            if f.required:
                raise FormError(f.key, f"{f.label.lower()} is required")
            continue
        if f.kind == "int":
            body[f.key] = whole_number(f.key, raw, f.placeholder)
        elif f.kind == "number":
            body[f.key] = video_seconds(raw)
        elif f.kind == "questions":
            body[f.key] = parse_questions(raw)
        elif f.key == "story_id":
            if "/" in raw or "?" in raw:
                raise FormError(f.key, "a story id cannot contain '/' or '?'")
            path = ep.path.replace("{id}", raw)
        else:
            body[f.key] = raw
    return ep.method, path, body


def basis(est: Estimate, body: dict[str, Any]) -> str:
    """What the estimate is based on, in words (``1 respondent, 5 questions``)."""
    if est.endpoint.key == "focus_groups":
        q = body.get("questions", 0)
        n_q = q if isinstance(q, int) else len(q)
        sample = body.get("sample_size", catalog.FOCUS_GROUP_DEFAULT_SAMPLE)
        return f"{plural(sample, 'respondent')}, {plural(n_q, 'question')}"
    if est.endpoint.key == "video_analyses" and body.get("video_seconds") is not None:
        return f"{body['video_seconds']:,g} s of video"
    return grouped(est.basis)


def price(
    endpoint_key: str, values: dict[str, str]
) -> tuple[JobSpec | None, Estimate | None, FormError | None]:
    """Build and price the request; on a problem, the error names the field."""
    lo, hi = PRIORITY_RANGE
    try:
        method, path, body = build_request(endpoint_key, values)
        est = estimate(method, path, body)
        priority = whole_number(
            "priority", values.get("priority", "0").strip() or "0", f"{lo} to {hi}"
        )
    except FormError as e:
        return None, None, e
    except EstimateError as e:
        return None, None, FormError(e.field, grouped(str(e)))
    if not lo <= priority <= hi:
        return None, est, FormError("priority", f"must be from {lo} to {hi}")
    return JobSpec("", method, path, body, priority), est, None


def thresholds_crossed(snap: Snapshot, high: int) -> list[float]:
    """Alert thresholds the month's usage would cross if the job cost ``high``."""
    if not snap.allocation or snap.month_used is None:
        return []
    # The plan allocation is spent first; purchased credits do not count towards it.
    plan_part = high if snap.plan_remaining is None else min(high, snap.plan_remaining)
    before = snap.month_used / snap.allocation
    after = (snap.month_used + plan_part) / snap.allocation
    return [t for t in catalog.ALERT_THRESHOLDS if before < t <= after]


class JobForm(ModalScreen[str | None]):
    """Price and submit one job. Dismisses with the new job's id, or None on escape."""

    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="form.cancel"),
        Binding("ctrl+s", "submit", "Submit", id="form.submit", priority=True),
    ]

    def __init__(self, engine: EngineControl, snapshot: Snapshot):
        super().__init__()
        self.engine = engine
        self.snap = snapshot
        self.spec: JobSpec | None = None
        self.estimate: Estimate | None = None
        self.verdict: Verdict | None = None
        self.error: FormError | None = None
        self._shown_money: tuple[Any, ...] = ()

    def compose(self) -> ComposeResult:
        with Vertical(id="form"):
            yield Label("New job", id="form-title")
            with VerticalScroll(id="form-fields"):
                with Horizontal(classes="field-line"):
                    yield Label("Endpoint", classes="field-label")
                    yield Select(
                        [(f"{e.label}  ({e.method} {e.path})", e.key) for e in FORM_ENDPOINTS],
                        value="focus_groups",
                        allow_blank=False,
                        id="endpoint",
                        compact=True,
                    )
                for f in ALL_FIELDS:
                    with Vertical(id=f"row-{f.key}", classes="field-row"):
                        with Horizontal(classes="field-line"):
                            yield Label(f.label, classes="field-label")
                            if f.kind == "complexity":
                                yield Select(
                                    [(k, k) for k in catalog.MAVE_COMPLEXITY],
                                    value=f.default,
                                    allow_blank=False,
                                    id=f.key,
                                    compact=True,
                                )
                            else:
                                # Plain text, validated here: an "integer" Input drops the
                                # '.' of a typed 2.5 and submits 25.
                                yield Input(
                                    value=f.default,
                                    placeholder=f.placeholder,
                                    id=f.key,
                                    compact=True,
                                )
                        yield Static("", id=f"err-{f.key}", classes="field-error", markup=False)
                with Vertical(id="row-priority", classes="field-row"):
                    with Horizontal(classes="field-line"):
                        yield Label("Priority", classes="field-label")
                        yield Input(
                            value="0",
                            id="priority",
                            compact=True,
                            placeholder=f"{PRIORITY_RANGE[0]} to {PRIORITY_RANGE[1]},"
                            " higher runs first",
                        )
                    yield Static("", id="err-priority", classes="field-error", markup=False)
            yield Static("", id="form-estimate", markup=False)
            yield Static("", id="form-verdict", markup=False)
            with Horizontal(id="form-buttons"):
                yield Button("Submit (ctrl+s)", id="submit", variant="primary", compact=True)
                yield Button("Cancel (esc)", id="cancel", compact=True)

    def on_mount(self) -> None:
        if self.app.is_headless:
            for box in self.query(Input):
                box.cursor_blink = False
        self._show_fields()
        self.refresh_estimate()
        self.query_one("#endpoint", Select).focus()
        # The balance, reservations and month move while the form is open: re-read them so
        # the balance line and the pre-flight verdict are always the same, current, numbers.
        self.set_interval(LIVE_EVERY, self.refresh_live)

    def refresh_live(self) -> None:
        """Re-price if the engine's money numbers moved since the last look."""
        if self._money(self.engine.snapshot()) != self._shown_money:
            self.refresh_estimate()

    @staticmethod
    def _money(snap: Snapshot) -> tuple[Any, ...]:
        return (snap.balance, snap.reserved, snap.month_used, snap.allocation, snap.plan_remaining)

    # --- reading the form ----------------------------------------------------------------

    @property
    def endpoint_key(self) -> str:
        value = self.query_one("#endpoint", Select).value
        return value if isinstance(value, str) else "focus_groups"

    def values(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for f in ALL_FIELDS:
            w = self.query_one(f"#{f.key}")
            value = w.value if isinstance(w, (Input, Select)) else ""
            out[f.key] = value if isinstance(value, str) else ""
        out["priority"] = self.query_one("#priority", Input).value
        return out

    def _show_fields(self) -> None:
        wanted = {f.key for f in FIELDS.get(self.endpoint_key, ())}
        for f in ALL_FIELDS:
            self.query_one(f"#row-{f.key}").display = f.key in wanted

    @on(Select.Changed, "#endpoint")
    def _endpoint_changed(self) -> None:
        self._show_fields()
        self.refresh_estimate()

    @on(Input.Changed)
    @on(Select.Changed, "#complexity")
    def _field_changed(self) -> None:
        self.refresh_estimate()

    # --- live estimate ---------------------------------------------------------------------

    def refresh_estimate(self) -> None:
        """Re-price from the current fields and update errors, estimate, verdict and Submit."""
        spec, est, err = price(self.endpoint_key, self.values())
        self.spec, self.estimate, self.error = spec, est, err
        self.snap = self.engine.snapshot()
        self._shown_money = self._money(self.snap)
        for f in (*ALL_FIELDS, Field("priority", "", "")):
            box = self.query_one(f"#err-{f.key}", Static)
            msg = err is not None and err.field == f.key
            box.update(Content(clean(f"✗ {grouped(str(err))}")) if msg else "")
            box.display = bool(msg)
            self.query_one(f"#{f.key}").set_class(bool(msg), "-invalid-field")
        est_box = self.query_one("#form-estimate", Static)
        verdict_box = self.query_one("#form-verdict", Static)
        self.verdict = None
        if err is not None and (est is None or err.field != "priority"):
            shown = (
                f"✗ {grouped(str(err))}"
                if err.field not in {f.key for f in ALL_FIELDS}
                else "fix the field marked ✗ to see the estimate"
            )
            est_box.update(Content(clean(shown)))
            verdict_box.update("")
            verdict_box.set_class(False, "-refused")
        elif est is not None:
            self.verdict = self.engine.preflight(est)
            body = spec.body if spec is not None else {}
            est_box.update(self._estimate_text(est, body, self.verdict))
            verdict_box.update(
                Content.assemble(
                    ("✓ pre-flight: " if self.verdict.ok else "✗ pre-flight refuses: ", "bold"),
                    clean(grouped(self.verdict.message)),
                )
            )
            verdict_box.set_class(not self.verdict.ok, "-refused")
        self.query_one("#submit", Button).disabled = not self.can_submit

    def _estimate_text(self, est: Estimate, body: dict[str, Any], verdict: Verdict) -> Content:
        snap = self.snap
        rng = num(est.high) if est.low == est.high else f"{num(est.low)}–{num(est.high)}"
        lines = [
            Content.assemble(
                ("Estimate ", "bold"),
                (f"{rng} credits", "$accent bold"),
                f"  ({clean(basis(est, body))})",
            )
        ]
        if snap.balance is not None:
            # The verdict's own numbers (read at the same instant as the snapshot), so this
            # line and the pre-flight line below can never disagree. Worst case: the
            # estimate plus the 20% buffer that pre-flight insists on.
            after = verdict.available - with_buffer(est.high)
            lines.append(
                Content(
                    f"Balance {num(verdict.remaining)}"
                    + (f" − reserved {num(verdict.reserved)}" if verdict.reserved else "")
                    + f" → after this job {num(after)} at worst (estimate + 20% buffer)"
                )
            )
        crossed = thresholds_crossed(snap, est.high)
        if crossed:
            lines.append(
                Content.styled(
                    "Would cross the "
                    + ", ".join(f"{t:.0%}" for t in crossed)
                    + " monthly alert"
                    + ("s" if len(crossed) > 1 else ""),
                    "$warning bold",
                )
            )
        elif snap.allocation and snap.month_used is not None:
            lines.append(
                Content(
                    f"Month: {snap.month_used / snap.allocation:.0%} used,"
                    " crosses no alert threshold"
                )
            )
        return Content("\n").join(lines)

    @property
    def can_submit(self) -> bool:
        return (
            self.error is None
            and self.spec is not None
            and self.verdict is not None
            and self.verdict.ok
        )

    # --- actions ----------------------------------------------------------------------------

    @on(Button.Pressed, "#submit")
    async def action_submit(self) -> None:
        self.refresh_estimate()
        if not self.can_submit or self.spec is None:
            self.app.bell()
            return
        spec = JobSpec(
            new_job_id(), self.spec.method, self.spec.path, self.spec.body, self.spec.priority
        )
        try:
            job_id = await self.engine.submit(spec)
        except ValueError as e:
            self.query_one("#form-verdict", Static).update(Content(f"✗ {clean(e)}"))
            return
        self.dismiss(job_id)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
