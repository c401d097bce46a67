"""The settings: one model of everything an operator can set, its defaults, and where each
effective value came from.

Sections (TOML tables): ``engine``, ``budget`` (with ``budget.auto_recharge``), ``ui``,
``run``, ``record``, ``sim`` (the embedded simulator), ``shared`` (one key, many processes).
Every field below carries its own description (``doc``), which ``--help`` and
``mavera-tui config`` print.

Read order, later wins:

1. the defaults written here (the only place they are written);
2. the config file: ``--config PATH``, else ``$MAVERA_TUI_CONFIG``, else
   ``$XDG_CONFIG_HOME/mavera-tui/config.toml`` (``~/.config/mavera-tui/config.toml``); a
   missing default file is fine, a missing named one is an error;
3. the environment: ``MAVERA_TUI_<SECTION>__<NAME>``, e.g. ``MAVERA_TUI_ENGINE__TIER=basic``
   or ``MAVERA_TUI_BUDGET__AUTO_RECHARGE__THRESHOLD=100`` (an empty value counts as unset);
   the base URL is ``MAVERA_BASE_URL``;
4. the command-line flags (a flag not given changes nothing).

The API key is not a setting: only the engine reads it, from ``MAVERA_API_KEY``, and it is
never written to, or read from, a config file.

This module imports nothing heavy (the monitor's first frame waits for it): ``tomllib`` is
imported only when there is a file to read.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from . import catalog
from .errors import ConfigError

ENV_PREFIX = "MAVERA_TUI_"
CONFIG_ENV = "MAVERA_TUI_CONFIG"
APP_DIR = "mavera-tui"
CONFIG_NAME = "config.toml"

#: The monitor's key bindings an operator may rebind (``[ui.keys]``), by binding id, with
#: their default keys. tests/test_config.py checks this against the app's BINDINGS.
KEY_BINDINGS: dict[str, str] = {
    "quit": "q",
    "next_view": "v",
    "help": "question_mark",
    "new_job": "n",
    "pause": "p",
    "cancel_job": "c",
    "filter_jobs": "slash",
    "ack_alerts": "k",
    "freeze": "f",
    "cancel_matching": "C",
    "retry_matching": "R",
    "job_history": "H",
    "set_priority": "P",
    "fleet_view": "F",
}
HTTP_BACKENDS = ("aiohttp", "httpx")


def setting(
    default: Any,
    doc: str,
    *,
    kind: str | None = None,
    check: str | None = None,
    choices: tuple[str, ...] | None = None,
    flag: str | None = None,
    metavar: str | None = None,
    env: str | None = None,
) -> Any:
    """A field of the model: its default, what it means, what values it takes, and its
    command-line flag (if any). ``kind`` is int, float, str, bool, shares (a list of
    fractions of 1) or keys (a table of strings); it defaults to the default's type.
    ``check``: positive, nonneg or atleast1."""
    if kind is None:
        kind = {bool: "bool", int: "int", float: "float", str: "str"}[type(default)]
    meta = {
        "doc": doc,
        "kind": kind,
        "check": check,
        "choices": choices,
        "flag": flag,
        "metavar": metavar,
        "env": env,
    }
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=meta)
    return field(default=default, metadata=meta)


def section(cls: type, doc: str) -> Any:
    """A nested table of the model."""
    return field(default_factory=cls, metadata={"doc": doc, "section": True})


# ======================================================================= the model =====


@dataclass
class EngineSettings:
    """Where requests go and how they are paced."""

    base_url: str | None = setting(
        None,
        "API base URL (default: the vendor's; with no MAVERA_API_KEY and no URL, the "
        "embedded simulator)",
        kind="str",
        flag="--base-url",
        metavar="URL",
        env=catalog.BASE_URL_ENV,
    )
    tier: str | None = setting(
        None,
        "your key's tier, if known (else learned from X-RateLimit-Limit)",
        kind="str",
        choices=tuple(catalog.TIERS),
        flag="--tier",
    )
    window_seconds: float = setting(
        catalog.WINDOW_SECONDS,
        "length of the rate-limit window in seconds (tests and local simulators use shorter ones)",
        check="positive",
        flag="--window-seconds",
        metavar="S",
    )
    request_timeout: float = setting(
        300.0, "per-request timeout in seconds", check="positive", flag="--timeout", metavar="S"
    )
    max_retry_after: float = setting(
        catalog.MAX_BACKOFF_SECONDS,
        "longest Retry-After to wait out, in seconds; longer is reported as a failure",
        check="positive",
        flag="--max-retry-after",
        metavar="S",
    )
    max_in_flight: int = setting(
        256,
        "most requests in flight at once on endpoints without a documented concurrency cap",
        check="atleast1",
        flag="--max-in-flight",
        metavar="N",
    )
    http_backend: str = setting(
        "aiohttp",
        "HTTP client library for real sockets",
        choices=HTTP_BACKENDS,
        flag="--http-backend",
    )
    credit_poll: float = setting(
        30.0,
        "balance poll interval in seconds while jobs wait for credits",
        check="positive",
        flag="--credit-poll",
        metavar="S",
    )
    balance_read: str = setting(
        "auto",
        "when run reads the balance for pre-flight: auto: before the first job, unless the "
        "batch fills its windows exactly and the read would cost it a whole window more "
        "(then once every job is sent; with --shared: when it costs the fleet's queued work "
        "nothing); start: always before the first job; end: once every job is sent. Blind, "
        "the API's 402 stops an overdraft, but a batch short of credits meets 402s instead "
        "of pre-flight refusals. With --shared the default is start, and one process reads "
        "it for the fleet and the others adopt it",
        choices=("start", "auto", "end"),
        flag="--balance-read",
    )
    resend_unknown_up_to: int = setting(
        0,
        "after a crash, re-send jobs that were in flight if they cost at most this many "
        "credits (0: never re-send anything that costs credits)",
        check="nonneg",
        flag="--resend-unknown-up-to",
        metavar="CREDITS",
    )


@dataclass
class AutoRechargeSettings:
    """Your account's auto-recharge, as set in the dashboard (the API does not expose it);
    used for the time-left estimate. The flag --auto-recharge
    THRESHOLD:CREDITS[:PACK[:EUR]] sets all of it at once."""

    enabled: bool = setting(False, "whether auto-recharge is on")
    threshold: int = setting(
        catalog.DEFAULT_RECHARGE_THRESHOLD,
        "balance (credits) at which a recharge is bought",
        check="nonneg",
    )
    credits: int = setting(
        catalog.DEFAULT_RECHARGE_CREDITS, "credits one recharge adds", check="atleast1"
    )
    pack: str = setting(
        catalog.DEFAULT_RECHARGE_PACK, "the credit pack bought", choices=tuple(catalog.CREDIT_PACKS)
    )
    monthly_limit_eur: float = setting(
        float(catalog.DEFAULT_RECHARGE_MONTHLY_LIMIT_EUR),
        "most euros auto-recharge may spend a month",
        kind="float",
        check="nonneg",
    )


@dataclass
class BudgetSettings:
    """Client-side budgets and alert thresholds."""

    workspace_cap: int | None = setting(
        None,
        "workspace hard cap in credits: refuse jobs that could spend more",
        kind="int",
        check="nonneg",
        flag="--budget-cap",
        metavar="CREDITS",
    )
    workspace_alert: int | None = setting(
        None,
        "workspace alert in credits: warn when spending reaches this",
        kind="int",
        check="nonneg",
        flag="--budget-alert",
        metavar="CREDITS",
    )
    # The docs' example alerts above 10 credits; that fires on every Mave query, so the
    # default here is a focus-group-sized request.
    alert_single: int = setting(
        300,
        "alert when one request uses more credits than this",
        check="nonneg",
        flag="--alert-single",
        metavar="CREDITS",
    )
    allocation_alerts: tuple[float, ...] = setting(
        catalog.ALERT_THRESHOLDS,
        "shares of the monthly allocation used at which to alert (the last ones as errors)",
        kind="shares",
    )
    auto_recharge: AutoRechargeSettings = section(
        AutoRechargeSettings, "your account's auto-recharge (for the time-left estimate)"
    )


@dataclass
class UiSettings:
    """The monitor and the replay."""

    refresh: float = setting(
        0.5,
        "seconds between redraws of the panes",
        check="positive",
        flag="--refresh",
        metavar="SECONDS",
    )
    keys: dict[str, str] = setting(
        {},
        "key bindings: binding id = key (Textual key names, comma-separated for more "
        'than one), e.g. quit = "ctrl+q"; ids: ' + ", ".join(KEY_BINDINGS),
        kind="keys",
    )


@dataclass
class RunSettings:
    """``mavera-tui run``."""

    credit_wait: float = setting(
        120.0,
        "stop when every remaining job has waited this many seconds for credits "
        "(they stay queued in --db)",
        check="nonneg",
        flag="--credit-wait",
        metavar="S",
    )


@dataclass
class RecordSettings:
    """``mavera-tui record`` (its flags also take 90s / 10m / 2h / 1d)."""

    interval: float = setting(1.0, "seconds between snapshots", check="positive", flag="--interval")
    duration: float | None = setting(
        None,
        "send no new requests after this many seconds (not set: until stopped)",
        kind="float",
        check="positive",
        flag="--duration",
    )
    # Requests in flight are already paid for: their outcomes (and charges) belong in the
    # ledger. Long jobs take minutes, so the default waits up to two.
    grace: float = setting(
        120.0,
        "seconds to let requests in flight finish at the end of --duration or on SIGTERM/SIGINT",
        check="nonneg",
        flag="--grace",
    )


@dataclass
class SimSettings:
    """The embedded simulator, used when no MAVERA_API_KEY and no base URL are set."""

    tier: str = setting(
        "professional",
        "embedded simulator: its key's tier",
        choices=tuple(catalog.TIERS),
        flag="--sim-tier",
    )
    plan: str = setting(
        "professional", "embedded simulator: its account's plan", choices=tuple(catalog.PLANS)
    )
    purchased: int = setting(
        250_000,
        "embedded simulator: purchased credits at start (a demo that can run for hours)",
        check="nonneg",
    )
    time_scale: float = setting(
        1.0,
        "embedded simulator: multiply its latencies (0: instant)",
        check="nonneg",
        flag="--sim-time-scale",
        metavar="X",
    )
    seed: int = setting(1, "embedded simulator: seed for charges, latencies, faults")
    auto_recharge: bool = setting(True, "embedded simulator: whether its account auto-recharges")


SHARED_FALLBACKS = ("wait", "local")


@dataclass
class SharedSettings:
    """Sharing one key's limits with other processes and hosts through Redis (``--shared``)."""

    redis_url: str | None = setting(
        None,
        "share the key's window, slots and credits with every process on it through this "
        "Redis, e.g. redis://127.0.0.1:6379/0 (not set: this process alone)",
        kind="str",
        flag="--shared",
        metavar="REDIS_URL",
        env="MAVERA_TUI_REDIS_URL",
    )
    fallback: str = setting(
        "wait",
        "when Redis cannot be reached: wait for it (send nothing), or run on local gates "
        "with this process's share of the limit (limit / live processes)",
        choices=SHARED_FALLBACKS,
        flag="--shared-fallback",
    )
    host_id: str | None = setting(
        None,
        "this host's name in the fleet (default: the hostname)",
        kind="str",
        flag="--host-id",
        metavar="NAME",
    )
    lease_ttl: float = setting(
        30.0,
        "seconds a slot lease or credit reservation lives without a heartbeat (a killed "
        "process's slots come back after this)",
        check="positive",
        flag="--lease-ttl",
        metavar="S",
    )
    margin: float = setting(
        0.15,
        "seconds each admission is kept in the shared window past its length (admission "
        "comes a little before the server counts the request)",
        check="nonneg",
    )
    socket_timeout: float = setting(
        0.5, "seconds to wait for Redis before calling it unreachable", check="positive"
    )
    balance_fresh: float = setting(
        300.0,
        "seconds a balance read by another process of the fleet is adopted instead of "
        "reading it again (kept current by the fleet's settlements; never after a 402, nor "
        "once the fleet was idle for a lease time); 0: every process reads its own",
        check="nonneg",
    )
    archive: bool = setting(
        False,
        "copy the whole fleet's ledger (the key's Redis stream) into this process's --db "
        "too, not only its own attempts (record --shared always does)",
    )


