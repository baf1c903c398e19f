"""Settings: one frozen value built once from flags > environment > ``--conf`` file > defaults.

Every setting has one name in three spellings: ``CALLBACK_URL`` in the environment,
``--callback-url`` (or ``--callback_url``) on the command line, ``callback_url = "..."`` in a conf
file (Tornado options syntax: a Python file of assignments). A bad value raises
:class:`ConfigError`, whose message is one line naming the setting and the value.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit


class ConfigError(ValueError):
    """A setting has a value that tornado_sse cannot run with. The message is one line."""


@dataclass(frozen=True)
class Settings:
    """Everything the gateway can be told. Defaults are the production defaults.

    Values are not re-validated here, so tests may use intervals in milliseconds; user input
    goes through :func:`load`, which enforces the documented ranges.
    """

    port: int = 3000
    address: str = ""
    callback_url: str | None = None
    heartbeat_interval_seconds: float = 15.0
    callback_timeout_seconds: float = 5.0
    callback_max_clients: int = 100
    callback_secret: str | None = None
    sse_path_prefix: str = "/sse/"
    cors_origins: str = "*"
    internal_port: int | None = None
    internal_secret: str | None = None
    max_pending_events: int = 100
    max_body_bytes: int = 1024 * 1024
    max_header_bytes: int = 64 * 1024
    max_connections: int = 10000
    max_queued_bytes: int = 2 * 1024 * 1024
    max_total_queued_bytes: int = 256 * 1024 * 1024
    header_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 10.0
    history_size: int = 1000
    history_ttl_seconds: float = 300.0
    shutdown_timeout_seconds: float = 25.0
    retry_on_unavailable: bool = False
    redis_url: str | None = None
    processes: int = 1
    log_format: str = "text"
    log_level: str = "info"
    event_loop: str = "auto"

    @property
    def cors_origin_list(self) -> tuple[str, ...]:
        """The configured origins: ``("*",)``, a list of exact origins, or ``()`` for none."""
        return tuple(o.strip() for o in self.cors_origins.split(",") if o.strip())


# --------------------------------------------------------------------------------------------
# Parsers: each takes the raw text (or a conf-file value) and returns the typed value, or raises
# ValueError with a short reason.


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected text")
    return value


def _optional_text(value: Any) -> str | None:
    if value is None:
        return None
    text = _text(value).strip()
    return text or None


def _int_between(low: int, high: int | None = None) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError("expected a whole number")
        number = value if isinstance(value, int) else int(str(value).strip())
        if number < low or (high is not None and number > high):
            bounds = "at least %d" % low if high is None else "from %d to %d" % (low, high)
            raise ValueError("must be %s" % bounds)
        return number

    return parse


def _optional_port(value: Any) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return _int_between(1, 65535)(value)


def _seconds(low: float) -> Callable[[Any], float]:
    def parse(value: Any) -> float:
        if isinstance(value, bool):
            raise ValueError("expected a number of seconds")
        number = float(value) if isinstance(value, (int, float)) else float(str(value).strip())
        if not number >= low or number == float("inf"):
            raise ValueError("must be a number of seconds of at least %g" % low)
        return number

    return parse


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true or false")


def _choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = _text(value).strip().lower()
        if text not in choices:
            raise ValueError("must be one of %s" % ", ".join(choices))
        return text

    return parse


def _http_url(value: Any) -> str | None:
    url = _optional_text(value)
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL")
    return url


def _redis_url(value: Any) -> str | None:
    url = _optional_text(value)
    if url is None:
        return None
    if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
        raise ValueError("must be a redis://, rediss:// or unix:// URL")
    return url


def _path_prefix(value: Any) -> str:
    prefix = _text(value).strip()
    if not prefix.startswith("/"):
        raise ValueError("must start with /")
    return prefix if prefix.endswith("/") else prefix + "/"


def _processes(value: Any) -> int:
    return _int_between(0, 256)(value)


@dataclass(frozen=True)
class _Spec:
    name: str
    parse: Callable[[Any], Any]
    help: str
    env: Sequence[str] = field(default=())

    @property
    def env_names(self) -> Sequence[str]:
        return self.env or (self.name.upper(),)


SPECS: tuple[_Spec, ...] = (
    _Spec("port", _int_between(0, 65535), "TCP port of the gateway (default 3000)"),
    _Spec("address", _text, "address to listen on (default: all interfaces)", env=("HOST",)),
    _Spec("callback_url", _http_url, "backend URL that receives connect/disconnect callbacks"),
    _Spec("heartbeat_interval_seconds", _seconds(1), "seconds between heartbeats (min 1)"),
    _Spec("callback_timeout_seconds", _seconds(0.001), "seconds to wait for a callback answer"),
    _Spec("callback_max_clients", _int_between(1, 10000), "concurrent callbacks to the backend"),
    _Spec("callback_secret", _optional_text, "HMAC secret that signs every callback"),
    _Spec("sse_path_prefix", _path_prefix, "path prefix of the stream endpoint"),
    _Spec("cors_origins", _text, "'*', a comma-separated list of origins, or empty for none"),
    _Spec("internal_port", _optional_port, "serve /internal/* and /metrics only on this port"),
    _Spec("internal_secret", _optional_text, "bearer secret required by /internal/*"),
    _Spec("max_pending_events", _int_between(0), "sends queued per connecting stream"),
    _Spec("max_body_bytes", _int_between(1), "largest request body, in bytes"),
    _Spec("max_header_bytes", _int_between(1024), "largest request head, in bytes"),
    _Spec("max_connections", _int_between(1), "open streams per process"),
    _Spec("max_queued_bytes", _int_between(1024), "unsent bytes per stream before it is closed"),
    _Spec(
        "max_total_queued_bytes",
        _int_between(1024 * 1024),
        "unsent bytes of all streams together before those furthest behind are closed",
    ),
    _Spec(
        "header_timeout_seconds",
        _seconds(0.1),
        "seconds a connection may take to send a complete request head (idle time included)",
    ),
    _Spec(
        "body_timeout_seconds",
        _seconds(0.1),
        "seconds a request may take to send the body it declares",
    ),
    _Spec("history_size", _int_between(0), "channel events kept for replay (0: off)"),
    _Spec("history_ttl_seconds", _seconds(0), "seconds a channel event stays replayable"),
    _Spec("shutdown_timeout_seconds", _seconds(0), "seconds a graceful shutdown may take"),
    _Spec("retry_on_unavailable", _boolean, "answer 503/504 connects with a retry: stream"),
    _Spec("redis_url", _redis_url, "Redis URL for running several processes as one gateway"),
    _Spec(
        "processes",
        _processes,
        "processes to fork (0: one per core)",
        env=("PROCESSES", "WEB_CONCURRENCY"),
    ),
    _Spec("log_format", _choice("text", "json"), "log line format: text or json"),
    _Spec("log_level", _choice("debug", "info", "warning", "error"), "log level"),
    _Spec(
        "event_loop",
        _choice("auto", "asyncio", "uvloop"),
        "event loop: auto (uvloop when installed), asyncio or uvloop",
    ),
)

_SPEC_BY_NAME = {spec.name: spec for spec in SPECS}


def _convert(spec: _Spec, value: Any, origin: str) -> Any:
    try:
        return spec.parse(value)
    except (ValueError, TypeError) as exc:
        message = "%s: bad value %r for %s: %s" % (origin, value, spec.name.upper(), exc)
        raise ConfigError(message) from None


def read_conf_file(path: str) -> dict[str, Any]:
    """Run a conf file (Tornado options syntax) and return the settings it assigns.

    Raises :class:`ConfigError` for a missing file, a syntax error or an unknown setting name.
    """
    namespace: dict[str, Any] = {"__file__": os.path.abspath(path)}
    try:
        with open(path, "rb") as f:
            code = compile(f.read(), path, "exec")
        exec(code, namespace, namespace)
    except OSError as exc:
        raise ConfigError("--conf: cannot read %s: %s" % (path, exc.strerror)) from None
    except SyntaxError as exc:
        raise ConfigError("--conf: %s line %s: %s" % (path, exc.lineno, exc.msg)) from None
    values = {}
    for name, value in namespace.items():
        if name.startswith("_"):
            continue
        if name not in _SPEC_BY_NAME:
            raise ConfigError("--conf: %s sets unknown setting %r" % (path, name))
        values[name] = value
    return values


def argument_parser(prog: str = "tornado-sse") -> argparse.ArgumentParser:
    """The command-line flags: one per setting, plus ``--conf``. Unset flags stay ``None``."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="tornado_sse: a Server-Sent Events gateway for WSGI backends.",
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--conf", metavar="FILE", help="conf file (Tornado options syntax)")
    for spec in SPECS:
        dashed = "--" + spec.name.replace("_", "-")
        flags = [dashed] if "_" not in spec.name else [dashed, "--" + spec.name]
        env = "/".join(spec.env_names)
        parser.add_argument(
            *flags, dest=spec.name, metavar="VALUE", help="%s [%s]" % (spec.help, env)
        )
    return parser


