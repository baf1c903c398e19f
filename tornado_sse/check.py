"""``tornado-sse check``: validate the configuration and probe what the gateway depends on.

Prints one line per finding, each labelled ``ok``, ``WARN`` or ``FAIL``, and returns 0 when
nothing failed (warnings do not fail), 1 otherwise, and 2, like the gateway itself, when a
setting is invalid.

The backend is probed with real callbacks, made and signed as the gateway makes them (same
headers, ``CALLBACK_SECRET``, ``CALLBACK_TIMEOUT_SECONDS``, no redirects followed), for
recognisable tokens (:data:`PROBE_TOKENS`, request URL :data:`PROBE_URL`):

1. a ``disconnect`` (reason ``server_closed``, detail ``check``) for a token the backend never
   saw, which any backend answers without asking who the user is. A 2xx means the URL is the
   callback route and the signature, if the backend checks one, is accepted; 401 or 403 means
   the secret does not match (or is missing); 404, 405 or a redirect mean a wrong URL.
2. with ``CALLBACK_SECRET`` set, the same disconnect with a signature that cannot verify: a
   2xx means the backend does not check signatures (``WARN``).
3. a ``connect`` without cookies or credentials: a 2xx (with a usable answer) or a 401/403 (a
   backend that authenticates its users refuses an anonymous stream) is ``ok``; an accepted
   probe is followed by its ``disconnect``.
A file descriptor limit too low for ``MAX_CONNECTIONS`` is a ``WARN``.

Redis: with ``REDIS_SENTINELS``, the Sentinels must name a primary for
``REDIS_SENTINEL_MASTER`` and that primary must answer ``PING``; with ``REDIS_CLUSTER``, a
node must answer ``CLUSTER INFO`` with state ok and all 16384 slots assigned (failing slots are a
``WARN``); otherwise Redis at ``REDIS_URL`` must answer ``PING``.
"""

from __future__ import annotations

import asyncio
import http.client
import secrets
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO
from urllib.parse import urlsplit

from . import protocol, signing
from .backend import IDEMPOTENCY_HEADER
from .config import ConfigError, Settings
from .listener import descriptor_limit, descriptors_needed
from .server import parse

#: The tokens of the probes: the never-connected one of the disconnect probe, and the connect's.
PROBE_TOKENS = ("00000000-c4ec-4000-8000-000000000001", "00000000-c4ec-4000-8000-000000000002")
#: The request URL the probes carry, so that a backend (and its log) can tell them apart.
PROBE_URL = "/sse/tornado-sse-check"
#: The ``detail`` of the probes' disconnects.
PROBE_DETAIL = "check"

DESCRIPTION = (
    "Check the settings, then probe the backend at CALLBACK_URL with signed callbacks as the "
    "gateway sends them, and Redis at REDIS_URL (the primary the Sentinels name, or the Redis "
    "Cluster's state). Each line is ok, WARN or FAIL; the exit status "
    "is 0 without FAIL, 1 with one, 2 for an invalid setting."
)


