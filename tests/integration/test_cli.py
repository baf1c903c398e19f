"""The ``tornado-sse`` command line: ``--help``, ``--version``, and a port already in use."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tests.support.process import run_command
from tornado_sse import __version__
from tornado_sse.config import SPECS, shown_default


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port that something else listens on."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock.getsockname()[1]


@pytest.mark.parametrize(
    ("args", "setting"),
    [
        pytest.param([], "PORT", id="gateway"),
        pytest.param(["demo"], "PORT", id="demo"),
        pytest.param([], "INTERNAL_PORT", id="internal-port"),
    ],
)
def test_a_port_in_use_is_one_line_naming_it_and_exit_status_2(taken_port, args, setting):
    env = {"HOST": "127.0.0.1", "PORT": "0", setting: str(taken_port)}
    result = run_command(args, env)
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "port %d (%s) is already in use" % (taken_port, setting) in lines[0]
    assert lines[0].startswith("tornado-sse")


def test_a_port_in_use_with_processes_ends_with_that_line_and_no_traceback(taken_port):
    # --processes waits for Redis before it binds the shared port, and says so when Redis does
    # not answer; the port line comes after.
    env = {
        "HOST": "127.0.0.1",
        "PORT": str(taken_port),
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "REDIS_CONNECT_TIMEOUT_SECONDS": "0.1",
    }
    result = run_command(["--processes", "2"], env)
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr
    assert lines[-1] == (
        "tornado-sse: error: port %d (PORT) is already in use: stop what listens there or set "
        "another PORT" % taken_port
    )


def test_help_lists_the_commands_and_the_default_of_every_setting():
    result = run_command(["--help"], {})
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())  # argparse wraps lines anywhere
    squeezed = "".join(text.split())  # ... also after a hyphen, inside a value
    for command in ("tornado-sse demo", "tornado-sse check", "--version"):
        assert command in text
    for spec in SPECS:
        entry = "[%s] (default: %s)" % ("/".join(spec.env_names), shown_default(spec))
        assert "".join(entry.split()) in squeezed, entry
    assert "[PORT] (default: 3000)" in text
    assert "[CALLBACK_URL] (default: unset)" in text


@pytest.mark.parametrize("command", [[], ["demo"], ["check"]])
def test_every_command_has_help(command):
    result = run_command([*command, "--help"], {})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: tornado-sse")
    assert "--callback-url" in result.stdout


def test_version_prints_the_package_version():
    result = run_command(["--version"], {})
    assert (result.returncode, result.stdout) == (0, "tornado-sse %s\n" % __version__)