@dataclass
class ProxySettings:
    """``mavera-tui proxy`` and the Python API (``Governor.request``): the door apps use."""

    listen: str = setting(
        "127.0.0.1:8787",
        "address:port the proxy listens on (apps use http://ADDRESS:PORT/api/v1); an "
        "address other than loopback requires caller tokens",
        flag="--listen",
        metavar="ADDR:PORT",
    )
    max_queue: int = setting(
        1000,
        "most requests waiting to be sent per key; past it a request is answered 429 with "
        "a Retry-After at once",
        check="atleast1",
        flag="--max-queue",
        metavar="N",
    )
    max_wait: float = setting(
        60.0,
        "longest a request waits to be sent, in seconds; past it it is answered 429 with a "
        "Retry-After (one already sent is always waited for)",
        check="positive",
        flag="--max-wait",
        metavar="S",
    )
    park_402: bool = setting(
        False,
        "on the API's 402, hold the request until credits return (at most max_wait) "
        "instead of passing the 402 back",
    )
    tokens: str | None = setting(
        None,
        "caller tokens, comma-separated: apps must send one (Authorization: Bearer with "
        "--key-from-env, else X-Mavera-Token); required when listening beyond loopback",
        kind="str",
        flag="--token",
        metavar="TOKEN[,TOKEN...]",
    )


