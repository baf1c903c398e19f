"""``tornado-sse check``: plain-words findings about the configuration, the backend and Redis.

The backend is the fake one, in this process; the check runs in a child process, so the test
serves the fake meanwhile (``run_check``).
"""

from __future__ import annotations

import subprocess

import pytest

from tests.support.backend import Answer
from tests.support.ports import unused_port
from tests.support.process import run_command
from tornado_sse.check import PROBE_DETAIL, PROBE_TOKENS, PROBE_URL
from tornado_sse.signing import verify

SECRET = "the-backends-secret"


def check(
    env: dict[str, str], *args: str, fd_limit: int | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``tornado-sse check *args`` with ``env``; ``fd_limit`` lowers its soft file
    descriptor limit."""
    return run_command(["check", *args], env, fd_limit=fd_limit)


def run_check(io_loop, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``tornado-sse check`` while this process's IOLoop serves the fake backend."""
    return io_loop.run_sync(lambda: io_loop.run_in_executor(None, check, env))


def labelled(result: subprocess.CompletedProcess[str], label: str) -> list[str]:
    """The lines of the output with ``label`` (``ok``, ``WARN``, ``FAIL``), without it."""
    return [line[5:] for line in result.stdout.splitlines() if line[:4].strip() == label]


def test_check_is_ok_when_the_backend_verifies_the_signed_probes(backend, io_loop):
    backend.secret = SECRET
    backend.connect_answer = Answer(body=b'{"channels": ["news"]}')
    result = run_check(io_loop, {"CALLBACK_URL": backend.url, "CALLBACK_SECRET": SECRET})
    assert result.returncode == 0, result.stdout
    assert labelled(result, "FAIL") == []
    ok = "\n".join(labelled(result, "ok"))
    assert "the backend at CALLBACK_URL answers callbacks (200" in ok
    assert "the backend refuses a wrongly signed callback (401" in ok
    assert "the backend accepts an anonymous stream (200" in ok and "channels: news" in ok
    # What reached the backend: real callbacks, recognisable, signed like the gateway's.
    gone, probe = PROBE_TOKENS
    assert [(c.action, c.token) for c in backend.calls] == [
        ("disconnect", gone),
        ("disconnect", gone),  # the one with a wrong signature
        ("connect", probe),
        ("disconnect", probe),  # the accepted probe is disconnected again
    ]
    for call in backend.calls:
        assert call.body["request"]["url"] == PROBE_URL
        assert call.headers["idempotency-key"]
    assert backend.calls[0].body["detail"] == PROBE_DETAIL
    valid = [verify(c.raw, c.headers.get("x-sse-signature"), SECRET) for c in backend.calls]
    assert valid == [True, False, True, True]


def test_a_wrong_path_fails_with_the_status_and_says_nothing_is_ok_about_the_backend(
    backend, io_loop
):
    result = run_check(io_loop, {"CALLBACK_URL": backend.url.replace("/callback", "/calback")})
    assert result.returncode == 1, result.stdout
    (failure,) = labelled(result, "FAIL")
    assert failure.startswith("CALLBACK_URL answered a callback with 404")
    assert "path" in failure
    assert not any("backend" in line for line in labelled(result, "ok"))
    assert backend.calls == []


def test_a_wrong_secret_fails_and_names_callback_secret(backend, io_loop):
    backend.secret = SECRET
    result = run_check(io_loop, {"CALLBACK_URL": backend.url, "CALLBACK_SECRET": "not-it"})
    assert result.returncode == 1, result.stdout
    (failure,) = labelled(result, "FAIL")
    assert failure.startswith("the backend refused a signed callback (401")
    assert "CALLBACK_SECRET does not match" in failure
    assert not any("backend" in line for line in labelled(result, "ok"))


def test_a_missing_secret_fails_when_the_backend_wants_a_signature(backend, io_loop):
    backend.secret = SECRET
    result = run_check(io_loop, {"CALLBACK_URL": backend.url})
    assert result.returncode == 1, result.stdout
    (failure,) = labelled(result, "FAIL")
    assert failure.startswith("the backend refused an unsigned callback (401")
    assert "set CALLBACK_SECRET" in failure


def test_a_rotation_passes_while_the_backend_still_has_the_old_secret(backend, io_loop):
    backend.secret = SECRET
    env = {"CALLBACK_URL": backend.url, "CALLBACK_SECRET": "the-new-secret," + SECRET}
    result = run_check(io_loop, env)
    assert result.returncode == 0, result.stdout


def test_a_backend_that_ignores_signatures_is_a_warning_not_ok(backend, io_loop):
    result = run_check(io_loop, {"CALLBACK_URL": backend.url, "CALLBACK_SECRET": SECRET})
    assert result.returncode == 0, result.stdout
    (warning, *_) = labelled(result, "WARN")
    assert warning.startswith("the backend accepted a callback with a wrong signature")
    assert not any("signature" in line for line in labelled(result, "ok"))


def test_a_backend_that_refuses_anonymous_streams_is_ok(backend, io_loop):
    backend.connect_answer = Answer(status=401)
    result = run_check(io_loop, {"CALLBACK_URL": backend.url, "INTERNAL_SECRET": "s"})
    assert result.returncode == 0, result.stdout
    assert any(
        line.startswith("the backend refuses an anonymous stream (401")
        for line in labelled(result, "ok")
    )
    assert labelled(result, "WARN") == ["CALLBACK_SECRET is not set: callbacks are not signed"]
    assert [c.action for c in backend.calls] == ["disconnect", "connect"]  # no disconnect after


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (Answer(status=500), "the backend answered a connect callback with 500"),
        (Answer(body=b'{"channels": "news"}'), "the backend's connect answer is not usable"),
    ],
)
def test_a_connect_the_gateway_could_not_use_fails(backend, io_loop, answer, expected):
    backend.connect_answer = answer
    result = run_check(io_loop, {"CALLBACK_URL": backend.url})
    assert result.returncode == 1, result.stdout
    (failure,) = labelled(result, "FAIL")
    assert failure.startswith(expected)


