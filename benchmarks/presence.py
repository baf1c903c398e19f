"""Presence benchmarks: how fast ``/internal/presence`` answers for a big channel, and what the
join/leave bookkeeping adds to the cost of a connect.

``python -m benchmarks.presence [--members 10000] [--connects 2000] [--runs 3] [--broker both]``

- **presence**: a channel with ``--members`` users (each counted through the broker's
  ``enter``, the same call a stream makes when it opens), then 30 ``GET /internal/presence``
  over HTTP on loopback; the median and the worst are reported. Goal: under 50 ms.
- **connects**: ``--connects`` streams opened (50 connects in flight), each closed once open,
  against a gateway with ``PRESENCE_EVENTS`` on their channels (20 channels), once anonymous
  (counted, never announced) and once each as a user of its own (counted for the per-user
  limit, a join decided and published, a leave after the delay); connects/s of
  each, in interleaved runs (anonymous, user, anonymous, user, ...) so both see the same
  machine. Goal: users cost under 10 % more.

The gateway, its backend and the load generator share this one process (an in-process gateway
on loopback); with ``--broker redis`` a ``redis-server`` child on an unused port is used. The
figures are only comparable with each other, on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

from tornado.httpclient import AsyncHTTPClient
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.web import Application, RequestHandler

from tornado_sse.app import make_app
from tornado_sse.config import Settings

from .wire import open_stream

GOAL_PRESENCE_MS = 50.0
GOAL_OVERHEAD = 0.10
#: Channels the connect benchmark's streams are spread over.
CHANNELS = 20


class ConnectAnswer(RequestHandler):
    """The benchmark's backend: ``/sse/<user or ->/<n>`` is that user (``-``: anonymous) on
    channel ``room.<n mod 20>``."""

    def post(self) -> None:
        body = json.loads(self.request.body)
        if body["action"] != "connect":
            self.finish({})
            return
        _, _, user, n = body["request"]["url"].split("/")
        answer: dict[str, Any] = {"channels": ["room.%d" % (int(n) % CHANNELS)]}
        if user != "-":
            answer["user"] = user
            answer["info"] = {"name": user}
        self.finish(answer)


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Redis:
    """A throwaway redis-server on an unused loopback port."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is needed for --broker redis")
        self.port = unused_port()
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return "redis://127.0.0.1:%d/0" % self.port

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(10)


async def start_gateway(redis_url: str | None) -> tuple[Any, HTTPServer, HTTPServer, int]:
    backend_sockets = bind_sockets(0, "127.0.0.1")
    backend = HTTPServer(Application([(r"/.*", ConnectAnswer)]))
    backend.add_sockets(backend_sockets)
    settings = Settings(
        address="127.0.0.1",
        callback_url="http://127.0.0.1:%d/cb" % backend_sockets[0].getsockname()[1],
        heartbeat_interval_seconds=60,
        redis_url=redis_url,
        presence_events="room.*",
        presence_leave_delay_seconds=0.2,
        max_connections=100000,
    )
    app = make_app(settings)
    sockets = bind_sockets(0, "127.0.0.1")
    server = HTTPServer(app)
    server.add_sockets(sockets)
    app.gateway.start()
    for _ in range(500):
        if app.gateway.broker.ready:
            break
        await asyncio.sleep(0.01)
    return app, server, backend, sockets[0].getsockname()[1]


async def stop_gateway(app: Any, server: HTTPServer, backend: HTTPServer) -> None:
    server.stop()
    await app.gateway.shutdown()
    backend.stop()


