"""The settings model: read order (defaults < file < environment < flags), the ``config``
command, bad files as one line, the key never shown, the same exit statuses everywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mavera_tui import catalog, cli, config
from mavera_tui.config import Config, load_config
from mavera_tui.engine import scheduler_config
from mavera_tui.errors import EXIT_CANNOT_START, EXIT_OK, EXIT_USAGE, ConfigError

ROOT = Path(__file__).resolve().parent.parent
SECRET = "mvra_test_CONFIG_never_shown_7f3a"
EXAMPLE = """\
[engine]
tier = "basic"
request_timeout = 120.0
[budget]
workspace_cap = 5000
"""


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """No MAVERA_* variables, and a config home of our own (no user file can leak in)."""
    for k in list(os.environ):
        if k.startswith("MAVERA_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "HOME": str(tmp_path / "home")}


def user_file(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "xdg" / "mavera-tui" / "config.toml"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def effective(argv: list[str], env: dict[str, str]) -> config.LoadedConfig:
    args = cli.parse_args(argv)
    return load_config(args.config, environ=env, args=args)


# --- read order ----------------------------------------------------------------------------


def test_defaults_then_file_then_env_then_flags(tmp_path: Path) -> None:
    env: dict[str, str] = {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    argv = ["run", "jobs.jsonl"]
    d = effective(argv, env)
    assert (d.config.engine.tier, d.config.engine.request_timeout) == (None, 300.0)
    assert d.config.budget.workspace_cap is None and d.sources["engine.tier"] == "default"
    assert d.file is None

    path = user_file(tmp_path, EXAMPLE + "alert_single = 50\n[ui]\nrefresh = 2.0\n")
    f = effective(argv, env)
    assert f.config.engine.tier == "basic" and f.config.engine.request_timeout == 120.0
    assert f.config.budget.workspace_cap == 5000 and f.config.budget.alert_single == 50
    assert f.sources["engine.tier"] == f"file {path}" and f.file == path
    assert f.sources["engine.window_seconds"] == "default"

    env |= {
        "MAVERA_TUI_ENGINE__TIER": "professional",
        "MAVERA_TUI_BUDGET__WORKSPACE_CAP": "7000",
        "MAVERA_BASE_URL": "http://127.0.0.1:9/api/v1",
        "MAVERA_TUI_UI__REFRESH": "",
    }
    e = effective(argv, env)
    assert e.config.engine.tier == "professional" and e.config.budget.workspace_cap == 7000
    assert e.config.engine.request_timeout == 120.0  # the file's, env says nothing
    assert e.config.engine.base_url == "http://127.0.0.1:9/api/v1"
    assert e.sources["engine.tier"] == "env MAVERA_TUI_ENGINE__TIER"
    assert e.sources["engine.base_url"] == "env MAVERA_BASE_URL"
    assert e.config.ui.refresh == 2.0  # an empty variable is unset

    g = effective([*argv, "--tier", "enterprise", "--budget-cap", "9000", "--timeout", "7"], env)
    assert g.config.engine.tier == "enterprise" and g.config.budget.workspace_cap == 9000
    assert g.config.engine.request_timeout == 7.0
    assert g.sources["engine.request_timeout"] == "flag --timeout"
    assert g.config.budget.alert_single == 50  # a flag not given changes nothing
    assert g.sources["budget.alert_single"] == f"file {path}"


def test_config_path_flag_and_env_name_the_file(tmp_path: Path) -> None:
    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    a.write_text('[engine]\ntier = "starter"\n')
    b.write_text('[engine]\ntier = "basic"\n')
    env = {"XDG_CONFIG_HOME": str(tmp_path / "none"), "MAVERA_TUI_CONFIG": str(a)}
    assert effective(["config"], env).config.engine.tier == "starter"
    assert effective(["config", "--config", str(b)], env).config.engine.tier == "basic"
    with pytest.raises(ConfigError, match="not found"):
        effective(["config", "--config", str(tmp_path / "missing.toml")], env)


def test_record_takes_every_engine_option_that_run_takes(tmp_path: Path) -> None:
    def options(argv: list[str]) -> set[str]:
        parser = cli.build_parser(argv[0] if argv else "")
        sub = cli._subparser(parser, argv[0]) if argv else parser
        return {o for a in sub._actions for o in a.option_strings}

    engine = {config.SPECS[n].flag for n in config.ENGINE_FLAGS} | {"--auto-recharge", "--config"}
    for argv in (["run"], ["record"], [], ["config"]):
        assert engine <= options(argv), argv
    args = cli.parse_args(
        [
            "record",
            "--db",
            str(tmp_path / "r.db"),
            "--tier",
            "basic",
            "--timeout",
            "9",
            "--budget-cap",
            "10",
            "--interval",
            "2m",
            "--auto-recharge",
            "100:500",
            "--sim-time-scale",
            "0",
        ]
    )
    from mavera_tui.record import settings_from_args

    s = settings_from_args(args)
    c = s.config
    assert (c.engine.tier, c.engine.request_timeout, c.budget.workspace_cap) == ("basic", 9.0, 10)
    assert c.record.interval == 120.0 and c.sim.time_scale == 0.0
    assert c.budget.auto_recharge.enabled and c.budget.auto_recharge.credits == 500
    assert s.mode == "record" and not s.keep_finished and s.db == str(tmp_path / "r.db")


def test_the_engine_is_built_from_the_model() -> None:
    c = Config()
    c.engine.tier, c.engine.request_timeout, c.engine.credit_poll = "basic", 12.0, 4.0
    c.budget.workspace_cap, c.budget.alert_single = 5000, 77
    c.budget.auto_recharge.enabled, c.budget.auto_recharge.threshold = True, 42
    c.budget.allocation_alerts = (0.8,)
    sc = scheduler_config(c, keep_finished=False)
    assert sc.limit == catalog.TIERS["basic"] and sc.request_timeout == 12.0
    assert sc.credit_poll == 4.0 and not sc.keep_finished
    assert sc.budget.workspace_cap == 5000 and sc.budget.single_request == 77
    assert sc.budget.recharge.enabled and sc.budget.recharge.threshold == 42
    assert sc.budget.thresholds == (0.8,)
    # Defaults agree with the scheduler's own where both exist (until it reads config.py).
    d = scheduler_config(Config())
    assert d.limit is None and d.window_seconds == catalog.WINDOW_SECONDS


def test_every_setting_is_documented_and_its_default_is_allowed() -> None:
    for name, spec in config.SPECS.items():
        assert len(spec.doc) > 10, name
        assert spec.allowed(), name  # every kind and check can say what it takes
        if spec.default is not None:
            assert config.coerce(spec, spec.default) == spec.default, name


def test_key_bindings_match_the_app_and_are_applied() -> None:
    from mavera_tui.ui.app import MaveraApp, create_app, help_rows
    from mavera_tui.ui.fixtures import FrozenEngine, demo_snapshot

    app_keys = {b.id: b.key for b in MaveraApp.BINDINGS}
    assert app_keys == config.KEY_BINDINGS
    app = create_app(FrozenEngine(demo_snapshot()), keys={"quit": "ctrl+q"})
    assert app._keymap == {"quit": "ctrl+q"}  # what Textual applies to the bindings
    shown = [k for k, _ in help_rows(app)]
    assert "ctrl+q" in shown and "q" not in shown  # the help names the key in use


# --- the config command --------------------------------------------------------------------


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MAVERA_")}
    return subprocess.run(
        [sys.executable, "-m", "mavera_tui", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**base, **env},
        stdin=subprocess.DEVNULL,
    )


def test_config_command_shows_the_example_file_and_never_the_key(tmp_path: Path) -> None:
    path = user_file(tmp_path, EXAMPLE)
    env = {
        "HOME": str(tmp_path / "home"),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
        "MAVERA_API_KEY": SECRET,
        "MAVERA_TUI_ENGINE__CREDIT_POLL": "5",
    }
    r = run_cli(["config", "--alert-single", "99"], env)
    assert r.returncode == EXIT_OK, r.stderr
    out = r.stdout
    assert SECRET not in out + r.stderr
    assert "MAVERA_API_KEY: set" in out
    lines = {
        ln.split("#")[0].strip(): ln.split("#", 1)[1].strip()
        for ln in out.splitlines()
        if "=" in ln and not ln.startswith("#")
    }
    assert lines['tier = "basic"'] == f"file {path}"
    assert lines["request_timeout = 120.0"] == f"file {path}"
    assert lines["workspace_cap = 5000"] == f"file {path}"
    assert lines["credit_poll = 5.0"] == "env MAVERA_TUI_ENGINE__CREDIT_POLL"
    assert lines["alert_single = 99"] == "flag --alert-single"
    assert lines["window_seconds = 60.0"] == "default"
    assert f"config file: {path}" in out

    r = run_cli(["config", "--json"], {**env, "MAVERA_API_KEY": ""})
    data = json.loads(r.stdout)
    assert data["api_key_set"] is False and data["config_file"] == str(path)
    assert data["settings"]["engine.tier"] == {"value": "basic", "source": f"file {path}"}


# --- bad settings ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[engine]\ntimeout = 5\n", ["engine.timeout", "unknown key", "request_timeout"]),
        (
            '[engine]\nrequest_timeout = "slow"\n',
            ["engine.request_timeout", "expected a number above 0", "'slow'"],
        ),
        ('[engine]\ntier = "gold"\n', ["engine.tier", "one of starter, basic"]),
        ("[budget]\nworkspace_cap = -1\n", ["budget.workspace_cap", "0 or more"]),
        ("[budget]\nallocation_alerts = [50, 90]\n", ["budget.allocation_alerts", "at most 1"]),
        ('[engine]\ntier = "basic"\nrequest_timeout = \n', ["not valid TOML", "line 3"]),
        ('[enigne]\ntier = "basic"\n', ["unknown section [enigne]", "engine, budget"]),
        ("engine = 3\n", ["engine is a table"]),
        ('[ui.keys]\nfly = "x"\n', ["ui.keys: unknown binding id 'fly'; ids: quit"]),
        ("[ui]\nkeys = { quit = 3 }\n", ["ui.keys: quit takes a key name", "got 3"]),
        (f'[engine]\napi_key = "{SECRET}"\n', ["engine.api_key", "MAVERA_API_KEY"]),
    ],
)
def test_a_bad_file_is_one_line_naming_the_file_and_the_key(
    text, words, tmp_path, clean_env, capfd
) -> None:
    path = user_file(tmp_path, text)
    rc = cli.main(["config"])
    out, err = capfd.readouterr()
    assert rc == EXIT_CANNOT_START and out == ""
    assert err.count("\n") == 1 and err.startswith("mavera-tui: error: "), err
    assert str(path) in err
    for w in words:
        assert w in err, (w, err)
    assert SECRET not in err


@pytest.mark.parametrize(
    ("var", "value", "words"),
    [
        ("MAVERA_TUI_ENGINE__MAX_IN_FLIGHT", "0", "expected a whole number, 1 or more"),
        ("MAVERA_TUI_ENGINE__TEIR", "basic", "unknown setting MAVERA_TUI_ENGINE__TEIR"),
        ("MAVERA_TUI_SIM__AUTO_RECHARGE", "maybe", "true or false"),
    ],
)
def test_a_bad_environment_value_is_one_line_naming_the_variable(
    var, value, words, clean_env, monkeypatch, capfd
) -> None:
    monkeypatch.setenv(var, value)
    assert cli.main(["config"]) == EXIT_CANNOT_START
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and var in err and words in err, err


def test_exit_statuses_mean_the_same_in_every_command(tmp_path, clean_env, capfd) -> None:
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(
        '{"id": "a", "method": "POST", "path": "/responses", "body": {"input": "hi"}}\n'
    )
    db = str(tmp_path / "r.db")
    commands = [
        ["run", str(jobs)],
        ["record", "--db", db, "--jobs", str(jobs)],
        ["replay", db],
        ["report", db],
        ["estimate", "fg"],
        ["config"],
        ["--no-demo"],
    ]
    # A bad config file: could not start, whichever command.
    user_file(tmp_path, "[engine]\ntier = 1\n")
    for argv in commands:
        assert cli.main(argv) == EXIT_CANNOT_START, argv
        assert capfd.readouterr().err.count("\n") == 1, argv
    (tmp_path / "xdg" / "mavera-tui" / "config.toml").unlink()
    # A file that is not there: could not start.
    missing = str(tmp_path / "missing")
    for argv in (
        ["run", missing],
        ["record", "--db", db, "--jobs", missing],
        ["replay", missing],
        ["report", missing],
    ):
        assert cli.main(argv) == EXIT_CANNOT_START, argv
        capfd.readouterr()
    # A bad flag value: bad usage, whichever command.
    for argv in (
        ["run", str(jobs), "--timeout", "-1"],
        ["record", "--db", db, "--timeout", "-1"],
        ["--timeout", "-1"],
        ["config", "--timeout", "-1"],
        ["replay", db, "--refresh", "0"],
    ):
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        assert exc.value.code == EXIT_USAGE, argv
        capfd.readouterr()


def test_the_readme_example_file_is_accepted(tmp_path: Path) -> None:
    text = (ROOT / "README.md").read_text()
    block = text.split("### Settings: the config file", 1)[1].split("```toml\n", 1)[1]
    path = tmp_path / "readme.toml"
    path.write_text(block.split("```", 1)[0])
    c = load_config(str(path), environ={}).config
    assert c.engine.tier == "basic" and c.budget.auto_recharge.enabled
    assert c.ui.keys == {"quit": "ctrl+q", "pause": "space"} and c.sim.tier == "enterprise"


async def test_a_rebound_key_drives_its_action_and_the_old_one_does_not() -> None:
    from mavera_tui.ui.app import create_app
    from mavera_tui.ui.fixtures import FrozenEngine, demo_snapshot
    from mavera_tui.ui.screens import ConfirmQuit

    app = create_app(
        FrozenEngine(demo_snapshot()), keys={"quit": "x"}, watch_terminal=False, show_health=False
    )
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        await pilot.press("q")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmQuit)
        await pilot.press("x")  # the demo has jobs in flight: quitting asks first
        await pilot.pause()
        assert isinstance(app.screen, ConfirmQuit)


def test_with_shared_the_balance_read_defaults_to_start_unless_set(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path / "none")}
    jobs = str(tmp_path / "jobs.jsonl")
    alone = effective(["run", jobs], env)
    assert alone.config.engine.balance_read == "auto"
    shared = effective(["run", jobs, "--shared", "redis://127.0.0.1:1/0"], env)
    assert shared.config.engine.balance_read == "start"
    assert shared.sources["engine.balance_read"] == "default (start with --shared)"
    told = effective(
        ["run", jobs, "--shared", "redis://127.0.0.1:1/0", "--balance-read", "auto"], env
    )
    assert told.config.engine.balance_read == "auto"