@dataclass
class Config:
    """Every setting, by section. ``Config()`` is the defaults; ``load_config`` reads the
    file, the environment and the flags over them."""

    engine: EngineSettings = section(EngineSettings, "where requests go, how they are paced")
    budget: BudgetSettings = section(BudgetSettings, "budgets and alerts")
    ui: UiSettings = section(UiSettings, "the monitor and the replay")
    run: RunSettings = section(RunSettings, "mavera-tui run")
    record: RecordSettings = section(RecordSettings, "mavera-tui record")
    sim: SimSettings = section(SimSettings, "the embedded simulator")
    proxy: ProxySettings = section(ProxySettings, "mavera-tui proxy and Governor.request")
    shared: SharedSettings = section(SharedSettings, "one key shared by many processes (Redis)")


# ===================================================================== the fields =====


@dataclass(frozen=True)
class Spec:
    """One setting: its dotted name (``engine.tier``) and how its values are checked."""

    name: str
    doc: str
    kind: str
    default: Any
    check: str | None = None
    choices: tuple[str, ...] | None = None
    flag: str | None = None
    metavar: str | None = None
    env: str | None = None

    @property
    def dest(self) -> str | None:
        """The argparse attribute of the flag."""
        return self.flag[2:].replace("-", "_") if self.flag else None

    @property
    def env_name(self) -> str:
        return self.env or ENV_PREFIX + self.name.upper().replace(".", "__")

    def allowed(self) -> str:
        """What values it takes, in words."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        return {
            ("int", None): "a whole number",
            ("int", "nonneg"): "a whole number, 0 or more",
            ("int", "atleast1"): "a whole number, 1 or more",
            ("float", None): "a number",
            ("float", "positive"): "a number above 0",
            ("float", "nonneg"): "a number, 0 or more",
            ("bool", None): "true or false",
            ("str", None): "a string",
            ("shares", None): "a list of fractions above 0 and at most 1, e.g. [0.5, 0.9]",
            ("keys", None): 'a table of binding id = "key" (ids: ' + ", ".join(KEY_BINDINGS) + ")",
        }[(self.kind, self.check)]


def _walk(obj: Any, prefix: str = "") -> Iterator[tuple[str, Any, Any]]:
    for f in fields(obj):
        value = getattr(obj, f.name)
        if f.metadata.get("section"):
            yield from _walk(value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", obj, f


def _spec(name: str, f: Any, default: Any) -> Spec:
    m = f.metadata
    return Spec(
        name,
        m["doc"],
        m["kind"],
        default,
        m["check"],
        m["choices"],
        m["flag"],
        m["metavar"],
        m["env"],
    )


#: Every setting, in the model's order, by dotted name.
SPECS: dict[str, Spec] = {
    name: _spec(name, f, getattr(owner, f.name)) for name, owner, f in _walk(Config())
}
#: Settings whose values are never printed (``mavera-tui config`` says only that they are set).
SECRET_SETTINGS = frozenset({"proxy.tokens"})
#: The tables, in the model's order: engine, budget, budget.auto_recharge, ui, ...
SECTIONS: tuple[str, ...] = tuple(dict.fromkeys(n.rsplit(".", 1)[0] for n in SPECS))


class _Bad(ValueError):
    """A value a setting does not take; the message is what it takes."""


def coerce(spec: Spec, value: Any, *, text: bool = False) -> Any:
    """``value`` checked (and, from text, converted) for ``spec``; _Bad says what is
    allowed. ``text``: the value is a string from the environment or a flag."""
    kind = spec.kind
    if kind == "keys":
        return _coerce_keys(spec, value)
    if kind == "shares":
        return _coerce_shares(spec, value, text)
    if text:
        value = _scalar_from_text(spec, value)
    ok = {
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "str": isinstance(value, str),
    }[kind]
    if not ok:
        raise _Bad(spec.allowed())
    if kind == "float":
        value = float(value)
        if not math.isfinite(value):
            raise _Bad(spec.allowed())
    if spec.choices and value not in spec.choices:
        raise _Bad(spec.allowed())
    if (
        (spec.check == "positive" and value <= 0)
        or (spec.check == "nonneg" and value < 0)
        or (spec.check == "atleast1" and value < 1)
    ):
        raise _Bad(spec.allowed())
    return value


def _coerce_keys(spec: Spec, value: Any) -> dict[str, str]:
    """Key bindings: binding id -> a key name."""
    if not isinstance(value, dict):
        raise _Bad(spec.allowed())
    for k, v in value.items():
        if k not in KEY_BINDINGS:
            raise _Bad(f"unknown binding id {k!r}; ids: " + ", ".join(KEY_BINDINGS))
        if not isinstance(v, str) or not v.strip():
            raise _Bad(f'{k} takes a key name such as "ctrl+q", got {_shown(v)}')
    return {k: v.strip() for k, v in value.items()}


def _coerce_shares(spec: Spec, value: Any, text: bool) -> tuple[float, ...]:
    """Shares (alert thresholds): fractions in (0, 1], sorted; from text, comma-separated."""
    if text:
        value = [v for v in value.replace(" ", "").split(",") if v]
        try:
            value = [float(v) for v in value]
        except ValueError:
            raise _Bad(spec.allowed()) from None
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 1 for v in value
    ):
        raise _Bad(spec.allowed())
    return tuple(sorted(float(v) for v in value))


def _scalar_from_text(spec: Spec, value: str) -> Any:
    """A scalar setting's text (environment, flag) as its type; checked by ``coerce``."""
    kind = spec.kind
    value = value.strip()
    try:
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "bool":
            low = value.lower()
            if low not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return low in ("true", "1", "yes")
    except ValueError:
        raise _Bad(spec.allowed()) from None
    return value