def load(
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    conf_file: str | None = None,
) -> Settings:
    """Build :class:`Settings` from flags > environment > conf file > defaults.

    ``flags`` maps setting names to raw text (as from :func:`argument_parser`); ``environ``
    defaults to ``os.environ``. Raises :class:`ConfigError` naming the first bad setting.
    """
    flags = dict(flags or {})
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    if conf_file:
        for name, value in read_conf_file(conf_file).items():
            values[name] = _convert(_SPEC_BY_NAME[name], value, conf_file)
    from_web_concurrency = False
    for spec in SPECS:
        for env_name in spec.env_names:
            if env_name in environ:
                values[spec.name] = _convert(spec, environ[env_name], "environment")
                from_web_concurrency |= env_name == "WEB_CONCURRENCY"
                break
    for name, value in flags.items():
        if name in _SPEC_BY_NAME:
            values[name] = _convert(_SPEC_BY_NAME[name], value, "command line")
            from_web_concurrency &= name != "processes"
    if from_web_concurrency and not values.get("redis_url"):
        # Heroku sets WEB_CONCURRENCY for every Python app; without Redis it cannot apply here.
        values.pop("processes", None)
    settings = Settings(**values)
    _check_consistency(settings)
    return settings


def _check_consistency(settings: Settings) -> None:
    if settings.event_loop == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            raise ConfigError(
                "EVENT_LOOP=uvloop but uvloop is not installed (pip install 'tornado-sse[fast]')"
            ) from None
    if settings.internal_port is not None and settings.internal_port == settings.port:
        raise ConfigError("INTERNAL_PORT must differ from PORT (both are %d)" % settings.port)
    if settings.processes != 1 and not settings.redis_url:
        raise ConfigError(
            "--processes %d needs REDIS_URL: processes share tokens and channels through Redis"
            % settings.processes
        )


def replace(settings: Settings, **changes: Any) -> Settings:
    """A copy of ``settings`` with ``changes`` applied (no validation: for tests and tools)."""
    return dataclasses.replace(settings, **changes)