async def presence_latency(redis_url: str | None, members: int) -> dict[str, float]:
    """Median and worst milliseconds of ``/internal/presence`` for ``members`` users."""
    app, server, backend, port = await start_gateway(redis_url)
    broker = app.gateway.broker
    try:
        for start in range(0, members, 500):
            await asyncio.gather(
                *(
                    broker.enter(
                        "user-%d" % i, {"name": "User %d" % i}, ["big"], announce=(), limit=0
                    )
                    for i in range(start, min(start + 500, members))
                )
            )
        client = AsyncHTTPClient()
        url = "http://127.0.0.1:%d/internal/presence?channel=big" % port
        times = []
        for _ in range(30):
            started = time.perf_counter()
            response = await client.fetch(url)
            times.append((time.perf_counter() - started) * 1000)
            assert len(json.loads(response.body)["users"]) == members
        return {"median_ms": statistics.median(times), "max_ms": max(times)}
    finally:
        await stop_gateway(app, server, backend)


async def connect_rate(redis_url: str | None, connects: int, with_user: bool, run: int) -> float:
    """Connects/s of ``connects`` streams, 50 connects in flight, each closed as soon as it is
    open (so this measures the connect and its bookkeeping, not held streams)."""
    app, server, backend, port = await start_gateway(redis_url)
    try:
        if with_user:
            paths = ["/sse/u%d-%d/%d" % (run, i, i) for i in range(connects)]
        else:
            paths = ["/sse/-/%d" % i for i in range(connects)]
        bad: list[int] = []
        queue = list(reversed(paths))

        async def worker() -> None:
            while queue:
                stream = await open_stream("127.0.0.1", port, queue.pop())
                if stream.status != 200:
                    bad.append(stream.status)
                stream.close()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(50)))
        elapsed = time.perf_counter() - started
        if bad:
            raise SystemExit("streams refused: %r" % bad[:5])
        return connects / elapsed
    finally:
        await stop_gateway(app, server, backend)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    kinds = ["local", "redis"] if args.broker == "both" else [args.broker]
    for kind in kinds:
        redis = Redis() if kind == "redis" else None
        try:
            url = redis.url if redis is not None else None
            latency = await presence_latency(url, args.members)
            rates: dict[str, list[float]] = {"anonymous": [], "user": []}
            for run in range(args.runs):  # interleaved
                rates["anonymous"].append(await connect_rate(url, args.connects, False, run))
                rates["user"].append(await connect_rate(url, args.connects, True, run))
            anon, user = statistics.median(rates["anonymous"]), statistics.median(rates["user"])
            ratios = [u / a for a, u in zip(rates["anonymous"], rates["user"], strict=True)]
            results[kind] = {
                "presence": latency,
                "connects_per_s": rates,
                "median_anonymous": anon,
                "median_user": user,
                "ratio_per_run": ratios,
                "overhead": 1 - statistics.median(ratios),
            }
        finally:
            if redis is not None:
                redis.stop()
    return results


def report(results: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        "| broker | presence, %d members: median / max ms | connects/s anonymous | "
        "connects/s user | user/anonymous per run | overhead |" % args.members,
        "|---|---|---|---|---|---|",
    ]
    for kind, r in results.items():
        lines.append(
            "| %s | %.1f / %.1f | %.0f | %.0f | %s | %.1f %% |"
            % (
                kind,
                r["presence"]["median_ms"],
                r["presence"]["max_ms"],
                r["median_anonymous"],
                r["median_user"],
                ", ".join("%.2f" % x for x in r["ratio_per_run"]),
                100 * r["overhead"],
            )
        )
    goals = []
    for kind, r in results.items():
        goals.append(
            "%s: presence under %.0f ms: %s; user overhead under %.0f %%: %s"
            % (
                kind,
                GOAL_PRESENCE_MS,
                "met" if r["presence"]["median_ms"] < GOAL_PRESENCE_MS else "NOT met",
                100 * GOAL_OVERHEAD,
                "met" if r["overhead"] < GOAL_OVERHEAD else "NOT met",
            )
        )
    return "\n".join(lines + [""] + goals)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.presence")
    parser.add_argument("--members", type=int, default=10000)
    parser.add_argument("--connects", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--broker", choices=["local", "redis", "both"], default="both")
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON")
    args = parser.parse_args(argv)
    results = asyncio.run(main_async(args))
    print(json.dumps(results, indent=2) if args.json else report(results, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