def _shown(value: Any) -> str:
    """A bad value as the error line shows it: short, and no control characters."""
    text = repr(value)
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= 60 else text[:57] + "..."


# ==================================================================== the loading =====


@dataclass
class LoadedConfig:
    """The effective settings and where each came from."""

    config: Config
    #: dotted name -> "default" | "file PATH" | "env NAME" | "flag --NAME"
    sources: dict[str, str]
    #: the config file read (None: none was)
    file: Path | None = None
    #: the file looked for when none was read (the default place), for ``config``
    looked_for: Path | None = None

    def get(self, name: str) -> Any:
        """The value of a dotted setting."""
        return _get(self.config, name)


def _get(cfg: Config, name: str) -> Any:
    obj: Any = cfg
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def _set(cfg: Config, name: str, value: Any) -> None:
    *path, last = name.split(".")
    obj: Any = cfg
    for part in path:
        obj = getattr(obj, part)
    setattr(obj, last, value)


def default_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME/mavera-tui/config.toml``, default ``~/.config/...``."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME", "").strip()
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".config"
    return root / APP_DIR / CONFIG_NAME


def load_config(
    config_path: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    args: argparse.Namespace | None = None,
) -> LoadedConfig:
    """The effective settings: defaults < file < environment < flags (``args``).

    ConfigError (one line naming the file or variable, the key and what it takes) for a
    bad file, a bad environment value or an unreadable named file."""
    env = os.environ if environ is None else environ
    cfg = Config()
    sources = dict.fromkeys(SPECS, "default")
    explicit = config_path or env.get(CONFIG_ENV, "").strip() or None
    path = Path(explicit).expanduser() if explicit else default_path(env)
    loaded = LoadedConfig(cfg, sources)
    if explicit or path.is_file():
        _apply_file(
            cfg,
            sources,
            path,
            named_by=("--config" if config_path else CONFIG_ENV) if explicit else None,
        )
        loaded.file = path
    else:
        loaded.looked_for = path
    _apply_env(cfg, sources, env)
    if args is not None:
        apply_flags(cfg, sources, args)
    if cfg.shared.redis_url and sources["engine.balance_read"] == "default":
        # In a fleet no process knows the fleet's batch, so auto defers the read until the
        # room is not needed, which cost the 500-job mix split three ways 1.14-1.22 of the
        # bound against 1.04 read first (one read for the fleet, adopted by the others).
        cfg.engine.balance_read = "start"
        sources["engine.balance_read"] = "default (start with --shared)"
    return loaded