def test_a_redirect_fails_because_the_gateway_does_not_follow_it(backend, io_loop):
    backend.disconnect_answer = Answer(status=301, headers={"Location": "https://example/cb"})
    result = run_check(io_loop, {"CALLBACK_URL": backend.url})
    assert result.returncode == 1, result.stdout
    (failure,) = labelled(result, "FAIL")
    assert failure.startswith("CALLBACK_URL redirects (301")
    assert "https://example/cb" in failure


def test_a_slow_backend_fails_with_the_timeout(backend, io_loop):
    backend.disconnect_answer = Answer(delay=5)
    result = run_check(io_loop, {"CALLBACK_URL": backend.url, "CALLBACK_TIMEOUT_SECONDS": "0.2"})
    assert result.returncode == 1, result.stdout
    (failure,) = labelled(result, "FAIL")
    assert "no answer within CALLBACK_TIMEOUT_SECONDS (0.2 s)" in failure


def test_check_fails_for_an_unreachable_backend():
    port = unused_port()
    result = check({"CALLBACK_URL": "http://127.0.0.1:%d/cb" % port})
    assert result.returncode == 1
    (failure,) = labelled(result, "FAIL")
    assert failure.startswith("the backend at CALLBACK_URL is unreachable: 127.0.0.1:%d" % port)


def test_check_fails_without_callback_url():
    result = check({})
    assert result.returncode == 1
    assert "CALLBACK_URL is not set" in labelled(result, "FAIL")[0]


def test_the_public_internal_api_is_a_warning(backend, io_loop):
    result = run_check(io_loop, {"CALLBACK_URL": backend.url, "CALLBACK_SECRET": "x"})
    warnings = labelled(result, "WARN")
    assert any(w.startswith("the internal API is public on port 3000") for w in warnings)
    assert not any("internal API" in line for line in labelled(result, "ok"))


def test_check_fails_for_unreachable_redis():
    result = check(
        {
            "CALLBACK_URL": "http://127.0.0.1:1/cb",
            "REDIS_URL": "redis://127.0.0.1:%d/0" % unused_port(),
        }
    )
    assert result.returncode == 1
    assert any(f.startswith("Redis at REDIS_URL is unreachable") for f in labelled(result, "FAIL"))


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
        "WARN the file descriptor limit (10000) is below the 10148 that "
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
