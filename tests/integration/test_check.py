"""``tornado-sse check``: plain-words probes of the configuration, the backend and Redis."""

from __future__ import annotations

import subprocess

import pytest

from tests.support.ports import unused_port
from tests.support.process import run_command


def check(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``tornado-sse check *args`` with ``env``."""
    return run_command(["check", *args], env)


def test_check_passes_when_the_backend_accepts_connections(backend, io_loop):
    # The fake backend listens in this process; the check runs in a child, so serve meanwhile.
    result = io_loop.run_sync(
        lambda: io_loop.run_in_executor(None, check, {"CALLBACK_URL": backend.url})
    )
    assert result.returncode == 0, result.stdout
    assert "the backend at CALLBACK_URL accepts connections" in result.stdout


def test_check_fails_for_an_unreachable_backend():
    result = check({"CALLBACK_URL": "http://127.0.0.1:%d/cb" % unused_port()})
    assert result.returncode == 1
    assert "FAIL the backend at CALLBACK_URL is unreachable" in result.stdout


def test_check_fails_without_callback_url():
    result = check({})
    assert result.returncode == 1
    assert "CALLBACK_URL is not set" in result.stdout


def test_check_fails_for_unreachable_redis():
    result = check(
        {
            "CALLBACK_URL": "http://127.0.0.1:1/cb",
            "REDIS_URL": "redis://127.0.0.1:%d/0" % unused_port(),
        }
    )
    assert result.returncode == 1
    assert "FAIL Redis at REDIS_URL is unreachable" in result.stdout


@pytest.mark.parametrize("env", [{"PORT": "x"}, {"LOG_FORMAT": "xml"}])
def test_check_reports_an_invalid_setting_with_status_2(env):
    result = check(env)
    assert result.returncode == 2
    assert result.stdout.startswith("FAIL ")