def _apply_file(cfg: Config, sources: dict[str, str], path: Path, named_by: str | None) -> None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} not found (named by {named_by}); create it or give another path"
        ) from None
    except OSError as e:
        raise ConfigError(f"cannot read the config file {path}: {e.strerror or e}") from None
    import tomllib

    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid TOML: the file is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    where = f"file {path}"
    for name, value in _flatten(doc, path):
        spec = SPECS[name]
        try:
            value = coerce(spec, value)
        except _Bad as e:
            if spec.kind == "keys":  # the message names the bad binding itself
                raise ConfigError(f"{path}: {name}: {e}") from None
            raise ConfigError(f"{path}: {name}: expected {e}, got {_shown(value)}") from None
        _set(cfg, name, value)
        sources[name] = where


def _flatten(doc: dict[str, Any], path: Path) -> Iterator[tuple[str, Any]]:
    """(dotted name, value) for every setting of a parsed file; unknown tables and keys
    are errors that list what is known."""

    def walk(table: dict[str, Any], prefix: str) -> Iterator[tuple[str, Any]]:
        for key, value in table.items():
            name = f"{prefix}{key}"
            if name in SPECS:
                yield name, value
            elif name in SECTIONS:
                if not isinstance(value, dict):
                    raise ConfigError(
                        f"{path}: {name} is a table: write [{name}] and its keys under it"
                    )
                yield from walk(value, name + ".")
            else:
                raise ConfigError(_unknown(path, name, prefix))

    yield from walk(doc, "")