@dataclass(frozen=True)
class Probe:
    """What one probe callback got: an HTTP ``status`` (None when no answer came), or the
    ``problem`` in words; ``location`` for a redirect; ``ms`` taken."""

    status: int | None
    body: bytes = b""
    location: str | None = None
    problem: str | None = None
    ms: float = 0.0

    @property
    def accepted(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def refused(self) -> bool:
        return self.status in (401, 403)

    def said(self) -> str:
        """The answer in words, for a line of output."""
        if self.status is None:
            return str(self.problem)
        text = "%d in %.0f ms" % (self.status, self.ms)
        return text + (" to %s" % self.location if self.location else "")


class Say:
    """Prints one labelled line: ``ok   ...``, ``WARN ...`` or ``FAIL ...``."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def __call__(self, label: str, text: str) -> None:
        print("%-4s %s" % (label, text), file=self.out, flush=True)


def post_callback(settings: Settings, body: bytes, signature: str | None) -> Probe:
    """POST ``body`` to ``CALLBACK_URL`` as the gateway posts a callback, with ``signature``
    as ``X-SSE-Signature`` (none if None); never follows a redirect, never raises."""
    assert settings.callback_url is not None
    parts = urlsplit(settings.callback_url)
    timeout = settings.callback_timeout_seconds
    conn_class = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    conn = conn_class(parts.hostname or "localhost", parts.port, timeout=timeout)
    headers = {
        "Content-Type": "application/json",
        IDEMPOTENCY_HEADER: str(uuid.uuid4()),
        "X-Request-ID": "tornado-sse-check",
    }
    if signature is not None:
        headers[signing.SIGNATURE_HEADER] = signature
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    started = time.monotonic()
    try:
        conn.request("POST", target, body=body, headers=headers)
        response = conn.getresponse()
        answer = response.read(64 * 1024)
    except TimeoutError:
        return Probe(None, problem="no answer within CALLBACK_TIMEOUT_SECONDS (%g s)" % timeout)
    except (OSError, http.client.HTTPException) as exc:
        where = "%s:%s" % (parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
        return Probe(None, problem="%s: %s" % (where, getattr(exc, "strerror", None) or exc))
    finally:
        conn.close()
    ms = 1000 * (time.monotonic() - started)
    return Probe(response.status, answer, response.getheader("Location"), ms=ms)


def _snapshot() -> protocol.RequestSnapshot:
    headers = {"user-agent": "tornado-sse-check", "x-request-id": "tornado-sse-check"}
    return protocol.RequestSnapshot(PROBE_URL, headers, "tornado-sse-check")


def _sign(settings: Settings, body: bytes) -> str | None:
    return signing.sign(body, settings.callback_secrets) if settings.callback_secrets else None


def _failure(settings: Settings, probe: Probe) -> str:
    """Why a refused disconnect probe means the gateway cannot work with this backend."""
    said = probe.said()
    if probe.status is None:
        return "the backend at CALLBACK_URL is unreachable: %s" % said
    if probe.refused:
        if settings.callback_secrets:
            return (
                "the backend refused a signed callback (%s): CALLBACK_SECRET does not match "
                "the secret the backend verifies with" % said
            )
        return (
            "the backend refused an unsigned callback (%s): it wants a signature; set "
            "CALLBACK_SECRET to the secret it verifies with" % said
        )
    if probe.status in (404, 405):
        return (
            "CALLBACK_URL answered a callback with %s: is the path the backend's callback "
            "route?" % said
        )
    if 300 <= probe.status < 400:
        return (
            "CALLBACK_URL redirects (%s): the gateway does not follow redirects; set "
            "CALLBACK_URL to where it leads" % said
        )
    return "the backend answered a disconnect callback with %s" % said


def check_backend(settings: Settings, say: Say) -> bool:
    """Probe ``CALLBACK_URL`` (see the module's docstring); print a line each. True unless a
    probe failed."""
    gone, connecting = PROBE_TOKENS
    request = _snapshot()
    body = protocol.disconnect_body(gone, "server_closed", request, PROBE_DETAIL)
    probe = post_callback(settings, body, _sign(settings, body))
    if not probe.accepted:
        say("FAIL", _failure(settings, probe))
        return False
    say("ok", "the backend at CALLBACK_URL answers callbacks (%s)" % probe.said())

    if settings.callback_secrets:
        forged = signing.sign(body, secrets.token_hex(16))
        probe = post_callback(settings, body, forged)
        if probe.accepted:
            say(
                "WARN",
                "the backend accepted a callback with a wrong signature (%s): it does not "
                "check X-SSE-Signature, so anyone who reaches it can forge callbacks"
                % probe.said(),
            )
        else:
            say("ok", "the backend refuses a wrongly signed callback (%s)" % probe.said())
    else:
        say("WARN", "CALLBACK_SECRET is not set: callbacks are not signed")

    body = protocol.connect_body(connecting, request)
    probe = post_callback(settings, body, _sign(settings, body))
    if probe.refused:
        say(
            "ok",
            "the backend refuses an anonymous stream (%s), as it should when it "
            "authenticates users" % probe.said(),
        )
        return True
    if not probe.accepted:
        say(
            "FAIL",
            "the backend answered a connect callback with %s: browsers would get "
            "that status" % probe.said(),
        )
        return False
    try:
        channels = protocol.parse_connect_answer(probe.body)
    except ValueError as exc:
        say("FAIL", "the backend's connect answer is not usable (streams get 502): %s" % exc)
        return False
    say(
        "ok",
        "the backend accepts an anonymous stream (%s, channels: %s)"
        % (probe.said(), ", ".join(channels) or "none"),
    )
    body = protocol.disconnect_body(connecting, "server_closed", request, PROBE_DETAIL)
    post_callback(settings, body, _sign(settings, body))
    return True


async def _probe_redis(url: str, timeout: float) -> str | None:
    try:
        import redis.asyncio as aioredis
    except ImportError:
        return "the redis package is not installed (pip install 'redis>=5.3')"
    client = aioredis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        await client.ping()
        return None
    except Exception as exc:  # any failure is an answer here
        return str(exc) or type(exc).__name__
    finally:
        await client.aclose()


async def _probe_sentinels(sentinels: str, master: str, timeout: float) -> tuple[str, str]:
    """Ask the Sentinels for ``master``'s primary and PING it: a label and a line."""
    from redis.asyncio.sentinel import Sentinel

    hosts = []
    for item in sentinels.split(","):
        host, _, port = item.strip().rpartition(":")
        hosts.append((host, int(port)))
    sentinel = Sentinel(hosts, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        host, port = await sentinel.discover_master(master)
    except Exception as exc:  # any failure is an answer here
        return "FAIL", "the Sentinels name no primary for %r: %s" % (master, exc)
    client = sentinel.master_for(master, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        await client.ping()
    except Exception as exc:
        return "FAIL", "the primary %s:%s the Sentinels name does not answer: %s" % (
            host,
            port,
            exc,
        )
    finally:
        await client.aclose()
        for one in sentinel.sentinels:
            await one.aclose()
    return "ok", "the Sentinels name %s:%s as primary of %r, and it answers PING" % (
        host,
        port,
        master,
    )


#: Slots of a Redis Cluster.
CLUSTER_SLOTS = 16384


async def _probe_cluster(urls: str, timeout: float) -> tuple[str, str]:
    """Ask a node of the Redis Cluster ``urls`` names for ``CLUSTER INFO``: ok when the state
    is ok and every slot is served, WARN when slots are failing, FAIL otherwise."""
    import redis.asyncio as aioredis

    problems = []
    for url in urls.split(","):
        client = aioredis.from_url(
            url.strip(), socket_connect_timeout=timeout, socket_timeout=timeout
        )
        try:
            info = await client.cluster("INFO")
        except Exception as exc:  # try the next node
            problems.append("%s: %s" % (url.strip(), str(exc) or type(exc).__name__))
            continue
        finally:
            await client.aclose()
        if isinstance(info, (bytes, str)):
            text = info.decode() if isinstance(info, bytes) else info
            info = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        state = str(info.get("cluster_state"))
        assigned = int(info.get("cluster_slots_assigned", 0))
        ok = int(info.get("cluster_slots_ok", 0))
        failing = int(info.get("cluster_slots_pfail", 0)) + int(info.get("cluster_slots_fail", 0))
        known = int(info.get("cluster_known_nodes", 0))
        if state != "ok" or assigned < CLUSTER_SLOTS:
            return "FAIL", (
                "the Redis Cluster is not usable: state %s, %d of %d slots assigned"
                % (state, assigned, CLUSTER_SLOTS)
            )
        if failing:
            return "WARN", "the Redis Cluster is ok but %d slots are failing" % failing
        return "ok", "the Redis Cluster is ok: %d of %d slots served, %d nodes" % (
            ok,
            CLUSTER_SLOTS,
            known,
        )
    return "FAIL", "no node of the Redis Cluster answers: %s" % "; ".join(problems)


def _descriptor_report(settings: Settings) -> tuple[str, str]:
    """The file descriptor limit against what ``MAX_CONNECTIONS`` needs: a label and a line."""
    limit, needed = descriptor_limit(), descriptors_needed(settings)
    if limit >= needed:
        return (
            "ok",
            "the file descriptor limit (%d) covers MAX_CONNECTIONS=%d (about %d needed)"
            % (
                limit,
                settings.max_connections,
                needed,
            ),
        )
    fitting = max(0, settings.max_connections - (needed - limit))
    return "WARN", (
        "the file descriptor limit (%d) is below the %d that MAX_CONNECTIONS=%d needs: "
        "raise it (ulimit -n, LimitNOFILE=) or set MAX_CONNECTIONS to %d at most"
        % (limit, needed, settings.max_connections, fitting)
    )


def run_checks(settings: Settings, out: TextIO = sys.stdout) -> bool:
    """Check ``settings``, the backend and Redis; print a line each. True unless one failed."""
    say = Say(out)
    good = True
    say(
        "ok",
        "configuration is valid (port %d, prefix %s)" % (settings.port, settings.sse_path_prefix),
    )
    if not settings.callback_url and settings.jwt_configured:
        say("ok", "CALLBACK_URL is not set: only streams with a JWT can open")
    elif not settings.callback_url:
        say("FAIL", "CALLBACK_URL is not set: every stream would be refused with 503")
        good = False
    else:
        good = check_backend(settings, say) and good
    timeout = min(settings.callback_timeout_seconds, 5.0)
    if settings.redis_sentinels and settings.redis_sentinel_master:
        label, line = asyncio.run(
            _probe_sentinels(settings.redis_sentinels, settings.redis_sentinel_master, timeout)
        )
        say(label, line)
        good = good and label != "FAIL"
    elif settings.redis_cluster and settings.redis_url:
        label, line = asyncio.run(_probe_cluster(settings.redis_url, timeout))
        say(label, line)
        good = good and label != "FAIL"
    elif settings.redis_url:
        problem = asyncio.run(_probe_redis(settings.redis_url, timeout))
        if problem is None:
            say("ok", "Redis at REDIS_URL answers PING")
        else:
            say("FAIL", "Redis at REDIS_URL is unreachable: %s" % problem)
            good = False
    say(*_descriptor_report(settings))
    if settings.internal_port is None and settings.internal_secret is None:
        say(
            "WARN",
            "the internal API is public on port %d without INTERNAL_SECRET: anyone who reaches "
            "it can push events to every stream" % settings.port,
        )
    return good


def main(argv: Sequence[str]) -> int:
    """Entry point of ``tornado-sse check``."""
    try:
        settings = parse(argv, prog="tornado-sse check", description=DESCRIPTION)
    except ConfigError as exc:
        print("FAIL %s" % exc)
        return 2
    return 0 if run_checks(settings) else 1
