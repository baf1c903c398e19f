"""Presence benchmarks: how fast ``/internal/presence`` answers for a big channel, and what the
join/leave bookkeeping adds to the cost of a connect.

``python -m benchmarks.presence [--members 10000] [--connects 2000] [--runs 3] [--broker both]``

- **presence**: a gateway in this process with a channel of ``--members`` users (each counted
  through the broker's ``enter``, the same call a stream makes when it opens), then 30
  ``GET /internal/presence`` over HTTP on loopback; the median and the worst are reported.
  Goal: under 50 ms.
- **connects**: the gateway (``python -m tornado_sse``, ``PRESENCE_EVENTS=room.*``) and the mock
  backend (:mod:`benchmarks.backend`) are processes of their own, this process is the load
  generator. ``--connects`` streams are opened (50 connects in flight), each closed once open,
  spread over 20 channels (``--channels``), in three variants (:data:`VARIANTS`): ``anonymous``
  on ``room.*`` (counted in presence, never announced); ``user`` on ``quiet.*``, each stream a
  user of its own (connect answer with ``"user"`` and ``"info"``: counted per user and in the
  channel's listing, no presence events there); ``user+events`` the same on ``room.*`` (a join
  decided and published, a leave decided after the delay and published). Per run: connects/s
  (until the last head) and the gateway's CPU microseconds per connect (its CPU time from the
  first connect until every disconnect callback was heard and the leave delay had passed, over
  the connects). Runs are interleaved, the order turning each round (anonymous, user,
  user+events; user, user+events, anonymous; ...) so that no variant always runs first or last,
  each on a fresh gateway and backend (with ``--one-gateway``: all on one gateway and backend
  started once, each run with users of its own, so that runs follow each other within a second
  and more pairs fit in the same time). Goal: users cost under 10 % more than anonymous streams.

With ``--instructions`` the connects are not timed: valgrind's cachegrind counts the
instructions the gateway executes per connect in each variant (:func:`instruction_runs`), a
figure that does not move with whatever else the machine does.

With ``--broker redis`` a ``redis-server`` child on an unused port is used (emptied between
runs). With two or more CPUs the gateway is pinned to CPU 0, the backend, ``redis-server`` and
this process to CPU 1 (Redis on the gateway's CPU would preempt it at random, and the CPU per
connect would vary with that more than with what is measured). The figures are only
comparable with each other, on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from tornado.httpclient import AsyncHTTPClient
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.web import Application, RequestHandler

from tornado_sse.app import make_app
from tornado_sse.config import Settings

from . import procstat
from .context import Context
from .targets import Gateway, MockBackend, Redis
from .wire import get_json, open_stream

GOAL_PRESENCE_MS = 50.0
GOAL_OVERHEAD = 0.10
#: The gateway's PRESENCE_LEAVE_DELAY_SECONDS in the connect runs.
LEAVE_DELAY = 0.2
#: The connect variants: (channel prefix, whether each stream is a user of its own).
VARIANTS = {"anonymous": ("room", False), "user": ("quiet", True), "user+events": ("room", True)}
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
                        "user-%d" % i, '{"name":"User %d"}' % i, ["big"], announce=(), limit=0
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


class ConnectTarget:
    """The gateway (``PRESENCE_EVENTS=room.*``) and mock backend processes the connect runs go
    to, and what the backend has heard so far (so that runs can share them)."""

    def __init__(
        self, workdir: str, redis: Redis | None, pin: bool, wrapper: Sequence[str] = ()
    ) -> None:
        """``wrapper``: a command to run the gateway under (``valgrind ...``)."""
        if redis is not None:
            redis.command("FLUSHALL")
        self.backend = MockBackend(workdir, 1 if pin else None)
        settings = {
            "HEARTBEAT_INTERVAL_SECONDS": "60",
            "MAX_CONNECTIONS": "100000",
            "PRESENCE_EVENTS": "room.*",
            "PRESENCE_LEAVE_DELAY_SECONDS": str(LEAVE_DELAY),
        }
        if redis is not None:
            settings["REDIS_URL"] = redis.url
        if wrapper:
            settings["PYTHONMALLOC"] = "malloc"  # what valgrind can follow
        self.workdir, self.pin, self.settings, self.wrapper = workdir, pin, settings, wrapper
        self.gateway: Gateway | None = None
        #: Connects (and as many disconnects) the backend has heard of the runs so far.
        self.heard = 0

    def start(self) -> None:
        self.backend.start()
        self.gateway = Gateway(
            self.workdir,
            0 if self.pin else None,
            self.backend.port,
            self.settings,
            defaults=True,
            wrapper=self.wrapper,
        )
        self.gateway.start()

    def stop(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()
        self.backend.stop()


async def connect_run(
    workdir: str,
    redis: Redis | None,
    connects: int,
    variant: str,
    run: int,
    pin: bool,
    profile: str | None = None,
    blocking: bool = False,
    target: ConnectTarget | None = None,
    in_flight: int = 50,
    channels: int = CHANNELS,
) -> dict[str, float]:
    """One run: ``connects`` streams, ``in_flight`` connects at a time, each closed once open
    (so this measures the connect and its bookkeeping, not held streams), spread over
    ``channels`` channels (with as many channels as connects, no presence event of a stream
    is written to another one: the bookkeeping without the delivery), against a fresh
    gateway process, or against ``target``'s (started) when given. Returns ``connects_per_s``
    and ``cpu_us_per_connect`` (the gateway's). With ``profile`` (a file name), ``py-spy
    record`` samples the gateway meanwhile (raw collapsed stacks, 1000 Hz; see
    :mod:`benchmarks.profile`), pausing it for each sample with ``blocking``."""
    own = target is None
    if target is None:
        target = ConnectTarget(workdir, redis, pin)
    try:
        if own:
            target.start()
        gateway, backend = target.gateway, target.backend
        assert gateway is not None
        prefix, with_user = VARIANTS[variant]
        paths = [
            "/sse/s?ch=%s.%d&%s=u%d-%d"
            % (prefix, i % channels, "user" if with_user else "n", run, i)
            for i in range(connects)
        ]
        bad: list[int] = []
        queue = list(reversed(paths))

        async def worker() -> None:
            while queue:
                stream = await open_stream("127.0.0.1", gateway.port, queue.pop())
                if stream.status != 200:
                    bad.append(stream.status)
                stream.close()

        profiler = None
        if profile is not None:
            profiler = Context(
                {
                    "target": "tornado_sse",
                    "port": gateway.port,
                    "pid": gateway.pid,
                    "backend_port": backend.port,
                    "backend_pid": backend.pid,
                    "profile": {"out": profile, "rate": 1000, "blocking": blocking},
                }
            )
            await profiler.profile_start()
        cpu0 = procstat.cpu_ns(gateway.pid)
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(in_flight)))
        elapsed = time.perf_counter() - started
        if bad:
            raise SystemExit("streams refused: %r" % bad[:5])
        target.heard += connects
        await settled(backend.port, target.heard)
        await asyncio.sleep(LEAVE_DELAY + 0.3)  # the leaves are checked and published
        cpu = procstat.cpu_ns(gateway.pid) - cpu0
        if profiler is not None:
            await profiler.profile_stop()
        return {"connects_per_s": connects / elapsed, "cpu_us_per_connect": cpu / 1000 / connects}
    finally:
        if own:
            target.stop()


def cachegrind_total(path: str) -> int:
    """The instructions a ``valgrind --tool=cachegrind`` run counted (its ``summary:`` line)."""
    with open(path, encoding="ascii", errors="replace") as f:
        for line in f:
            if line.startswith("summary:"):
                return int(line.split()[1])
    raise SystemExit("no summary in %s: did the gateway exit cleanly?" % path)


async def instruction_runs(
    workdir: str, redis: Redis | None, connects: int, runs: int, pin: bool
) -> dict[str, list[float]]:
    """Instructions the gateway executes per connect, per variant and run, counted by
    cachegrind (``valgrind --tool=cachegrind --cache-sim=no``), which counts the same for the
    same work whatever else the machine does. Each figure is the difference between two
    fresh gateways, one given ``connects`` connects and one a fifth of them, over the
    difference in connects, so that the start and the shutdown cancel out. Under valgrind the
    gateway runs about 50 times slower (10 connects in flight here), so it handles fewer
    events per turn of its loop than at full speed: a conservative figure for what a
    connect's extra events cost."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("--instructions needs valgrind (apt-get install -y valgrind)")
    small = max(connects // 5, 1)
    names = list(VARIANTS)
    out: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for run in range(runs):
        for variant in names[run % 3 :] + names[: run % 3]:
            counts = []
            for size in (small, connects):
                path = os.path.join(workdir, "cachegrind-%d-%d.out" % (run, size))
                wrapper = [valgrind, "--tool=cachegrind", "--cache-sim=no"]
                target = ConnectTarget(
                    workdir, redis, pin, wrapper + ["--cachegrind-out-file=" + path]
                )
                try:
                    target.start()
                    number = 3 * (2 * run + len(counts)) + names.index(variant)
                    await connect_run(
                        workdir, redis, size, variant, number, pin, target=target, in_flight=10
                    )
                finally:
                    target.stop()
                counts.append(cachegrind_total(path))
                os.unlink(path)
            out[variant].append((counts[1] - counts[0]) / (connects - small))
    return out


async def settled(port: int, connects: int, timeout: float = 60.0) -> None:
    """Until the backend has heard ``connects`` connects and as many disconnects (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        stats = await get_json("127.0.0.1", port, "/stats")
        assert isinstance(stats, dict)
        if stats["connects"] >= connects and stats["disconnects"] >= connects:
            return
        if time.monotonic() > deadline:
            raise SystemExit("disconnect callbacks missing after %.0f s: %r" % (timeout, stats))
        await asyncio.sleep(0.05)


def median_ratio(numerators: list[float], denominators: list[float]) -> float:
    """The median of the per-run ratios (runs paired in the order they ran)."""
    return statistics.median(n / d for n, d in zip(numerators, denominators, strict=True))


#: The fewest rounds a bootstrap interval is given for: with fewer, the 2.5 and 97.5
#: percentiles of the resampled medians are about the smallest and largest ratio, which hold
#: the median far less often than 95 % of the time.
MIN_INTERVAL_ROUNDS = 10


def median_interval(
    ratios: list[float], resamples: int = 5000, seed: int = 0
) -> list[float] | None:
    """A 95 % bootstrap interval of the median of ``ratios`` (the rounds resampled with
    replacement ``resamples`` times, percentiles 2.5 and 97.5 of the resampled medians), or
    ``None`` for fewer than :data:`MIN_INTERVAL_ROUNDS` rounds. The seed is fixed, so the same
    figures give the same interval."""
    if len(ratios) < MIN_INTERVAL_ROUNDS:
        return None
    rng = random.Random(seed)
    medians = sorted(
        statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(resamples)
    )
    return [medians[int(0.025 * resamples)], medians[int(0.975 * resamples) - 1]]


async def timed_runs(
    workdir: str, redis: Redis | None, args: argparse.Namespace, kind: str, pin: bool
) -> dict[str, list[dict[str, float]]]:
    """The timed connect runs of every variant, interleaved (see the module docstring)."""
    runs: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    names = list(VARIANTS)
    shared = ConnectTarget(workdir, redis, pin) if args.one_gateway else None
    try:
        if shared is not None:
            shared.start()
        for run in range(args.runs):  # interleaved, each run in another order (below)
            for variant in names[run % 3 :] + names[: run % 3]:
                profile = None
                if args.profile:
                    name = "%s-%s-%d.txt" % (kind, variant.replace("+", "-"), run)
                    profile = os.path.join(args.profile, name)
                runs[variant].append(
                    await connect_run(
                        workdir,
                        redis,
                        args.connects,
                        variant,
                        3 * run + names.index(variant),  # users of its own
                        pin,
                        profile,
                        args.profile_blocking,
                        shared,
                        channels=args.channels,
                    )
                )
    finally:
        if shared is not None:
            shared.stop()
    return runs


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    kinds = ["local", "redis"] if args.broker == "both" else [args.broker]
    pin = not args.no_pin and len(os.sched_getaffinity(0)) >= 2
    if pin:
        os.sched_setaffinity(0, {1})  # the load side's CPU; the gateway gets CPU 0
    workdir = tempfile.mkdtemp(prefix="bench-presence-")
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
    for kind in kinds:
        redis = Redis(workdir, 1 if pin else None) if kind == "redis" else None
        try:
            if redis is not None:
                redis.start()
            url = redis.url if redis is not None else None
            latency = await presence_latency(url, args.members)
            if args.instructions:
                counted = await instruction_runs(workdir, redis, args.connects, args.runs, pin)
                runs = {v: [{"instructions_per_connect": n} for n in counted[v]] for v in counted}
                metrics: tuple[str, ...] = ("instructions_per_connect",)
            else:
                runs = await timed_runs(workdir, redis, args, kind, pin)
                metrics = ("connects_per_s", "cpu_us_per_connect")
            figures: dict[str, Any] = {"presence": latency, "runs": runs}
            for metric in metrics:
                anon = [r[metric] for r in runs["anonymous"]]
                figures[metric] = {"anonymous": statistics.median(anon)}
                for variant in ("user", "user+events"):
                    values = [r[metric] for r in runs[variant]]
                    ratios = [v / a for a, v in zip(anon, values, strict=True)]
                    figures[metric][variant] = {
                        "median": statistics.median(values),
                        "per_anonymous": ratios,
                        "median_ratio": median_ratio(values, anon),
                        "interval_95": median_interval(ratios),
                    }
            results[kind] = figures
        finally:
            if redis is not None:
                redis.stop()
    shutil.rmtree(workdir, ignore_errors=True)
    return results


def report(results: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        "presence, %d members: median / max ms" % args.members,
        "",
        "| broker | median | max |",
        "|---|---|---|",
    ]
    for kind, r in results.items():
        lines.append(
            "| %s | %.1f | %.1f |" % (kind, r["presence"]["median_ms"], r["presence"]["max_ms"])
        )
    if args.instructions:
        lines += [
            "",
            "| broker | variant | instructions per connect (median) | / anonymous, per run |",
            "|---|---|---|---|",
        ]
        goals = [
            instructions_report(k, r["instructions_per_connect"], lines) for k, r in results.items()
        ]
        return "\n".join(lines + [""] + goals)
    lines += [
        "",
        "| broker | variant | connects/s (median) | / anonymous, per run | server CPU us per "
        "connect (median) | / anonymous, per run |",
        "|---|---|---|---|---|---|",
    ]
    goals = []
    for kind, r in results.items():
        rate, cpu = r["connects_per_s"], r["cpu_us_per_connect"]
        lines.append(
            "| %s | anonymous | %.0f | | %.0f | |" % (kind, rate["anonymous"], cpu["anonymous"])
        )
        for variant in ("user", "user+events"):
            lines.append(
                "| %s | %s | %.0f | %s | %.0f | %s |"
                % (
                    kind,
                    variant,
                    rate[variant]["median"],
                    ", ".join("%.2f" % x for x in rate[variant]["per_anonymous"]),
                    cpu[variant]["median"],
                    ", ".join("%.2f" % x for x in cpu[variant]["per_anonymous"]),
                )
            )
            rate_cost = 1 - rate[variant]["median_ratio"]
            cpu_cost = cpu[variant]["median_ratio"] - 1
            goals.append(
                "%s, %s: %.1f %% fewer connects/s (%s), %.1f %% more CPU per connect (%s) than "
                "anonymous (medians of the per-run ratios); goal under %.0f %%: %s"
                % (
                    kind,
                    variant,
                    100 * rate_cost,
                    _interval_text(rate[variant]["interval_95"], -1),
                    100 * cpu_cost,
                    _interval_text(cpu[variant]["interval_95"], 1),
                    100 * GOAL_OVERHEAD,
                    "met" if max(rate_cost, cpu_cost) < GOAL_OVERHEAD else "NOT met",
                )
            )
        goals.append(
            "%s: presence under %.0f ms: %s"
            % (
                kind,
                GOAL_PRESENCE_MS,
                "met" if r["presence"]["median_ms"] < GOAL_PRESENCE_MS else "NOT met",
            )
        )
    return "\n".join(lines + [""] + goals)


def _interval_text(interval: list[float] | None, sign: int) -> str:
    """``interval`` (of ratios) as the percentages of cost it spans: ``sign`` 1 for a cost
    that is the ratio above 1 (CPU), -1 for one below 1 (connects/s)."""
    if interval is None:
        return "no interval under %d rounds" % MIN_INTERVAL_ROUNDS
    low, high = sorted(100 * sign * (r - 1) for r in interval)
    return "95 %% interval %.1f to %.1f" % (low, high)


def instructions_report(kind: str, counted: dict[str, Any], lines: list[str]) -> str:
    """Table rows (appended to ``lines``) and the goal lines of an ``--instructions`` run."""
    lines.append("| %s | anonymous | %.0f | |" % (kind, counted["anonymous"]))
    verdicts = []
    for variant in ("user", "user+events"):
        figure = counted[variant]
        lines.append(
            "| %s | %s | %.0f | %s |"
            % (
                kind,
                variant,
                figure["median"],
                ", ".join("%.3f" % x for x in figure["per_anonymous"]),
            )
        )
        cost = figure["median_ratio"] - 1
        verdicts.append(
            "%s, %s: %.1f %% more instructions per connect than anonymous (median of the "
            "per-run ratios); goal under %.0f %%: %s"
            % (
                kind,
                variant,
                100 * cost,
                100 * GOAL_OVERHEAD,
                "met" if cost < GOAL_OVERHEAD else "NOT met",
            )
        )
    return "\n".join(verdicts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.presence")
    parser.add_argument("--members", type=int, default=10000)
    parser.add_argument("--connects", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--broker", choices=["local", "redis", "both"], default="both")
    parser.add_argument(
        "--channels",
        type=int,
        default=CHANNELS,
        help="channels the timed connects are spread over (default %(default)s); as many as "
        "--connects puts each stream alone on its channel, so that its join and leave reach no "
        "other stream",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument(
        "--one-gateway",
        action="store_true",
        help="run every connect run of a broker against one gateway and backend, started once "
        "(runs a second apart instead of a process start apart, so more of them fit in the "
        "same time; each run's users are its own)",
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="attach py-spy to the gateway in each connect run, one profile per run in DIR "
        "(it takes CPU of its own: the figures of such runs are not comparable with others)",
    )
    parser.add_argument(
        "--profile-blocking",
        action="store_true",
        help="with --profile, pause the gateway for each sample: exact stacks (without it "
        "py-spy may join frames of different moments into one), more overhead",
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count the gateway's instructions per connect with valgrind's cachegrind instead "
        "of timing the connects (see instruction_runs): the same figure for the same work, "
        "however busy the machine is; about 50 times slower",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the raw figures as JSON: one object per broker, and the options under "
        '"settings"',
    )
    args = parser.parse_args(argv)
    results = asyncio.run(main_async(args))
    if args.json:  # the figures of each broker, and the options they were measured with
        print(json.dumps({"settings": vars(args), **results}, indent=2))
    else:
        print(report(results, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
