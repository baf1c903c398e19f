"""``tornado-sse check``: plain-words probes of the configuration, the backend and Redis."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.process import descriptor_limit, unused_port


def check(
    env: dict[str, str], *args: str, fd_limit: int | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``tornado-sse check``; ``fd_limit`` lowers its soft file descriptor limit."""
    return subprocess.run(
        [sys.executable, "-m", "tornado_sse", "check", *args],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=30,
        preexec_fn=descriptor_limit(fd_limit),
    )


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


def test_check_warns_when_the_descriptor_limit_cannot_hold_max_connections():
    # Heroku's limit is 10,000: the default MAX_CONNECTIONS=10000 does not fit beside the
    # callback connections and the reserve.
    result = check({"CALLBACK_URL": "http://127.0.0.1:1/cb"}, fd_limit=10000)
    assert (
        "ok   warning: the file descriptor limit (10000) is below the 10148 that "
        "MAX_CONNECTIONS=10000 needs" in result.stdout
    ), result.stdout
    assert "set MAX_CONNECTIONS to 9852 at most" in result.stdout


def test_check_reports_a_descriptor_limit_that_holds_max_connections():
    result = check(
        {"CALLBACK_URL": "http://127.0.0.1:1/cb", "MAX_CONNECTIONS": "800"}, fd_limit=1024
    )
    assert (
        "ok   the file descriptor limit (1024) covers MAX_CONNECTIONS=800 (about 948 needed)"
        in result.stdout
    ), result.stdout