def _unknown(path: Path, name: str, prefix: str) -> str:
    if name.rsplit(".", 1)[-1].lower() in ("api_key", "key", "mavera_api_key", "token"):
        return (
            f"{path}: {name}: the API key is not a setting; remove it from the file and "
            f"set {catalog.API_KEY_ENV} in the environment"
        )
    if not prefix:
        return f"{path}: unknown section [{name}]; sections: " + ", ".join(
            s for s in SECTIONS if "." not in s
        )
    sec = prefix[:-1]
    keys = [n[len(prefix) :] for n in SPECS if n.startswith(prefix) and "." not in n[len(prefix) :]]
    keys += [s[len(prefix) :] for s in SECTIONS if s.startswith(prefix)]
    import difflib  # only for this message: not on every start

    near = difflib.get_close_matches(name[len(prefix) :], keys, n=1)
    hint = f" (did you mean {near[0]}?)" if near else ""
    return f"{path}: unknown key {name}{hint}; [{sec}] takes: " + ", ".join(keys)


def _apply_env(cfg: Config, sources: dict[str, str], env: Mapping[str, str]) -> None:
    by_env = {s.env_name: s for s in SPECS.values() if s.kind != "keys"}
    keys_prefix = SPECS["ui.keys"].env_name + "__"
    for var in sorted(env):
        text = env[var]
        if var == CONFIG_ENV or not (var.startswith(ENV_PREFIX) or var in by_env):
            continue
        if not text.strip():
            continue  # an empty value counts as unset
        if var.startswith(keys_prefix):
            binding = var[len(keys_prefix) :].lower()
            try:
                keys = coerce(SPECS["ui.keys"], {binding: text})
            except _Bad as e:
                raise ConfigError(f"{var}: {e}") from None
            cfg.ui.keys = {**cfg.ui.keys, **keys}
            sources["ui.keys"] = f"env {var}"
            continue
        spec = by_env.get(var)
        if spec is None:
            known = ", ".join(sorted(by_env))
            raise ConfigError(
                f"unknown setting {var} in the environment; known: {known} (and {keys_prefix}<ID>)"
            )
        try:
            value = coerce(spec, text, text=True)
        except _Bad as e:
            raise ConfigError(f"{var}: expected {e}, got {_shown(text.strip())}") from None
        _set(cfg, spec.name, value)
        sources[spec.name] = f"env {var}"


