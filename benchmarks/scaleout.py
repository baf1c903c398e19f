"""One process against two (``--processes 2`` over Redis), same load, interleaved runs.

``python -m benchmarks.scaleout`` starts a ``redis-server`` on a free loopback port, then for
each run measures, one after the other, the ``connections``, ``fanout``, ``unicast`` and
``socket`` scenarios of ``python -m benchmarks`` against three gateway set-ups:

- ``1 process``: the default, no Redis;
- ``1 process + Redis``: the same process with ``REDIS_URL`` (the cost of the broker alone);
- ``2 processes + Redis``: ``PROCESSES=2`` with ``REDIS_URL``.

Nothing is pinned (two gateway processes need both cores), so the load generator shares the
machine with the gateway in every set-up alike. Prints the medians as a table; ``--json`` writes
every run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from typing import Any

from .targets import Redis, redis_binary

SETUPS: dict[str, list[str]] = {
    "1 process": [],
    "1 process + Redis": ["REDIS_URL={redis}"],
    "2 processes + Redis": ["REDIS_URL={redis}", "PROCESSES=2"],
}

#: The scenarios measured in each set-up.
SCENARIOS = "connections,fanout,unicast,socket"

#: (scenario, metric, label) shown in the table. The CPU figures are the gateway's processes
#: together (all of them with ``PROCESSES=2``), Redis not included.
SHOWN = [
    ("connections", "cpu_us_per_op", "gateway CPU per connect incl. callback (us)"),
    ("fanout", "deliveries_per_s", "fan-out deliveries/s"),
    ("fanout", "time_to_last_ms", "publish to last subscriber (ms)"),
    ("fanout", "cpu_us_per_op", "gateway CPU per delivered event (us)"),
    ("unicast", "latency_p99_ms", "send latency p99 at 500/s (ms)"),
    ("unicast", "sends_per_s", "single sends/s"),
    ("unicast", "cpu_us_per_op", "gateway CPU per accepted send (us)"),
    ("socket", "sends_per_s", "single sends/s over the publish socket"),
    ("socket", "cpu_us_per_op", "gateway CPU per accepted socket send (us)"),
]


def measure(setup: list[str], redis_url: str, sizes: str, smoke: bool) -> dict[str, Any]:
    """One run of fanout and unicast against one set-up; the medians part of its JSON."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        command = [
            sys.executable,
            "-m",
            "benchmarks",
            "--scenarios",
            SCENARIOS,
            "--sizes",
            sizes,
            "--runs",
            "1",
            "--no-baseline",
            "--no-pin",
            "--json",
            out.name,
        ]
        if smoke:
            command.append("--smoke")
        for item in setup:
            command += ["--gateway-env", item.format(redis=redis_url)]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        with open(out.name) as f:
            return dict(json.load(f)["medians"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scaleout", description=__doc__)
    parser.add_argument("--runs", type=int, default=3, help="interleaved runs (default 3)")
    parser.add_argument(
        "--sizes", default="10000", help="fan-out subscribers and streams opened (default 10000)"
    )
    parser.add_argument("--smoke", action="store_true", help="small sizes, a few seconds")
    parser.add_argument("--json", help="write every run here")
    args = parser.parse_args(argv)
    sizes = "200" if args.smoke else args.sizes
    if redis_binary() is None:
        sys.exit("benchmarks.scaleout: redis-server is needed (apt-get install -y redis-server)")
    workdir = tempfile.mkdtemp(prefix="sse-scaleout-")
    redis = Redis(workdir, None)
    redis.start()
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in SETUPS}
    try:
        for run in range(args.runs):
            for name, setup in SETUPS.items():
                print("[run %d/%d] %s" % (run + 1, args.runs, name), flush=True)
                runs[name].append(measure(setup, redis.url, sizes, args.smoke))
    finally:
        redis.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(
        "medians of %d interleaved runs, fan-out to %s subscribers, %d CPUs, not pinned"
        % (args.runs, sizes, os.cpu_count() or 0)
    )
    header = ["metric"] + list(SETUPS)
    rows = []
    for scenario, metric, label in SHOWN:
        row = [label]
        for name in SETUPS:
            values = [
                m["metrics"][metric]
                for medians in runs[name]
                for m in medians.values()
                if m["scenario"] == scenario
                and m["target"] == "tornado_sse"
                and metric in m["metrics"]
            ]
            row.append("%.1f" % statistics.median(values) if values else "-")
        rows.append(row)
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    for row in [header] + rows:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"sizes": sizes, "runs": runs}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
