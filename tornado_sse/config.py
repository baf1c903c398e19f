"""Settings: one frozen value built once from flags > environment > ``--conf`` file > defaults.

Every setting has one name in three spellings: ``CALLBACK_URL`` in the environment,
``--callback-url`` (or ``--callback_url``) on the command line, ``callback_url = "..."`` in a conf
file (Tornado options syntax: a Python file of assignments). A bad value raises
:class:`ConfigError`, whose message is one line naming the setting and the value.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib.util
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .history import Retention, parse_rules

#: Request headers a cross-origin page may send to a stream: those of ``EventSource`` and of the
#: fetch-based SSE clients, which alone can send a bearer token.
DEFAULT_CORS_ALLOW_HEADERS = (
    "Content-Type, Cache-Control, Last-Event-ID, Authorization, X-Request-ID"
)


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
    disconnect_retry_seconds: float = 0.0
    callback_keepalive_seconds: int = 1
    sse_path_prefix: str = "/sse/"
    cors_origins: str = "*"
    cors_allow_headers: str = DEFAULT_CORS_ALLOW_HEADERS
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
    history_rules: str = ""
    history_max_bytes: int = 64 * 1024 * 1024
    shutdown_timeout_seconds: float = 25.0
    retry_on_unavailable: bool = False
    max_connects_per_second: float = 0.0
    jwt_secret: str | None = None
    jwt_public_key: str | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    redis_url: str | None = None
    redis_sentinels: str | None = None
    redis_sentinel_master: str | None = None
    redis_cluster: bool = False
    redis_connect_timeout_seconds: float = 10.0
    redis_instance_ttl_seconds: float = 15.0
    max_streams_per_user: int = 0
    presence_events: str = ""
    presence_leave_delay_seconds: float = 5.0
    processes: int = 1
    reuse_port: bool = False
    log_format: str = "text"
    log_level: str = "info"
    event_loop: str = "auto"

    @property
    def jwt_configured(self) -> bool:
        """Whether streams may carry a JWT (``JWT_SECRET`` or ``JWT_PUBLIC_KEY`` is set)."""
        return self.jwt_secret is not None or self.jwt_public_key is not None

    @property
    def callback_secrets(self) -> tuple[str, ...]:
        """The secrets of ``CALLBACK_SECRET`` (comma-separated, for a rotation), in order."""
        return tuple(s.strip() for s in (self.callback_secret or "").split(",") if s.strip())

    @property
    def uses_redis(self) -> bool:
        """Whether processes share one gateway through Redis (``REDIS_URL`` or Sentinel)."""
        return bool(self.redis_url or self.redis_sentinels)

    @functools.cached_property
    def retention(self) -> Retention:
        """How long each channel keeps its events (``HISTORY_*``); made once, so that every
        part of a gateway shares one policy cache."""
        return Retention(
            size=self.history_size,
            ttl=self.history_ttl_seconds,
            rules=parse_rules(self.history_rules),
            max_bytes=self.history_max_bytes,
        )

    @property
    def presence_event_globs(self) -> tuple[str, ...]:
        """The channel globs of ``PRESENCE_EVENTS`` (empty: no presence events)."""
        return tuple(g.strip() for g in self.presence_events.split(",") if g.strip())

    @functools.cached_property
    def cors_origin_list(self) -> tuple[str, ...]:
        """The configured origins: ``("*",)``, a list of exact origins, or ``()`` for none
        (worked out once: every public request asks)."""
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
    """One Redis URL, or several separated by commas (the start-up nodes of a Redis Cluster,
    allowed only with ``REDIS_CLUSTER``)."""
    url = _optional_text(value)
    if url is None:
        return None
    for item in url.split(","):
        if urlsplit(item.strip()).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
    return url


def _rate(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number per second")
    number = float(value) if isinstance(value, (int, float)) else float(str(value).strip())
    if not number >= 0 or number == float("inf"):
        raise ValueError("must be a number per second of at least 0 (0: no limit)")
    return number


def _pem(value: Any) -> str | None:
    """A PEM text as given, or read from the file it names. Platforms that cannot hold line
    breaks in a variable may write them as ``\\n``."""
    text = _optional_text(value)
    if text is None:
        return None
    if text.startswith("-----BEGIN"):
        return text.replace("\\n", "\n") if "\n" not in text else text
    try:
        with open(text, encoding="ascii") as f:
            return f.read().strip()
    except (OSError, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not a PEM text file"
        raise ValueError("neither a PEM text nor a readable PEM file: %s" % reason) from None


def _sentinels(value: Any) -> str | None:
    text = _optional_text(value)
    if text is None:
        return None
    for item in text.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("%r is not host:port" % item.strip())
    return text


def _path_prefix(value: Any) -> str:
    prefix = _text(value).strip()
    if not prefix.startswith("/"):
        raise ValueError("must start with /")
    return prefix if prefix.endswith("/") else prefix + "/"


def _header_list(value: Any) -> str:
    """A comma-separated list of header names, normalised to ``"A, B"``."""
    names = [name.strip() for name in _text(value).split(",") if name.strip()]
    for name in names:
        if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
            raise ValueError("%r is not a header name" % name)
    return ", ".join(names)


def _history_rules(value: Any) -> str:
    text = _text(value).strip()
    parse_rules(text)  # raises ValueError naming the bad item
    return text


def _processes(value: Any) -> int:
    return _int_between(0, 256)(value)


@dataclass(frozen=True)
class _Spec:
    name: str
    parse: Callable[[Any], Any]
    help: str
    env: Sequence[str] = field(default=())
    secret: bool = False  # never repeat the value in an error message
    #: How ``--help`` shows the default, when the default value itself would not say it.
    shown_default: str | None = None

    @property
    def env_names(self) -> Sequence[str]:
        return self.env or (self.name.upper(),)


SPECS: tuple[_Spec, ...] = (
    _Spec("port", _int_between(0, 65535), "TCP port of the gateway"),
    _Spec("address", _text, "address to listen on", env=("HOST",), shown_default="all interfaces"),
    _Spec("callback_url", _http_url, "backend URL that receives connect/disconnect callbacks"),
    _Spec("heartbeat_interval_seconds", _seconds(1), "seconds between heartbeats (min 1)"),
    _Spec("callback_timeout_seconds", _seconds(0.001), "seconds to wait for a callback answer"),
    _Spec("callback_max_clients", _int_between(1, 10000), "concurrent callbacks to the backend"),
    _Spec(
        "callback_secret",
        _optional_text,
        "HMAC secret that signs every callback; several, comma-separated, during a rotation",
        secret=True,
    ),
    _Spec(
        "callback_keepalive_seconds",
        _int_between(1, 3600),
        "reuse a callback connection only if idle for less than this (below the backend's)",
    ),
    _Spec(
        "disconnect_retry_seconds",
        _seconds(0),
        "seconds to keep retrying a failed disconnect callback (0: no retry)",
    ),
    _Spec("sse_path_prefix", _path_prefix, "path prefix of the stream endpoint"),
    _Spec("cors_origins", _text, "'*', a comma-separated list of origins, or empty for none"),
    _Spec(
        "cors_allow_headers",
        _header_list,
        "request headers a CORS preflight allows (comma-separated)",
    ),
    _Spec("internal_port", _optional_port, "serve /internal/* and /metrics only on this port"),
    _Spec(
        "internal_secret",
        _optional_text,
        "bearer secret required by /internal/*, /metrics",
        secret=True,
    ),
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
    _Spec("history_size", _int_between(0), "events kept per channel for replay (0: off)"),
    _Spec("history_ttl_seconds", _seconds(0), "seconds a channel event stays replayable"),
    _Spec(
        "history_rules",
        _history_rules,
        "per-channel overrides, first match wins: 'ticker.*=1/60,chat.*=500/3600' (size/ttl)",
    ),
    _Spec("history_max_bytes", _int_between(0), "bytes all channel histories may take together"),
    _Spec("shutdown_timeout_seconds", _seconds(0), "seconds a graceful shutdown may take"),
    _Spec("retry_on_unavailable", _boolean, "answer 503/504 connects with a retry: stream"),
    _Spec(
        "max_connects_per_second",
        _rate,
        "new streams per second per process, beyond it 503 RATE_LIMITED (0: no limit)",
    ),
    _Spec(
        "jwt_secret", _optional_text, "HMAC secret of ?jwt= streams (HS256/384/512)", secret=True
    ),
    _Spec(
        "jwt_public_key",
        _pem,
        "PEM public key (or a file holding it) of ?jwt= streams (RS*, PS*, ES*, EdDSA)",
    ),
    _Spec("jwt_audience", _optional_text, "the 'aud' a stream's JWT must name"),
    _Spec("jwt_issuer", _optional_text, "the 'iss' a stream's JWT must name"),
    _Spec("redis_url", _redis_url, "Redis URL for running several processes as one gateway"),
    _Spec(
        "redis_sentinels",
        _sentinels,
        "Redis Sentinels (host:port,...) that name the primary; with REDIS_SENTINEL_MASTER",
    ),
    _Spec("redis_sentinel_master", _optional_text, "the primary's name known to the Sentinels"),
    _Spec(
        "redis_cluster",
        _boolean,
        "REDIS_URL names nodes of a Redis Cluster (comma-separated): sharded pub/sub, Redis 7",
    ),
    _Spec(
        "redis_connect_timeout_seconds",
        _seconds(0),
        "seconds to wait for Redis at start-up before opening the port anyway (readyz 503)",
    ),
    _Spec(
        "redis_instance_ttl_seconds",
        _seconds(3),
        "seconds an instance that cannot refresh its liveness in Redis counts as alive (min 3)",
    ),
    _Spec(
        "max_streams_per_user",
        _int_between(0),
        "streams one user may hold, cluster-wide (0: no limit)",
    ),
    _Spec(
        "presence_events",
        _text,
        "globs of channels that get presence_join/presence_leave events: 'room.*,lobby'",
    ),
    _Spec(
        "presence_leave_delay_seconds",
        _seconds(0),
        "seconds without a stream before a user's presence_leave is announced",
    ),
    _Spec(
        "processes",
        _processes,
        "processes to fork (0: one per core)",
        env=("PROCESSES", "WEB_CONCURRENCY"),
    ),
    _Spec(
        "reuse_port",
        _boolean,
        "bind with SO_REUSEPORT; on SIGTERM stop listening at once, so a new process on the "
        "same port takes over without downtime",
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
        shown = "(hidden)" if spec.secret else repr(value)
        message = "%s: bad value %s for %s: %s" % (origin, shown, spec.name.upper(), exc)
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


def shown_default(spec: _Spec) -> str:
    """The default of ``spec`` as ``--help`` shows it: ``unset``, ``true``, ``15``, ``/sse/``."""
    if spec.shown_default is not None:
        return spec.shown_default
    value = _DEFAULTS[spec.name]
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return "%d" % value
    return repr(value) if value == "" else str(value)


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Settings)}


def argument_parser(
    prog: str = "tornado-sse", description: str | None = None
) -> argparse.ArgumentParser:
    """The command-line flags: one per setting, plus ``--conf`` and ``--version``. Unset flags
    are absent from the parsed namespace. ``description`` heads ``--help``."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog=prog,
        usage="%(prog)s [--conf FILE] [--SETTING VALUE ...]",
        description=description or "tornado_sse: a Server-Sent Events gateway for WSGI backends.",
        epilog="Every setting is also an environment variable (in brackets) and a conf file "
        "line; flags win over the environment, which wins over --conf.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--version", action="version", version="tornado-sse %s" % __version__)
    parser.add_argument("--conf", metavar="FILE", help="conf file (Tornado options syntax)")
    for spec in SPECS:
        dashed = "--" + spec.name.replace("_", "-")
        flags = [dashed] if "_" not in spec.name else [dashed, "--" + spec.name]
        env = "/".join(spec.env_names)
        parser.add_argument(
            *flags,
            dest=spec.name,
            metavar="VALUE",
            help="%s [%s] (default: %s)" % (spec.help, env, shown_default(spec)),
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
    if from_web_concurrency and not (values.get("redis_url") or values.get("redis_sentinels")):
        # Heroku sets WEB_CONCURRENCY for every Python app; without Redis it cannot apply here.
        values.pop("processes", None)
    settings = Settings(**values)
    _check_consistency(settings)
    return settings


def _check_consistency(settings: Settings) -> None:
    """Raise :class:`ConfigError` for settings that are valid one by one but cannot run: not
    together, or not without an optional extra that is not installed."""
    if settings.event_loop == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            raise ConfigError(
                "EVENT_LOOP=uvloop but uvloop is not installed (pip install 'uvloop>=0.17')"
            ) from None
    _check_jwt(settings)
    if settings.uses_redis and importlib.util.find_spec("redis") is None:
        raise ConfigError(
            "REDIS_URL is set but the redis package is not installed "
            "(pip install 'tornado-sse[redis]')"
        )
    if bool(settings.redis_sentinels) != bool(settings.redis_sentinel_master):
        raise ConfigError("REDIS_SENTINELS and REDIS_SENTINEL_MASTER go together: set both")
    if settings.redis_cluster and (settings.redis_sentinels or not settings.redis_url):
        raise ConfigError(
            "REDIS_CLUSTER=true needs REDIS_URL (the cluster's nodes) and no REDIS_SENTINELS"
        )
    if settings.redis_url and "," in settings.redis_url and not settings.redis_cluster:
        raise ConfigError(
            "REDIS_URL names several servers (%r): that is a Redis Cluster's nodes, set "
            "REDIS_CLUSTER=true" % settings.redis_url
        )
    if settings.redis_cluster and any(
        urlsplit(u.strip()).scheme == "unix" for u in (settings.redis_url or "").split(",")
    ):
        raise ConfigError("REDIS_CLUSTER=true needs redis:// or rediss:// node URLs")
    if settings.internal_port is not None and settings.internal_port == settings.port:
        raise ConfigError("INTERNAL_PORT must differ from PORT (both are %d)" % settings.port)
    if settings.processes != 1 and not settings.uses_redis:
        raise ConfigError(
            "--processes %d needs REDIS_URL: processes share tokens and channels through Redis"
            % settings.processes
        )


def _check_jwt(settings: Settings) -> None:
    """JWT settings that could never verify a token stop start-up here, not at the first
    stream: a key of the wrong kind or size, or the ``jwt`` extra not installed."""
    if not settings.jwt_configured:
        for name in ("jwt_audience", "jwt_issuer"):
            if getattr(settings, name) is not None:
                raise ConfigError(
                    "%s is set but neither JWT_SECRET nor JWT_PUBLIC_KEY" % name.upper()
                )
        return
    from .jwt_auth import verifier_for

    try:
        verifier_for(settings)
    except ImportError:
        raise ConfigError(
            "JWT_SECRET/JWT_PUBLIC_KEY need PyJWT and cryptography (pip install 'tornado-sse[jwt]')"
        ) from None
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def replace(settings: Settings, **changes: Any) -> Settings:
    """A copy of ``settings`` with ``changes`` applied (no validation: for tests and tools)."""
    return dataclasses.replace(settings, **changes)