def apply_flags(cfg: Config, sources: dict[str, str], args: argparse.Namespace) -> None:
    """Every flag given (not None) over the settings: the one mapping from flags to the
    model, for every command."""
    for spec in SPECS.values():
        value = getattr(args, spec.dest, None) if spec.dest else None
        if value is not None:
            _set(cfg, spec.name, value)
            sources[spec.name] = f"flag {spec.flag}"
    recharge = getattr(args, "auto_recharge", None)
    if recharge:
        cfg.budget.auto_recharge = parse_auto_recharge(recharge)
        for name in SPECS:
            if name.startswith("budget.auto_recharge."):
                sources[name] = "flag --auto-recharge"


def parse_auto_recharge(text: str) -> AutoRechargeSettings:
    """``THRESHOLD:CREDITS[:PACK[:EUR]]`` (the --auto-recharge flag): enabled, with those."""
    parts = text.split(":")
    try:
        threshold, credits = int(parts[0]), int(parts[1])
        pack = parts[2] if len(parts) > 2 else catalog.DEFAULT_RECHARGE_PACK
        eur = float(parts[3]) if len(parts) > 3 else catalog.DEFAULT_RECHARGE_MONTHLY_LIMIT_EUR
    except (ValueError, IndexError):
        raise ConfigError(
            "--auto-recharge takes THRESHOLD:CREDITS[:PACK[:EUR]], e.g. 100:500:standard:50"
        ) from None
    if pack not in catalog.CREDIT_PACKS:
        raise ConfigError(
            f"--auto-recharge: unknown pack {pack!r}; known: " + ", ".join(catalog.CREDIT_PACKS)
        )
    return AutoRechargeSettings(True, threshold, credits, pack, eur)


# ======================================================================= the flags =====


def flag_type(spec: Spec) -> Callable[[str], Any]:
    """argparse ``type=`` for a setting's flag: the same check as the file's and the
    environment's, with argparse's kind of message."""

    def convert(text: str) -> Any:
        try:
            return coerce(spec, text, text=True)
        except _Bad as e:
            raise argparse.ArgumentTypeError(
                f"expected {_flag_words(spec, str(e))}, got {text!r}"
            ) from None

    convert.__name__ = spec.kind  # argparse names the type in some messages
    return convert


def _flag_words(spec: Spec, allowed: str) -> str:
    # The words the CLI has always used for these (tests/test_inputs.py checks them).
    return {
        "a number above 0": "a positive number",
        "a number, 0 or more": "zero or more",
        "a whole number, 0 or more": "zero or more",
        "a whole number, 1 or more": "1 or more",
    }.get(allowed, allowed)


