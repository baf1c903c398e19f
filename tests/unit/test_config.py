"""Settings from flags > environment > conf file > defaults (wire contract section 7)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tornado_sse.config import ConfigError, Settings, load


def conf(tmp_path: Path, text: str) -> str:
    """Write a conf file (Tornado options syntax) and return its path."""
    path = tmp_path / "gateway.conf"
    path.write_text(text)
    return str(path)


def one_line_error(excinfo: pytest.ExceptionInfo[ConfigError]) -> str:
    message = str(excinfo.value)
    assert message and "\n" not in message and "\r" not in message, repr(message)
    return message


# --------------------------------------------------------------------------------------------
# Defaults and precedence


def test_defaults():
    settings = load({}, {}, None)
    assert settings.port == 3000
    assert settings.sse_path_prefix == "/sse/"
    assert settings.heartbeat_interval_seconds == 15
    assert settings.callback_timeout_seconds == 5
    assert settings.callback_url is None
    assert settings.cors_origins == "*"
    assert settings.max_pending_events == 100
    assert settings.max_body_bytes == 1024 * 1024
    assert settings.processes == 1
    assert settings.header_timeout_seconds == 10
    assert settings.body_timeout_seconds == 10
    assert settings.max_total_queued_bytes == 256 * 1024 * 1024
    assert settings == Settings()


def test_overload_limits_have_the_usual_three_spellings(tmp_path):
    names = {
        "BODY_TIMEOUT_SECONDS": ("body_timeout_seconds", "2.5", 2.5),
        "HEADER_TIMEOUT_SECONDS": ("header_timeout_seconds", "4", 4.0),
        "MAX_TOTAL_QUEUED_BYTES": ("max_total_queued_bytes", "67108864", 64 * 1024 * 1024),
    }
    for env, (name, text, value) in names.items():
        assert getattr(load({}, {env: text}), name) == value
        assert getattr(load({name: text}, {}), name) == value
        assert getattr(load({}, {}, conf(tmp_path, "%s = %s\n" % (name, text))), name) == value


def test_environment_is_read_by_the_contract_names():
    settings = load(
        {},
        {
            "PORT": "4001",
            "CALLBACK_URL": "http://backend.local:8000/cb",
            "HEARTBEAT_INTERVAL_SECONDS": "2.5",
            "CALLBACK_TIMEOUT_SECONDS": "0.5",
        },
    )
    assert settings.port == 4001
    assert settings.callback_url == "http://backend.local:8000/cb"
    assert settings.heartbeat_interval_seconds == 2.5
    assert settings.callback_timeout_seconds == 0.5


@pytest.mark.parametrize(
    ("flags", "environ", "with_conf", "port", "heartbeat"),
    [
        pytest.param({}, {}, False, 3000, 15, id="defaults"),
        pytest.param({}, {}, True, 4000, 20, id="conf-over-defaults"),
        pytest.param({}, {"PORT": "5000"}, True, 5000, 20, id="env-over-conf"),
        pytest.param({"port": "6000"}, {"PORT": "5000"}, True, 6000, 20, id="flag-over-env"),
        pytest.param(
            {"heartbeat_interval_seconds": "7"},
            {"HEARTBEAT_INTERVAL_SECONDS": "8"},
            True,
            4000,
            7,
            id="each-setting-on-its-own",
        ),
        pytest.param({"port": "6000"}, {}, False, 6000, 15, id="flag-over-defaults"),
    ],
)
def test_flags_override_env_override_conf_file_override_defaults(
    tmp_path, flags, environ, with_conf, port, heartbeat
):
    path = conf(tmp_path, "port = 4000\nheartbeat_interval_seconds = 20\n") if with_conf else None
    settings = load(flags, environ, path)
    assert settings.port == port
    assert settings.heartbeat_interval_seconds == heartbeat


def test_conf_file_accepts_python_values(tmp_path):
    path = conf(
        tmp_path,
        'callback_url = "http://127.0.0.1:9000/cb"\n'
        'cors_origins = "https://a.example"\n'
        "max_body_bytes = 2048\n"
        "retry_on_unavailable = True\n",
    )
    settings = load({}, {}, path)
    assert settings.callback_url == "http://127.0.0.1:9000/cb"
    assert settings.cors_origins == "https://a.example"
    assert settings.max_body_bytes == 2048
    assert settings.retry_on_unavailable is True


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/events", "/events/"),
        ("/events/", "/events/"),
        ("/a/b", "/a/b/"),
        ("/", "/"),
    ],
)
def test_sse_path_prefix_gets_a_trailing_slash(value, expected):
    assert load({}, {"SSE_PATH_PREFIX": value}).sse_path_prefix == expected
    assert load({"sse_path_prefix": value}, {}).sse_path_prefix == expected


# --------------------------------------------------------------------------------------------
# Bad values: ConfigError, one line, naming the setting

BAD_ENV: list[Any] = [
    pytest.param({"HEARTBEAT_INTERVAL_SECONDS": "0.5"}, "HEARTBEAT_INTERVAL_SECONDS", id="hb-0.5"),
    pytest.param({"HEARTBEAT_INTERVAL_SECONDS": "0"}, "HEARTBEAT_INTERVAL_SECONDS", id="hb-0"),
    pytest.param({"HEARTBEAT_INTERVAL_SECONDS": "-3"}, "HEARTBEAT_INTERVAL_SECONDS", id="hb-neg"),
    pytest.param({"HEARTBEAT_INTERVAL_SECONDS": "nan"}, "HEARTBEAT_INTERVAL_SECONDS", id="hb-nan"),
    pytest.param({"HEARTBEAT_INTERVAL_SECONDS": "inf"}, "HEARTBEAT_INTERVAL_SECONDS", id="hb-inf"),
    pytest.param(
        {"HEARTBEAT_INTERVAL_SECONDS": "soon"}, "HEARTBEAT_INTERVAL_SECONDS", id="hb-word"
    ),
    pytest.param({"PORT": "abc"}, "PORT", id="port-abc"),
    pytest.param({"PORT": "70000"}, "PORT", id="port-too-big"),
    pytest.param({"PORT": "-1"}, "PORT", id="port-negative"),
    pytest.param({"PORT": "3000.5"}, "PORT", id="port-fraction"),
    pytest.param({"CALLBACK_URL": "ftp://x"}, "CALLBACK_URL", id="callback-ftp"),
    pytest.param({"CALLBACK_URL": "backend:8000/cb"}, "CALLBACK_URL", id="callback-no-scheme"),
    pytest.param({"CALLBACK_URL": "http://"}, "CALLBACK_URL", id="callback-no-host"),
    pytest.param({"CALLBACK_TIMEOUT_SECONDS": "0"}, "CALLBACK_TIMEOUT_SECONDS", id="timeout-0"),
    pytest.param({"CALLBACK_TIMEOUT_SECONDS": "x"}, "CALLBACK_TIMEOUT_SECONDS", id="timeout-x"),
    pytest.param({"SSE_PATH_PREFIX": "sse/"}, "SSE_PATH_PREFIX", id="prefix-relative"),
    pytest.param({"MAX_BODY_BYTES": "0"}, "MAX_BODY_BYTES", id="max-body-0"),
    pytest.param({"MAX_CONNECTIONS": "many"}, "MAX_CONNECTIONS", id="max-conn-word"),
    pytest.param({"MAX_PENDING_EVENTS": "-1"}, "MAX_PENDING_EVENTS", id="pending-negative"),
    pytest.param({"INTERNAL_PORT": "abc"}, "INTERNAL_PORT", id="internal-port-abc"),
    pytest.param({"REDIS_URL": "http://x"}, "REDIS_URL", id="redis-http"),
    pytest.param({"LOG_FORMAT": "xml"}, "LOG_FORMAT", id="log-format"),
    pytest.param({"RETRY_ON_UNAVAILABLE": "maybe"}, "RETRY_ON_UNAVAILABLE", id="bool-maybe"),
    pytest.param({"PORT": "3000", "INTERNAL_PORT": "3000"}, "INTERNAL_PORT", id="ports-equal"),
    pytest.param({"BODY_TIMEOUT_SECONDS": "0"}, "BODY_TIMEOUT_SECONDS", id="body-timeout-0"),
    pytest.param({"HEADER_TIMEOUT_SECONDS": "x"}, "HEADER_TIMEOUT_SECONDS", id="head-timeout-x"),
    pytest.param({"MAX_TOTAL_QUEUED_BYTES": "1000"}, "MAX_TOTAL_QUEUED_BYTES", id="total-tiny"),
]


@pytest.mark.parametrize(("environ", "name"), BAD_ENV)
def test_bad_environment_value_is_a_one_line_config_error_naming_the_setting(environ, name):
    with pytest.raises(ConfigError) as excinfo:
        load({}, environ)
    assert name in one_line_error(excinfo)


@pytest.mark.parametrize(
    ("flags", "name"),
    [
        ({"port": "abc"}, "PORT"),
        ({"heartbeat_interval_seconds": "0.5"}, "HEARTBEAT_INTERVAL_SECONDS"),
        ({"callback_url": "ftp://x"}, "CALLBACK_URL"),
    ],
)
def test_bad_flag_value_is_a_one_line_config_error_naming_the_setting(flags, name):
    with pytest.raises(ConfigError) as excinfo:
        load(flags, {})
    assert name in one_line_error(excinfo)


def test_bad_flag_wins_over_good_env_and_is_reported():
    with pytest.raises(ConfigError) as excinfo:
        load({"port": "abc"}, {"PORT": "4000"})
    assert "PORT" in one_line_error(excinfo)


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ('port = "abc"\n', "PORT"),
        ("heartbeat_interval_seconds = 0.5\n", "HEARTBEAT_INTERVAL_SECONDS"),
        ('callback_url = "ftp://x"\n', "CALLBACK_URL"),
        ("port = 3000.5\n", "PORT"),
        ("max_connections = True\n", "MAX_CONNECTIONS"),
        ("prot = 3000\n", "prot"),
    ],
)
def test_bad_conf_file_value_is_a_one_line_config_error_naming_the_setting(tmp_path, text, name):
    with pytest.raises(ConfigError) as excinfo:
        load({}, {}, conf(tmp_path, text))
    assert name in one_line_error(excinfo)


def test_conf_file_syntax_error_is_a_one_line_config_error(tmp_path):
    path = conf(tmp_path, "port = = 3000\n")
    with pytest.raises(ConfigError) as excinfo:
        load({}, {}, path)
    assert path in one_line_error(excinfo)


def test_missing_conf_file_is_a_one_line_config_error(tmp_path):
    path = str(tmp_path / "absent.conf")
    with pytest.raises(ConfigError) as excinfo:
        load({}, {}, path)
    assert path in one_line_error(excinfo)


# --------------------------------------------------------------------------------------------
# Processes (section 6)


def test_web_concurrency_without_redis_runs_one_process():
    assert load({}, {"WEB_CONCURRENCY": "4"}).processes == 1


def test_web_concurrency_with_redis_sets_processes():
    settings = load({}, {"WEB_CONCURRENCY": "4", "REDIS_URL": "redis://localhost:6379/0"})
    assert settings.processes == 4


@pytest.mark.parametrize(
    ("flags", "environ"),
    [
        ({"processes": "2"}, {}),
        ({}, {"PROCESSES": "2"}),
        ({"processes": "2"}, {"WEB_CONCURRENCY": "4"}),
        ({}, {"PROCESSES": "0"}),
    ],
)
def test_explicit_processes_without_redis_is_a_config_error(flags, environ):
    with pytest.raises(ConfigError) as excinfo:
        load(flags, environ)
    message = one_line_error(excinfo)
    assert "REDIS_URL" in message
    assert "processes" in message.lower()


def test_processes_in_conf_file_without_redis_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as excinfo:
        load({}, {}, conf(tmp_path, "processes = 2\n"))
    assert "REDIS_URL" in one_line_error(excinfo)


def test_explicit_processes_with_redis_is_accepted():
    settings = load({"processes": "3"}, {"REDIS_URL": "redis://localhost:6379/0"})
    assert settings.processes == 3


# --------------------------------------------------------------------------------------------
# The command line: bad settings print one line and exit with status 2


def _clean_env(**extra: str) -> dict[str, str]:
    """The current environment without any gateway setting, plus ``extra``."""
    names = {
        "PORT",
        "HOST",
        "CALLBACK_URL",
        "HEARTBEAT_INTERVAL_SECONDS",
        "CALLBACK_TIMEOUT_SECONDS",
        "SSE_PATH_PREFIX",
        "CORS_ORIGINS",
        "INTERNAL_PORT",
        "INTERNAL_SECRET",
        "REDIS_URL",
        "PROCESSES",
        "WEB_CONCURRENCY",
        "LOG_FORMAT",
        "LOG_LEVEL",
    }
    env = {k: v for k, v in os.environ.items() if k not in names}
    env.update(extra)
    return env


@pytest.mark.parametrize(
    ("args", "env", "name"),
    [
        pytest.param(["--port", "abc"], {}, "PORT", id="port-flag"),
        pytest.param(
            [],
            {"HEARTBEAT_INTERVAL_SECONDS": "0"},
            "HEARTBEAT_INTERVAL_SECONDS",
            id="heartbeat-env",
        ),
        pytest.param(
            ["--heartbeat-interval-seconds", "0.5"],
            {},
            "HEARTBEAT_INTERVAL_SECONDS",
            id="heartbeat-flag",
        ),
        pytest.param([], {"CALLBACK_URL": "ftp://x"}, "CALLBACK_URL", id="callback-env"),
        pytest.param(["--processes", "2"], {}, "REDIS_URL", id="processes-without-redis"),
    ],
)
def test_cli_bad_setting_exits_2_with_one_line_naming_it(args, env, name):
    # PORT=0: should a bad value slip through, the gateway binds a free port (and the timeout
    # ends the run) rather than clash with anything on 3000.
    result = subprocess.run(
        [sys.executable, "-m", "tornado_sse", *args],
        env=_clean_env(PORT="0", **env),
        capture_output=True,
        text=True,
        timeout=20,
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert len(lines) == 1, result.stderr
    assert name in lines[0]
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("value", "secrets"),
    [
        ("one", ("one",)),
        ("new,old", ("new", "old")),
        (" new , old ,", ("new", "old")),
    ],
)
def test_callback_secret_holds_several_comma_separated_secrets(value, secrets):
    assert load(environ={"CALLBACK_SECRET": value}).callback_secrets == secrets


def test_no_callback_secret_means_no_secrets():
    assert load(environ={}).callback_secrets == ()
