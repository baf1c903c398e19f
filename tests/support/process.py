"""A gateway in a process of its own (``python -m tornado_sse``), for signals, exit codes and RSS.

:func:`start_gateway` starts it on an unused loopback port and returns once its log says it is
listening. The test ends it by its PID (SIGTERM, then SIGKILL if it does not exit).
:func:`run_command` runs a command of ``python -m tornado_sse`` to its end instead.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tornado.httpclient import AsyncHTTPClient

from .ports import unused_port
from .raw_http import Headers
from .sse_client import SSEStream, open_stream

#: This checkout's import roots: the gateway's package, and the client's distribution folder.
SOURCE_ROOTS = (
    str(Path(__file__).resolve().parents[2]),
    str(Path(__file__).resolve().parents[2] / "clients" / "python"),
)


def python_path(env: dict[str, str]) -> str:
    """The ``PYTHONPATH`` of a child process: what ``env`` gives, then this checkout's roots, so
    that a test may add a directory without losing the code under test."""
    given = [env["PYTHONPATH"]] if env.get("PYTHONPATH") else []
    return os.pathsep.join([*given, *SOURCE_ROOTS])


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid``, from ``/proc``."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS for pid %d" % pid)


@dataclass
class ChildProcess:
    """A server started by a test, with its stderr lines in :attr:`log`.

    A gateway process is driven like the ``gateway`` fixture's gateways, with :meth:`stream`
    and :meth:`send`.
    """

    process: asyncio.subprocess.Process
    port: int
    log: list[str]
    pump: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def base_url(self) -> str:
        return "http://127.0.0.1:%d" % self.port

    async def stream(self, path: str = "/sse/test", headers: Headers | None = None) -> SSEStream:
        """Open a stream on this (gateway) process's port, any status; the caller closes it."""
        return await open_stream(self.port, path, headers)

    async def send(self, body: Any) -> tuple[int, Any]:
        """POST ``body`` as JSON to ``/internal/send`` on this (gateway) process's port, as a
        backend does: (status, decoded JSON answer)."""
        response = await AsyncHTTPClient().fetch(
            self.base_url + "/internal/send",
            method="POST",
            body=json.dumps(body),
            headers={"Content-Type": "application/json"},
            raise_error=False,
        )
        return response.code, json.loads(response.body)

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.process.send_signal(sig)

    async def wait(self, timeout: float) -> int:
        """Wait for the exit status."""
        return await asyncio.wait_for(self.process.wait(), timeout)

    async def stop(self) -> None:
        """End the process by its PID if it still runs (SIGTERM, then SIGKILL)."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        if self.pump is not None:
            self.pump.cancel()


#: The gateway's own process type, for annotations.
GatewayProcess = ChildProcess


def descriptor_limit(limit: int | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` that lowers the child's soft file descriptor limit to ``limit``
    (``None``: leave it)."""
    if limit is None:
        return None

    def lower() -> None:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))

    return lower


async def start_process(
    argv: Sequence[str],
    *,
    port: int,
    ready: Callable[[str], bool],
    env: dict[str, str] | None = None,
    what: str = "the server",
    timeout: float = 15.0,
    fd_limit: int | None = None,
) -> ChildProcess:
    """Start ``argv`` and return once a stderr line satisfies ``ready`` (AssertionError with
    the log if it exits or ``timeout`` passes first). ``fd_limit`` lowers its soft limit on
    open file descriptors."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        env={
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
            "PYTHONPATH": python_path({**os.environ, **(env or {})}),
        },
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=descriptor_limit(fd_limit),
    )
    log: list[str] = []
    started = asyncio.Event()

    async def pump() -> None:
        assert process.stderr is not None
        while line := await process.stderr.readline():
            text = line.decode("utf-8", "replace").rstrip()
            log.append(text)
            if ready(text):
                started.set()

    child = ChildProcess(process, port, log, asyncio.ensure_future(pump()))
    waiters = {asyncio.ensure_future(started.wait()), asyncio.ensure_future(process.wait())}
    _, pending = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    for waiter in pending:
        waiter.cancel()
    if not started.is_set():
        await child.stop()
        raise AssertionError("%s did not start:\n%s" % (what, "\n".join(log)))
    return child


async def start_gateway(
    env: dict[str, str], *args: str, timeout: float = 15.0, fd_limit: int | None = None
) -> ChildProcess:
    """Start ``python -m tornado_sse`` on an unused loopback port with ``env`` added (and its
    file descriptor limit lowered to ``fd_limit``)."""
    port = unused_port()
    return await start_process(
        [sys.executable, "-m", "tornado_sse", *args],
        port=port,
        env={"PORT": str(port), "HOST": "127.0.0.1", **env},
        ready=lambda line: " listening " in line or '"listening' in line,
        what="the gateway",
        timeout=timeout,
        fd_limit=fd_limit,
    )


def run_command(
    args: Sequence[str], env: dict[str, str], fd_limit: int | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m tornado_sse *args`` to its end (at most 30 s) with ``env``, a bare
    ``PATH`` and this checkout on ``PYTHONPATH`` (after any that ``env`` gives) as its whole
    environment, and ``fd_limit`` as its soft file descriptor limit if given; its stdout and
    stderr are captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "tornado_sse", *args],
        env={"PATH": "/usr/bin:/bin", **env, "PYTHONPATH": python_path(env)},
        capture_output=True,
        text=True,
        timeout=30,
        preexec_fn=descriptor_limit(fd_limit),
    )