def add_flag(
    p: argparse.ArgumentParser,
    name: str,
    *,
    help_: str | None = None,
    type_: Callable[[str], Any] | None = None,
) -> None:
    """Declare the flag of setting ``name`` on ``p``, default None (not given: the file,
    the environment or the default decides). ``type_`` replaces the converter (record's
    durations)."""
    spec = SPECS[name]
    assert spec.flag is not None, name
    text = help_ or spec.doc
    d = spec.default
    shown = "not set" if d is None else f"{d:g}" if isinstance(d, float) else str(d)
    kw: dict[str, Any] = {
        "default": None,
        "dest": spec.dest,
        "help": f"{text} (default {shown}; setting {name})",
    }
    if spec.choices:
        kw["choices"] = list(spec.choices)
    else:
        kw["type"] = type_ or flag_type(spec)
        kw["metavar"] = spec.metavar or spec.name.rsplit(".", 1)[1].upper()
    p.add_argument(spec.flag, **kw)


#: The engine options every engine command (the monitor, run, record, config) takes.
ENGINE_FLAGS = tuple(
    n
    for n, s in SPECS.items()
    if s.flag and n.split(".")[0] in ("engine", "budget", "sim", "shared")
)


def add_config_flag(p: argparse.ArgumentParser) -> None:
    """``--config PATH``: every command takes it."""
    p.add_argument(
        "--config",
        metavar="PATH",
        default=None,
        help="settings file (default: $MAVERA_TUI_CONFIG or "
        "$XDG_CONFIG_HOME/mavera-tui/config.toml); see 'mavera-tui config'",
    )


def add_engine_flags(p: argparse.ArgumentParser) -> None:
    """The same engine options on every engine command: target, pacing, budgets, the
    embedded simulator."""
    for name in ENGINE_FLAGS:
        add_flag(p, name)
    p.add_argument(
        "--auto-recharge",
        metavar="THRESHOLD:CREDITS[:PACK[:EUR]]",
        default=None,
        help="your account's auto-recharge (the API does not expose it), for the "
        "time-left estimate, e.g. 100:500:standard:50 ([budget.auto_recharge] "
        "in the config file)",
    )


# ====================================================================== the report =====


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value)


def describe(loaded: LoadedConfig, *, api_key_set: bool) -> str:
    """The effective settings as TOML, each line with where its value came from; never the
    key (only whether it is set)."""
    lines = ["# mavera-tui settings: default < config file < environment < flags"]
    if loaded.file is not None:
        lines.append(f"# config file: {loaded.file}")
    else:
        lines.append(f"# config file: none ({loaded.looked_for} does not exist)")
    lines.append(
        f"# {catalog.API_KEY_ENV}: {'set' if api_key_set else 'not set'}"
        + (
            ""
            if api_key_set
            else " (no base URL: the embedded simulator)"
            if loaded.config.engine.base_url is None
            else ""
        )
    )
    current = None
    rows: list[tuple[str, str]] = []
    for name in SPECS:
        sec, key = name.rsplit(".", 1)
        if sec != current:
            if rows:
                lines += _aligned(rows)
                rows = []
            lines += ["", f"[{sec}]"]
            current = sec
        value = _get(loaded.config, name)
        if name in SECRET_SETTINGS and value is not None:
            value = "(set, not shown)"
        shown = f"{key} = {_toml(value)}" if value is not None else f"# {key} = (not set)"
        rows.append((shown, loaded.sources[name]))
    lines += _aligned(rows)
    return "\n".join(lines)


def _aligned(rows: list[tuple[str, str]]) -> list[str]:
    width = min(48, max(len(a) for a, _ in rows))
    return [f"{a:<{width}}  # {b}" for a, b in rows]


def as_json(loaded: LoadedConfig, *, api_key_set: bool) -> dict[str, Any]:
    """``mavera-tui config --json``: {setting: {value, source}} and the file."""
    return {
        "config_file": str(loaded.file) if loaded.file else None,
        "api_key_set": api_key_set,
        "settings": {
            n: {
                "value": "(set, not shown)"
                if n in SECRET_SETTINGS and _get(loaded.config, n) is not None
                else _get(loaded.config, n),
                "source": loaded.sources[n],
            }
            for n in SPECS
        },
    }
