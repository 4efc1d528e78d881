"""The ``confd`` command line, in a subprocess and in-process."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml

import confd
from confd import cli
from confd.config import Config, config_to_dict
from confd_tests.netutil import run_confd

REPO = Path(__file__).resolve().parent.parent
GOOD = """\
http:
  port: 8181
database:
  url: postgresql://confd:dbsecret@db.example/confd
freeswitch:
  nodes:
    - host: 127.0.0.1
      password: fs-secret-1
      name: fs1
events:
  amqp_url: amqp://guest:mqsecret@127.0.0.1:5672/
"""
SECRETS = ("dbsecret", "fs-secret-1", "mqsecret")
BAD = "http:\n  port: 8000\nfreeswitch:\n  nodes:\n    - host: h\n      port: abc\n"


@pytest.fixture
def good_file(tmp_path: Path) -> Path:
    path = tmp_path / "good.yml"
    path.write_text(GOOD, encoding="utf-8")
    return path


@pytest.fixture
def bad_file(tmp_path: Path) -> Path:
    path = tmp_path / "bad.yml"
    path.write_text(BAD, encoding="utf-8")
    return path


@pytest.fixture
def clean_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("CONFD_"):
            monkeypatch.delenv(name)


@pytest.fixture
def no_gevent(monkeypatch):
    """Record monkey-patching instead of patching the test process."""
    calls = []
    monkeypatch.setattr(cli, "_patch_gevent", lambda: calls.append(True))
    return calls


@pytest.fixture
def fake_store(monkeypatch):
    """Record which database a command opens instead of opening it."""
    opened = []

    def open_store(cfg):
        opened.append(cfg.database.url)
        return ("store", cfg.database.url)

    monkeypatch.setattr(cli, "_open_store", open_store)
    return opened


@pytest.fixture
def fake_logging(monkeypatch):
    levels = []
    monkeypatch.setattr(cli, "configure_logging", lambda level: levels.append(level))
    return levels


# --- subprocess: python -m confd --------------------------------------------------------------


def test_version_subprocess(tmp_path):
    result = run_confd("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.strip() == f"confd {confd.__version__}"


def test_check_config_good_file_subprocess(tmp_path, good_file):
    result = run_confd("check-config", "--config", str(good_file), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = yaml.safe_load(result.stdout)
    assert data["http"]["port"] == 8181
    assert data["freeswitch"]["nodes"] == [
        {"host": "127.0.0.1", "port": 8021, "password": "********", "name": "fs1"}
    ]
    assert data["database"]["url"] == "postgresql://confd:****@db.example/confd"
    assert data["events"]["amqp_url"] == "amqp://guest:****@127.0.0.1:5672/"
    for secret in SECRETS:
        assert secret not in result.stdout
        assert secret not in result.stderr


def test_check_config_bad_file_subprocess(tmp_path, bad_file):
    result = run_confd("check-config", "--config", str(bad_file), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("confd: ")
    assert "freeswitch.nodes[0].port: expected an integer 1..65535, got 'abc'" in result.stderr
    assert str(bad_file) in result.stderr


def test_check_config_honours_confd_config_and_env_overrides(tmp_path, good_file):
    result = run_confd(
        "check-config",
        cwd=tmp_path,
        env_extra={"CONFD_CONFIG": str(good_file), "CONFD_HTTP_PORT": "9999"},
    )
    assert result.returncode == 0, result.stderr
    data = yaml.safe_load(result.stdout)
    assert data["http"]["port"] == 9999
    assert data["freeswitch"]["nodes"][0]["name"] == "fs1"


def test_run_with_bad_config_exits_2_before_starting(tmp_path, bad_file):
    # Exits on the config error: it never gets as far as importing the daemon.
    result = run_confd("run", "--config", str(bad_file), cwd=tmp_path)
    assert result.returncode == 2
    assert "freeswitch.nodes[0].port" in result.stderr
    assert "Traceback" not in result.stderr


def test_console_entry_point_imports_nothing_gevent_must_patch_first(tmp_path):
    """Importing the CLI must leave threading/socket unimported so that the monkey-patching
    in main() comes first."""
    code = (
        "import sys, confd.cli, confd.__main__; "
        "print(sorted(m for m in ('threading', 'socket', 'ssl', 'select') if m in sys.modules))"
    )
    env = {"PYTHONPATH": str(REPO), "PATH": os.environ.get("PATH", "")}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=str(tmp_path), env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# --- in-process main() ------------------------------------------------------------------------


def test_version_in_process(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out == f"confd {confd.__version__}\n"


def test_usage_error_returns_2(capsys):
    assert cli.main(["no-such-command"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_check_config_in_process(capsys, good_file, clean_env, no_gevent):
    assert cli.main(["check-config", "--config", str(good_file)]) == 0
    out = capsys.readouterr().out
    assert f"from {good_file}" in out
    data = yaml.safe_load(out)
    assert data["http"]["port"] == 8181
    assert data["freeswitch"]["nodes"][0]["password"] == "********"
    assert not any(secret in out for secret in SECRETS)
    assert no_gevent == []  # check-config does not monkey-patch


def test_check_config_without_file_prints_defaults(capsys, clean_env, monkeypatch, tmp_path):
    monkeypatch.setattr("confd.config.DEFAULT_CONFIG_PATH", str(tmp_path / "absent.yml"))
    assert cli.main(["check-config"]) == 0
    out = capsys.readouterr().out
    assert "built-in defaults" in out
    assert yaml.safe_load(out) == config_to_dict(Config())


def test_check_config_reads_default_path_when_it_exists(capsys, clean_env, monkeypatch, good_file):
    monkeypatch.setattr("confd.config.DEFAULT_CONFIG_PATH", str(good_file))
    assert cli.main(["check-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["http"]["port"] == 8181


def test_config_option_before_subcommand(capsys, good_file, clean_env):
    assert cli.main(["--config", str(good_file), "check-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["http"]["port"] == 8181


def test_subcommand_config_wins_over_global(capsys, good_file, bad_file, clean_env):
    assert cli.main(["--config", str(bad_file), "check-config", "--config", str(good_file)]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["http"]["port"] == 8181


def test_check_config_bad_file_in_process(capsys, bad_file, clean_env):
    assert cli.main(["check-config", "--config", str(bad_file)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"confd: {bad_file}: freeswitch.nodes[0].port: expected an integer 1..65535, got 'abc'\n"
    )


def test_missing_config_file_exits_2(capsys, tmp_path, clean_env):
    missing = tmp_path / "nope.yml"
    assert cli.main(["check-config", "--config", str(missing)]) == 2
    assert capsys.readouterr().err == f"confd: --config: no such file: {missing}\n"


def test_bad_env_override_exits_2(capsys, clean_env, monkeypatch, good_file):
    monkeypatch.setenv("CONFD_FREESWITCH", "fs-only-secretish")
    assert cli.main(["check-config", "--config", str(good_file)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("confd: CONFD_FREESWITCH[0]: expected host:port:password")
    assert "secretish" not in err


def _fake_module(monkeypatch, name: str, func_name: str, result: int):
    calls = []

    def func(cfg, *args, **kwargs):
        calls.append((cfg, args, kwargs))
        return result

    module = types.ModuleType(name)
    setattr(module, func_name, func)
    monkeypatch.setitem(sys.modules, name, module)
    return calls


@pytest.mark.parametrize("argv", [["run"], []])
def test_run_patches_gevent_configures_logging_and_runs_daemon(
    argv, monkeypatch, good_file, clean_env, no_gevent, fake_logging, fake_store
):
    calls = _fake_module(monkeypatch, "confd.daemon", "run_daemon", 7)
    monkeypatch.setenv("CONFD_CONFIG", str(good_file))
    assert cli.main(argv) == 7
    assert no_gevent == [True]
    assert fake_logging == ["info"]
    ((cfg, args, kwargs),) = calls
    assert isinstance(cfg, Config) and cfg.http.port == 8181 and args == ()
    # The database is opened before the daemon is built, so that a database it cannot
    # open is a clear error (exit 2), not a daemon that fails to start.
    assert fake_store == ["postgresql://confd:dbsecret@db.example/confd"]
    assert kwargs == {"store": ("store", fake_store[0])}


def test_run_bad_config_exits_2_without_running(
    capsys, bad_file, clean_env, no_gevent, monkeypatch
):
    calls = _fake_module(monkeypatch, "confd.daemon", "run_daemon", 0)
    assert cli.main(["run", "--config", str(bad_file)]) == 2
    assert calls == []
    assert "freeswitch.nodes[0].port" in capsys.readouterr().err


def test_demo_passes_port(monkeypatch, clean_env, no_gevent, fake_logging, fake_store, tmp_path):
    calls = _fake_module(monkeypatch, "confd.simulator.demo", "run_demo", 0)
    config = tmp_path / "c.yml"
    config.write_text("log: {level: DEBUG}\n", encoding="utf-8")
    assert cli.main(["demo", "--port", "8899", "--config", str(config)]) == 0
    assert no_gevent == [True]
    assert fake_logging == ["debug"]
    ((cfg, args, kwargs),) = calls
    assert kwargs == {"port": 8899}
    assert cfg.log.level == "debug"


def test_demo_port_defaults_to_none(
    monkeypatch, clean_env, no_gevent, fake_logging, fake_store, tmp_path
):
    calls = _fake_module(monkeypatch, "confd.simulator.demo", "run_demo", 0)
    monkeypatch.setenv("CONFD_CONFIG", str(tmp_path / "absent.yml"))
    assert cli.main(["demo"]) == 2  # an explicit ($CONFD_CONFIG) path must exist
    monkeypatch.setenv("CONFD_CONFIG", "")
    monkeypatch.setattr("confd.config.DEFAULT_CONFIG_PATH", str(tmp_path / "absent.yml"))
    assert cli.main(["demo"]) == 0
    assert calls[0][2] == {"port": None}


def test_demo_uses_its_own_database_not_the_configured_one(
    monkeypatch, clean_env, no_gevent, fake_logging, fake_store, good_file
):
    calls = _fake_module(monkeypatch, "confd.simulator.demo", "run_demo", 0)
    assert cli.main(["demo", "--config", str(good_file)]) == 0
    assert fake_store == [cli.DEMO_DATABASE_URL] != ["postgresql://confd:dbsecret@db.example/confd"]
    ((cfg, (store,), _),) = calls
    assert cfg.database.url == cli.DEMO_DATABASE_URL and store == ("store", cli.DEMO_DATABASE_URL)
    assert cfg.http.port == 8181  # the rest of the config is the configured one
    # --database names another; the configured one only when asked for by name.
    assert cli.main(["demo", "--config", str(good_file), "--database", "sqlite:///x.db"]) == 0
    assert fake_store[-1] == "sqlite:///x.db" and calls[-1][0].database.url == "sqlite:///x.db"


def test_configure_logging_format_and_level():
    import logging

    root = logging.getLogger("confd-test-configure-logging")
    root.propagate = False
    stream = io.StringIO()
    handler = cli.configure_logging("warning", stream=stream, root=root)
    try:
        assert root.level == logging.WARNING
        root.info("hidden")
        root.warning("shown %s", 1)
        line = stream.getvalue().strip()
        assert line.endswith(" WARNING confd-test-configure-logging: shown 1")
        assert "hidden" not in stream.getvalue()
    finally:
        root.removeHandler(handler)


def test_every_subcommand_takes_config():
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    assert set(subparsers.choices) >= {"run", "check-config", "demo"}
    for name, sub in subparsers.choices.items():
        assert any("--config" in a.option_strings for a in sub._actions), name
