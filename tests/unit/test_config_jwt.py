"""The JWT and connect-rate settings: spellings, and bad values that stop start-up (exit 2)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.process import SOURCE_ROOTS
from tests.support.tokens import SECRET, ec_keys, rsa_keys
from tornado_sse.config import ConfigError, load

#: This checkout's gateway and client sources, as a child's PYTHONPATH.
SOURCES = os.pathsep.join(SOURCE_ROOTS)


def one_line(excinfo: pytest.ExceptionInfo[ConfigError]) -> str:
    message = str(excinfo.value)
    assert message and "\n" not in message, repr(message)
    return message


def test_jwt_settings_are_read_from_the_environment_flags_and_conf(tmp_path):
    pem = ec_keys().public_pem
    conf = tmp_path / "gw.conf"
    conf.write_text('jwt_issuer = "https://conf"\nmax_connects_per_second = 50\n')
    settings = load(
        {"jwt_audience": "sse"},
        {"JWT_SECRET": SECRET, "JWT_PUBLIC_KEY": pem, "MAX_CONNECTS_PER_SECOND": "2.5"},
        str(conf),
    )
    assert (settings.jwt_secret, settings.jwt_public_key) == (SECRET, pem.strip())
    assert (settings.jwt_audience, settings.jwt_issuer) == ("sse", "https://conf")
    assert settings.max_connects_per_second == 2.5
    assert settings.jwt_configured


def test_jwt_is_off_and_the_connect_rate_unlimited_by_default():
    settings = load({}, {})
    assert not settings.jwt_configured
    assert settings.max_connects_per_second == 0


def test_public_key_may_be_a_file_or_a_pem_with_escaped_line_breaks(tmp_path):
    pem = rsa_keys().public_pem
    path = tmp_path / "key.pem"
    path.write_text(pem)
    assert load({}, {"JWT_PUBLIC_KEY": str(path)}).jwt_public_key == pem.strip()
    escaped = pem.strip().replace("\n", "\\n")
    assert load({}, {"JWT_PUBLIC_KEY": escaped}).jwt_public_key == pem.strip()


@pytest.mark.parametrize(
    ("environ", "words"),
    [
        ({"JWT_SECRET": "too-short"}, "JWT_SECRET is 9 bytes long"),
        ({"JWT_PUBLIC_KEY": "/nonexistent/key.pem"}, "JWT_PUBLIC_KEY"),
        ({"JWT_PUBLIC_KEY": "-----BEGIN PUBLIC KEY-----\\nAAAA\\n-----END PUBLIC KEY-----"}, "PEM"),
        ({"JWT_AUDIENCE": "sse"}, "JWT_AUDIENCE is set but neither"),
        ({"JWT_ISSUER": "me"}, "JWT_ISSUER is set but neither"),
        ({"MAX_CONNECTS_PER_SECOND": "-1"}, "MAX_CONNECTS_PER_SECOND"),
        ({"MAX_CONNECTS_PER_SECOND": "lots"}, "MAX_CONNECTS_PER_SECOND"),
    ],
)
def test_bad_jwt_or_rate_setting_is_a_one_line_config_error(environ, words):
    with pytest.raises(ConfigError) as caught:
        load({}, environ)
    assert words in one_line(caught)


def test_a_bad_secret_is_never_repeated_in_the_error():
    with pytest.raises(ConfigError) as caught:
        load({}, {"JWT_SECRET": "hunter2-is-short"})
    assert "hunter2" not in one_line(caught)


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m tornado_sse *args`` with only ``env`` (and PATH, PORT=0, this checkout's
    sources) as its environment."""
    return subprocess.run(
        [sys.executable, "-m", "tornado_sse", *args],
        env={"PATH": "/usr/bin:/bin", "PORT": "0", "PYTHONPATH": SOURCES, **env},
        capture_output=True,
        text=True,
        timeout=20,
    )


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"JWT_PUBLIC_KEY": "/nonexistent/key.pem"}, "JWT_PUBLIC_KEY"),
        ({"JWT_SECRET": "short"}, "JWT_SECRET"),
    ],
)
def test_cli_with_a_bad_jwt_key_exits_2_with_one_line(env, words):
    result = _run(env)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and words in lines[0], result.stderr


def test_cli_with_a_jwt_key_but_without_the_jwt_extra_exits_2_naming_it(tmp_path):
    # A package named jwt that cannot be imported stands for PyJWT not being installed.
    blocker = tmp_path / "jwt"
    blocker.mkdir()
    (blocker / "__init__.py").write_text("raise ImportError('PyJWT is not installed')\n")
    result = _run({"JWT_SECRET": SECRET, "PYTHONPATH": os.pathsep.join([str(tmp_path), SOURCES])})
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert "pip install 'tornado-sse[jwt]'" in lines[0]  # as the redis extra's line says


def test_check_passes_with_a_jwt_key_and_no_callback_url():
    result = _run({"JWT_SECRET": SECRET}, "check")
    assert result.returncode == 0, result.stdout
    assert "ok   CALLBACK_URL is not set: only streams with a JWT can open" in result.stdout


def test_check_reports_a_bad_jwt_key_with_status_2():
    result = _run({"JWT_SECRET": "short"}, "check")
    assert result.returncode == 2
    assert result.stdout.startswith("FAIL ") and "JWT_SECRET" in result.stdout
