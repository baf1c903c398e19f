"""The servers under test, each a child process started and stopped by PID.

:class:`Gateway` runs ``python -m tornado_sse`` (of the current tree, or of another revision
from a :class:`Checkout`); :class:`Nchan` writes an nginx config into a temporary directory and
runs ``nginx -p DIR -c CONF -g 'daemon off;'`` with the nchan module (one worker).
:class:`MockBackend` is the backend both call back; :class:`Redis` is a ``redis-server`` for
gateways that share one. ``measure_pid`` is the process
whose RSS and CPU are measured: the gateway itself, or nginx's single worker.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence

from . import procstat

#: The repository root: children run from there, so ``-m benchmarks.*`` always resolves.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

NCHAN_MODULE_PATHS = (
    "/usr/lib/nginx/modules/ngx_nchan_module.so",
    "/usr/share/nginx/modules/ngx_nchan_module.so",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinner(cpu: int | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` that pins the child (and its children) to ``cpu``."""
    if cpu is None:
        return None

    def pin() -> None:
        os.sched_setaffinity(0, {cpu})

    return pin


def _answers_200(port: int, path: str) -> bool:
    """Whether ``GET path`` on the loopback ``port`` answers 200 right now."""
    head = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"GET %s HTTP/1.0\r\n\r\n" % path.encode())
            while len(head) < 12:  # "HTTP/1.1 200"
                chunk = s.recv(12 - len(head))
                if not chunk:
                    break
                head += chunk
    except OSError:
        return False
    return head[9:12] == b"200"


