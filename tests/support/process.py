"""A gateway in a process of its own (``python -m tornado_sse``), for signals, exit codes and RSS.

:func:`start_gateway` starts it on an unused loopback port and returns once its log says it is
listening. The test ends it by its PID (SIGTERM, then SIGKILL if it does not exit).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from dataclasses import dataclass

from tornado.testing import bind_unused_port


def unused_port() -> int:
    sock, port = bind_unused_port()
    sock.close()
    return port


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid``, from ``/proc``."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS for pid %d" % pid)


@dataclass
class GatewayProcess:
    process: asyncio.subprocess.Process
    port: int
    log: list[str]

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def base_url(self) -> str:
        return "http://127.0.0.1:%d" % self.port

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.process.send_signal(sig)

    async def wait(self, timeout: float) -> int:
        """Wait for the exit status."""
        return await asyncio.wait_for(self.process.wait(), timeout)

    async def stop(self) -> None:
        """End the process if it still runs (SIGTERM, then SIGKILL)."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except asyncio.TimeoutError:
                self.process.kill()
                await self.process.wait()
        self._pump.cancel()

    _pump: asyncio.Task[None] = None  # type: ignore[assignment]


async def start_gateway(env: dict[str, str], *args: str, timeout: float = 15.0) -> GatewayProcess:
    """Start ``python -m tornado_sse`` with ``env`` added to the environment."""
    port = unused_port()
    full_env = dict(os.environ, PORT=str(port), HOST="127.0.0.1", PYTHONUNBUFFERED="1", **env)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tornado_sse",
        *args,
        env=full_env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    log: list[str] = []
    listening = asyncio.Event()

    async def pump() -> None:
        assert process.stderr is not None
        while True:
            line = await process.stderr.readline()
            if not line:
                return
            text = line.decode("utf-8", "replace").rstrip()
            log.append(text)
            if " listening " in text or '"listening' in text:
                listening.set()

    gateway = GatewayProcess(process, port, log)
    gateway._pump = asyncio.ensure_future(pump())
    try:
        await asyncio.wait_for(listening.wait(), timeout)
    except asyncio.TimeoutError:
        await gateway.stop()
        raise AssertionError("the gateway did not start:\n" + "\n".join(log)) from None
    return gateway
