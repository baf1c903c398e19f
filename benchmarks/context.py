"""What a scenario runs against, as the load generator sees it: the server under test, the mock
backend, CPU windows over them, and the profiler.

Both :mod:`benchmarks.loadgen` (which builds a :class:`Context` from the runner's spec) and
:mod:`benchmarks.scenarios` (which take one) import this module; it imports neither.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from typing import Any

from . import procstat
from .wire import get_json

GATEWAY = "tornado_sse"
NCHAN = "nchan"


class Window:
    """A CPU window over the server (``target``), the backend, this process (``loadgen``) and
    the whole machine (``foreign``: what other processes used, in percent of one core)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self._w = procstat.CPUWindow(pids)
        self._w.start()

    def stop(self) -> dict[str, float]:
        return finish(self._w.stop())


def finish(cpu: dict[str, float]) -> dict[str, float]:
    """Rename ``self`` to ``loadgen`` and add ``foreign_cpu_pct``."""
    out = {k.replace("self_", "loadgen_", 1): v for k, v in cpu.items()}
    ours = sum(out.get(k, 0.0) for k in ("target_cpu_pct", "backend_cpu_pct", "loadgen_cpu_pct"))
    ncpu = os.cpu_count() or 1
    out["foreign_cpu_pct"] = max(0.0, out.get("machine_busy_pct", 0.0) * ncpu - ours)
    return out


class Context:
    """What a scenario needs: how to address streams and sends on this target, and counters."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.target: str = spec["target"]
        #: What kind of server the target is (``tornado_sse`` for every revision of it, or
        #: ``nchan``); the target's name may say more (``tornado_sse@c956e5f``).
        self.kind: str = spec.get("kind", self.target)
        self.host: str = spec.get("host", "127.0.0.1")
        self.port: int = spec["port"]
        self.pid: int = spec["pid"]
        self.backend_port: int = spec["backend_port"]
        self.backend_pid: int = spec["backend_pid"]
        self.tag: str = spec.get("tag", "b")
        self.profile: dict[str, Any] | None = spec.get("profile")
        self._profiler: subprocess.Popen[bytes] | None = None

    @property
    def gateway(self) -> bool:
        return self.kind == GATEWAY

    @property
    def has_batches(self) -> bool:
        return self.gateway

    @property
    def has_socket(self) -> bool:
        """Whether the target has a publish socket (``/internal/ws``)."""
        return self.gateway

    # -- addressing ------------------------------------------------------------------------------

    def stream_path(self, i: int | str, channel: str | None = None, auth: bool = False) -> str:
        """The URL of stream ``i``. On the gateway ``channel`` goes to the backend, which
        subscribes the stream; on nchan it is the channel in the URL (``auth``: the location
        that calls the backend first)."""
        if self.gateway:
            path = "/sse/%s/%s" % (self.tag, i)
            return path + ("?ch=" + channel if channel else "")
        name = channel or "%s-%s" % (self.tag, i)
        return "/%s/%s" % ("authsub" if auth else "sub", name)

    def own_channel(self, i: int) -> str | None:
        """What addresses stream ``i`` alone: its token on the gateway (no channel needed), a
        channel of its own on nchan."""
        return None if self.gateway else "u%s-%d" % (self.tag, i)

    def shared_channel(self, name: str) -> str:
        return "%s-%s" % (name, self.tag)

    async def unicast_keys(self, paths: list[str]) -> list[str]:
        """Per stream, what a unicast send names: the token (from the backend) or the channel."""
        if not self.gateway:
            return [p.rsplit("/", 1)[1] for p in paths]
        found = await get_json(self.host, self.backend_port, "/tokens?prefix=/sse/%s/" % self.tag)
        assert isinstance(found, dict)
        return [found[p] for p in paths]

    def unicast_request(self, key: str, seq: int) -> tuple[str, bytes, bytes]:
        if self.gateway:
            body = '{"token":"%s","event":{"data":"%d"}}' % (key, seq)
            return "/internal/send", body.encode(), b"application/json"
        return "/pub/" + key, b"%d" % seq, b"text/plain"

    def publish_request(self, channel: str, seq: int) -> tuple[str, bytes, bytes]:
        if self.gateway:
            body = '{"channel":"%s","event":{"data":"%d"}}' % (channel, seq)
            return "/internal/send", body.encode(), b"application/json"
        return "/pub/" + channel, b"%d" % seq, b"text/plain"

    def ok(self, status: int) -> bool:
        return status == 200 if self.gateway else status in (200, 201, 202)

    # -- counters --------------------------------------------------------------------------------

    async def backend_stats(self) -> dict[str, Any]:
        stats = await get_json(self.host, self.backend_port, "/stats")
        assert isinstance(stats, dict)
        if self.gateway:
            stats["connects_seen"], stats["disconnects_seen"] = (
                stats["connects"],
                stats["disconnects"],
            )
        else:
            stats["connects_seen"], stats["disconnects_seen"] = (
                stats["nchan_connects"],
                stats["nchan_disconnects"],
            )
        return stats

    def cpu_window(self) -> Window:
        return Window({"target": self.pid, "backend": self.backend_pid})

    # -- profiling (py-spy attached to the server for the measured phase) -------------------

    async def profile_start(self) -> None:
        if not self.profile or self._profiler is not None:
            return
        argv = [
            self.profile.get("py_spy", "py-spy"),
            "record",
            "--nolineno",
            "--format",
            "raw",
            "--rate",
            str(self.profile.get("rate", 250)),
            "--pid",
            str(self.pid),
            "--output",
            self.profile["out"],
        ]
        if not self.profile.get("blocking"):
            argv.insert(2, "--nonblocking")
        self._profiler = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        await asyncio.sleep(1.0)

    async def profile_stop(self) -> None:
        proc, self._profiler = self._profiler, None
        if proc is None:
            return
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGINT)
        for _ in range(200):
            if proc.poll() is not None:
                return
            await asyncio.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