def _wait_ready(
    name: str, port: int, path: str, proc: subprocess.Popen[bytes], log: str, timeout: float = 20.0
) -> None:
    """Wait until ``GET path`` answers 200; RuntimeError if ``proc`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("%s exited with %s:\n%s" % (name, proc.returncode, _tail(log)))
        if _answers_200(port, path):
            return
        time.sleep(0.05)
    raise RuntimeError(
        "%s: no 200 for %s on port %d after %.0fs:\n%s" % (name, path, port, timeout, _tail(log))
    )


def _tail(path: str, lines: int = 20) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def _stop(proc: subprocess.Popen[bytes] | None, sig: int, timeout: float) -> int | None:
    """Signal ``proc`` (by its PID) and wait; SIGKILL it if it is still there after ``timeout``.

    Returns its exit status (negative: the signal that ended it), or None if there was no
    process or it had to be killed.
    """
    if proc is None:
        return None
    if proc.poll() is not None:
        return proc.returncode
    os.kill(proc.pid, sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)
        return None


class Process:
    """Common part of the children: a work dir for logs, start/stop by PID.

    A child counts as started once ``GET ready_path`` on its port answers 200.
    """

    name = "process"
    ready_path = "/healthz"

    def __init__(self, workdir: str, cpu: int | None) -> None:
        self.workdir = workdir
        self.cpu = cpu
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = ""
        #: The directory the child runs in.
        self.cwd = ROOT

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def measure_pid(self) -> int:
        return self.pid

    def _spawn(self, argv: list[str], env: dict[str, str] | None, tag: str) -> None:
        self.log = os.path.join(self.workdir, "%s-%d.log" % (tag, time.monotonic_ns()))
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=pinner(self.cpu),
                cwd=self.cwd,
            )

    def _ready(self) -> None:
        """Wait until the child answers 200 on its port; stop it if it never does."""
        assert self.proc is not None
        try:
            _wait_ready(self.name, self.port, self.ready_path, self.proc, self.log)
        except BaseException:
            self.stop()
            raise

    def log_lines(self) -> list[str]:
        """What the child wrote to stdout and stderr so far, line by line."""
        try:
            with open(self.log, encoding="utf-8", errors="replace") as f:
                return f.read().splitlines()
        except OSError:
            return []

    def stop(self) -> int | None:
        """SIGTERM, SIGKILL after 40 s; the exit status (see :func:`_stop`). Once stopped,
        stopping again does nothing and returns None."""
        status = _stop(self.proc, signal.SIGTERM, 40.0)
        self.proc = None
        return status


class MockBackend(Process):
    """``python -m benchmarks.backend``: ``channels`` for connects whose URL names none, and a
    hello event sent to each new token through ``hello_url`` (see :mod:`benchmarks.backend`)."""

    name = "backend"

    def __init__(
        self,
        workdir: str,
        cpu: int | None,
        uvloop: bool = True,
        hello_url: str | None = None,
        channels: Sequence[str] = (),
    ) -> None:
        super().__init__(workdir, cpu)
        self.uvloop = uvloop
        self.hello_url = hello_url
        self.channels = list(channels)

    def start(self) -> None:
        self.port = free_port()
        argv = [sys.executable, "-m", "benchmarks.backend", "--port", str(self.port)]
        if not self.uvloop:
            argv.append("--no-uvloop")
        if self.channels:
            argv += ["--channels", ",".join(self.channels)]
        if self.hello_url:
            argv += ["--hello-url", self.hello_url]
        self._spawn(argv, None, "backend")
        self._ready()


#: The gateway's environment variables that a :class:`Gateway` started with ``defaults`` does
#: not inherit from this process.
GATEWAY_SETTINGS = (
    "PORT",
    "HOST",
    "CALLBACK_URL",
    "HEARTBEAT_INTERVAL_SECONDS",
    "CALLBACK_TIMEOUT_SECONDS",
    "CALLBACK_MAX_CLIENTS",
    "CALLBACK_SECRET",
    "SSE_PATH_PREFIX",
    "CORS_ORIGINS",
    "INTERNAL_PORT",
    "INTERNAL_SECRET",
    "MAX_PENDING_EVENTS",
    "MAX_BODY_BYTES",
    "MAX_HEADER_BYTES",
    "MAX_CONNECTIONS",
    "MAX_QUEUED_BYTES",
    "HISTORY_SIZE",
    "HISTORY_TTL_SECONDS",
    "SHUTDOWN_TIMEOUT_SECONDS",
    "RETRY_ON_UNAVAILABLE",
    "MAX_CONNECTS_PER_SECOND",
    "JWT_SECRET",
    "JWT_PUBLIC_KEY",
    "JWT_AUDIENCE",
    "JWT_ISSUER",
    "REDIS_URL",
    "PROCESSES",
    "WEB_CONCURRENCY",
    "LOG_FORMAT",
    "LOG_LEVEL",
)


class Checkout:
    """The files of one git revision of this repository, in a temporary directory of their own
    (``git archive``, so the repository's worktree list is left alone), for running that
    revision's gateway beside the current tree with the same installed dependencies.

    ``rev`` is anything ``git rev-parse`` takes; :meth:`create` raises ``ValueError`` for a
    name that is not a commit of this repository. :meth:`missing` says which installed package
    the revision needs and this environment lacks. :meth:`remove` deletes the directory.
    """

    def __init__(self, rev: str) -> None:
        self.rev = rev
        self.commit = ""
        self.path = ""

    @property
    def label(self) -> str:
        """How tables name this revision: the name it was given, or the commit's first 9 digits
        when the name would not fit in a column."""
        return self.rev if len(self.rev) <= 12 else self.commit[:9]

    def create(self, parent: str | None = None) -> None:
        """Resolve ``rev`` and write its files under a new directory in ``parent``."""
        found = subprocess.run(
            ["git", "-C", ROOT, "rev-parse", "--verify", "--quiet", self.rev + "^{commit}"],
            capture_output=True,
            text=True,
            check=False,
        )
        if found.returncode != 0:
            raise ValueError("%r is not a commit of the repository at %s" % (self.rev, ROOT))
        self.commit = found.stdout.strip()
        archive = subprocess.run(
            ["git", "-C", ROOT, "archive", "--format=tar", self.commit],
            capture_output=True,
            check=True,
        )
        self.path = tempfile.mkdtemp(prefix="sse-rev-%s-" % self.commit[:9], dir=parent)
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(self.path, filter="data")

    def missing(self) -> str | None:
        """Import every module of the revision's ``tornado_sse`` the way its gateway will run
        (``PYTHONPATH`` set to the checkout). None when all import from the checkout; else one
        line saying what is missing, e.g. that a package must be installed."""
        done = subprocess.run(
            [sys.executable, "-c", _IMPORT_CHECK],
            cwd=self.path,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        try:
            answer = json.loads(done.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            return "revision %s: its modules could not be imported:\n%s" % (
                self.rev,
                done.stderr[-2000:],
            )
        if answer.get("missing"):
            return (
                "revision %s (%s) needs the package %r (imported by %s), which this environment "
                "lacks: install it (pip install %s) and run again"
                % (
                    self.rev,
                    self.commit[:9],
                    answer["missing"],
                    answer["module"],
                    answer["missing"],
                )
            )
        if answer.get("error"):
            return "revision %s: %s failed to import: %s" % (
                self.rev,
                answer["module"],
                answer["error"],
            )
        if not os.path.realpath(answer["file"]).startswith(os.path.realpath(self.path) + os.sep):
            return "revision %s: tornado_sse was imported from %s, not from its checkout" % (
                self.rev,
                answer["file"],
            )
        return None

    def env(self) -> dict[str, str]:
        """This process's environment with the checkout first on ``PYTHONPATH``."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (self.path, env.get("PYTHONPATH")) if p)
        return env

    def remove(self) -> None:
        if self.path:
            shutil.rmtree(self.path, ignore_errors=True)
            self.path = ""


#: Run by :meth:`Checkout.missing` in the checkout: imports every module of ``tornado_sse`` and
#: prints one JSON line: ``{"file": ...}``, or what failed.
_IMPORT_CHECK = """\
import importlib, json, pkgutil, sys
try:
    import tornado_sse
    for m in pkgutil.walk_packages(tornado_sse.__path__, "tornado_sse."):
        if not m.name.endswith("__main__"):
            name = m.name
            importlib.import_module(name)
except ModuleNotFoundError as exc:
    print(json.dumps({"missing": exc.name, "module": locals().get("name", "tornado_sse")}))
except Exception as exc:
    print(json.dumps({"error": repr(exc), "module": locals().get("name", "tornado_sse")}))
else:
    print(json.dumps({"file": tornado_sse.__file__}))
"""


class Gateway(Process):
    """tornado_sse, configured through its environment variables.

    It inherits this process's environment (without :data:`GATEWAY_SETTINGS` when
    ``defaults`` is set, so that every setting not named here has the gateway's default), then
    gets ``PORT`` (``port``, or a free one when 0), ``HOST=127.0.0.1``, ``CALLBACK_URL`` (the
    mock backend on ``backend_port``), ``LOG_LEVEL=warning``, and last ``settings``. It counts
    as started once ``ready_path`` answers 200.

    With ``source`` (a created :class:`Checkout`) it runs that revision's gateway: from the
    checkout's directory, with the checkout first on ``PYTHONPATH``.
    """

    name = "tornado_sse"

    def __init__(
        self,
        workdir: str,
        cpu: int | None,
        backend_port: int,
        settings: dict[str, str] | None = None,
        *,
        port: int = 0,
        defaults: bool = False,
        ready_path: str = "/healthz",
        source: Checkout | None = None,
        wrapper: Sequence[str] = (),
    ) -> None:
        super().__init__(workdir, cpu)
        #: A command the gateway runs under (``valgrind ...``), or none.
        self.wrapper = list(wrapper)
        self.backend_port = backend_port
        self.settings = settings or {}
        self.requested_port = port
        self.defaults = defaults
        self.ready_path = ready_path
        self.source = source
        if source is not None:
            self.name = "tornado_sse@%s" % source.label
            self.cwd = source.path

    def env(self) -> dict[str, str]:
        base = self.source.env() if self.source is not None else dict(os.environ)
        if self.defaults:
            env = {k: v for k, v in base.items() if k not in GATEWAY_SETTINGS}
        else:
            env = base
        env.update(
            {
                "PORT": str(self.port),
                "HOST": "127.0.0.1",
                "CALLBACK_URL": "http://127.0.0.1:%d/callback" % self.backend_port,
                "LOG_LEVEL": "warning",
            }
        )
        env.update(self.settings)
        return env

    def start(self) -> None:
        self.port = self.requested_port or free_port()
        self._spawn([*self.wrapper, sys.executable, "-m", "tornado_sse"], self.env(), "gateway")
        self._ready()


def redis_binary() -> str | None:
    """Path of ``redis-server``, or None if it is not installed."""
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )


class Redis(Process):
    """``redis-server`` on a free loopback port, in memory only (no RDB, no AOF), so every
    start is an empty store. :attr:`url` is its ``REDIS_URL``; :meth:`command` sends it one
    command."""

    name = "redis-server"

    @property
    def url(self) -> str:
        return "redis://127.0.0.1:%d/0" % self.port

    def start(self) -> None:
        binary = redis_binary()
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install -y redis-server)")
        self.port = free_port()
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--dir", self.workdir]
        self._spawn(argv, None, "redis")
        assert self.proc is not None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("redis-server exited:\n%s" % _tail(self.log))
            try:
                if self.command("PING") == "PONG":
                    return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not answer PING:\n%s" % _tail(self.log))

    def command(self, *args: str) -> object:
        """Send one command and return its reply: str, int, None, or a list of those.
        RuntimeError for an error reply."""
        request = b"*%d\r\n" % len(args)
        for arg in args:
            raw = arg.encode()
            request += b"$%d\r\n%b\r\n" % (len(raw), raw)
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(request)
            return _resp_reply(sock.makefile("rb"))


def _resp_reply(f: io.BufferedIOBase) -> object:
    """One RESP2 reply read from ``f``."""
    line = f.readline()
    if not line.endswith(b"\r\n"):
        raise OSError("redis-server closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RuntimeError("redis-server: %s" % rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        if size < 0:
            return None
        return f.read(size + 2)[:-2].decode(errors="replace")
    if kind == b"*":
        count = int(rest)
        return None if count < 0 else [_resp_reply(f) for _ in range(count)]
    raise OSError("unexpected reply from redis-server: %r" % line[:40])


def nchan_module() -> str | None:
    """Path of the nchan dynamic module, or None if it is not installed."""
    for path in NCHAN_MODULE_PATHS:
        if os.path.exists(path):
            return path
    return None


def nginx_binary() -> str | None:
    return (
        shutil.which("nginx") or (os.path.exists("/usr/sbin/nginx") and "/usr/sbin/nginx") or None
    )


NGINX_CONF = """\
load_module {module};
worker_processes 1;
worker_rlimit_nofile 20000;
error_log {dir}/error.log warn;
pid {dir}/nginx.pid;

events {{
    worker_connections 20000;
    multi_accept off;
}}

http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_timeout 120s;
    keepalive_requests 100000000;
    nchan_shared_memory_size 256M;
    nchan_message_timeout 300s;

    upstream backend {{
        server 127.0.0.1:{backend_port};
        keepalive 100;
    }}

    server {{
        listen 127.0.0.1:{port} backlog=128;

        # Streams: one EventSource subscriber per connection, channel id from the URL.
        location ~ ^/sub/(.+)$ {{
            nchan_subscriber eventsource;
            nchan_channel_id $1;
            nchan_subscriber_first_message newest;
            nchan_eventsource_ping_interval {ping};
            nchan_eventsource_ping_comment "heartbeat";
            nchan_eventsource_ping_event "";
            nchan_eventsource_ping_data "";
        }}

        # The same, authorised by the backend before it opens (the closest thing nchan has to
        # a connect callback) and reported to it when it closes.
        location ~ ^/authsub/(.+)$ {{
            nchan_subscriber eventsource;
            nchan_channel_id $1;
            nchan_subscriber_first_message newest;
            nchan_eventsource_ping_interval {ping};
            nchan_eventsource_ping_comment "heartbeat";
            nchan_eventsource_ping_event "";
            nchan_eventsource_ping_data "";
            nchan_authorize_request /_auth;
            nchan_unsubscribe_request /_unsub;
        }}

        location = /_auth {{
            internal;
            proxy_pass http://backend/nchan/auth;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-URI $request_uri;
        }}

        location = /_unsub {{
            internal;
            proxy_pass http://backend/nchan/unsub;
            proxy_ignore_client_abort on;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Original-URI $request_uri;
        }}

        # Publishes: POST /pub/<channel> with the event data as the body.
        location ~ ^/pub/(.+)$ {{
            nchan_publisher http;
            nchan_channel_id $1;
        }}

        location = /healthz {{
            return 200 "ok";
        }}
    }}
}}
"""


class Nchan(Process):
    """nginx + nchan with one worker; ``measure_pid`` is the worker."""

    name = "nchan"

    def __init__(self, workdir: str, cpu: int | None, backend_port: int, heartbeat: float) -> None:
        super().__init__(workdir, cpu)
        self.backend_port = backend_port
        self.heartbeat = heartbeat
        self.dir = ""
        self.worker = 0

    @property
    def measure_pid(self) -> int:
        return self.worker

    def config(self) -> str:
        module = nchan_module()
        assert module is not None
        return NGINX_CONF.format(
            module=module,
            dir=self.dir,
            port=self.port,
            backend_port=self.backend_port,
            ping=max(1, round(self.heartbeat)),
        )

    def start(self) -> None:
        nginx = nginx_binary()
        assert nginx is not None
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="nchan-", dir=self.workdir)
        conf = os.path.join(self.dir, "nginx.conf")
        with open(conf, "w", encoding="ascii") as f:
            f.write(self.config())
        argv = [nginx, "-p", self.dir, "-e", os.path.join(self.dir, "error.log"), "-c", conf]
        self._spawn(argv + ["-g", "daemon off;"], None, "nginx")
        self._ready()
        assert self.proc is not None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            kids = procstat.children(self.proc.pid)
            if kids:
                self.worker = kids[0]
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("nginx started no worker:\n%s" % _tail(self.log))

    def stop(self) -> int | None:
        # SIGTERM is nginx's fast shutdown: it does not wait for the held streams.
        status = _stop(self.proc, signal.SIGTERM, 20.0)
        self.proc = None
        return status


def nchan_available() -> tuple[bool, str]:
    """Whether the baseline can run here, and if not, why."""
    if nginx_binary() is None:
        return False, "nginx is not installed"
    if nchan_module() is None:
        return False, "the nchan module (Debian: libnginx-mod-nchan) is not installed"
    return True, ""


def nginx_version() -> str:
    nginx = nginx_binary()
    if nginx is None:
        return "not installed"
    out = subprocess.run([nginx, "-v"], capture_output=True, text=True, check=False)
    return (out.stderr or out.stdout).strip().split("/")[-1]


def nchan_version() -> str:
    """The Debian package version of the nchan module, when dpkg knows it."""
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", "libnginx-mod-nchan"],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() or ("installed" if nchan_module() else "not installed")
