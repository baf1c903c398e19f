"""``python -m benchmarks``: run the scenarios against tornado_sse and nginx + nchan, interleaved.

Every (scenario, size) is run ``--runs`` times per server, alternating servers (tornado_sse,
nchan, tornado_sse, nchan...), each run on freshly started processes: the server, the mock
backend and the load generator, three processes. With two or more CPUs the server is pinned to
CPU 0 and the load side (load generator and mock backend) to CPU 1. Medians of the runs are
printed as a table with the nchan figure and the ratio beside each tornado_sse figure, and
everything (every run, every counter) is written as JSON.

``--compare REV`` adds the gateway of an older git revision as one more target, interleaved
with the others: its files are extracted into a temporary directory (``git archive``) and its
``python -m tornado_sse`` runs from there with ``PYTHONPATH`` set to it, on the same installed
dependencies; the table then shows each figure for that revision too, and the ratio of the
current tree's figure to it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from . import profile as profiles
from . import scenarios
from .procstat import cpu_model, machine_ticks
from .targets import (
    ROOT,
    Checkout,
    Gateway,
    MockBackend,
    Nchan,
    nchan_available,
    nchan_version,
    nginx_version,
    pinner,
)

GATEWAY, NCHAN = "tornado_sse", "nchan"

#: Scenarios whose size list ``--sizes`` replaces.
SIZED = ("connections", "jwt", "fanout")

#: Scenarios that attach the profiler to the gateway when ``--profile`` is given.
PROFILED = ("connections", "jwt", "unicast", "socket", "fanout", "heartbeat")

#: Load-side CPU (percent of one core) from which a run counts as load-bound, and from which
#: it is worth a note.
SATURATED = 90.0
BUSY = 75.0

#: (metric, label, better) shown in the table, per scenario.
HEADLINE: dict[str, list[tuple[str, str, str]]] = {
    "connections": [
        ("connects_per_s", "connects/s incl. callback", "higher"),
        ("connect_p99_ms", "connect p99 (ms)", "lower"),
        ("cpu_us_per_connect", "server CPU per connect (us)", "lower"),
        ("rss_per_stream_kib", "RSS per stream (KiB)", "lower"),
    ],
    "jwt": [
        ("connects_per_s", "connects/s with a JWT, no callback", "higher"),
        ("connect_p99_ms", "connect p99 (ms)", "lower"),
        ("cpu_us_per_connect", "server CPU per connect (us)", "lower"),
        ("rss_per_stream_kib", "RSS per stream (KiB)", "lower"),
    ],
    "unicast": [
        ("sends_per_s", "single sends/s", "higher"),
        ("latency_p50_ms", "latency p50 at 500/s (ms)", "lower"),
        ("latency_p90_ms", "latency p90 at 500/s (ms)", "lower"),
        ("latency_p99_ms", "latency p99 at 500/s (ms)", "lower"),
        ("cpu_us_per_op", "server CPU per accepted send (us)", "lower"),
    ],
    "socket": [
        ("sends_per_s", "single sends/s over the publish socket", "higher"),
        ("latency_p50_ms", "socket latency p50 at 500/s (ms)", "lower"),
        ("latency_p90_ms", "socket latency p90 at 500/s (ms)", "lower"),
        ("latency_p99_ms", "socket latency p99 at 500/s (ms)", "lower"),
        ("cpu_us_per_op", "server CPU per accepted socket send (us)", "lower"),
    ],
    "batch": [
        ("events_per_s", "events/s in batches", "higher"),
        ("cpu_us_per_op", "server CPU per event in batches (us)", "lower"),
    ],
    "fanout": [
        ("time_to_last_ms", "publish to last subscriber (ms)", "lower"),
        ("time_to_median_ms", "publish to median subscriber (ms)", "lower"),
        ("deliveries_per_s", "deliveries/s", "higher"),
        ("cpu_us_per_op", "server CPU per delivered event (us)", "lower"),
    ],
    "heartbeat": [
        ("cpu_pct", "server CPU at 1 s heartbeat (%)", "lower"),
        ("heartbeats_per_stream_s", "heartbeats/stream/s", "-"),
        ("cpu_us_per_op", "server CPU per heartbeat (us)", "lower"),
    ],
    "churn": [
        ("cycles_per_s", "connect+disconnect cycles/s", "higher"),
        ("rss_delta_kib", "RSS after - warm baseline (KiB)", "lower"),
        ("rss_delta_pct", "RSS after vs baseline (%)", "lower"),
        ("cpu_us_per_op", "server CPU per connect+disconnect cycle (us)", "lower"),
    ],
}

#: Boolean checks reported per scenario (all runs must pass).
CHECKS = {
    "jwt": ["no_connect_callbacks"],
    "unicast": ["exactly_once_in_order", "all_delivered"],
    "socket": ["exactly_once_in_order", "all_delivered"],
    "batch": ["exactly_once_in_order", "all_delivered"],
    "fanout": ["exactly_once_in_order", "all_delivered"],
    "churn": ["disconnects_match"],
}


def write_results(path: str | None, stem: str, data: dict[str, Any]) -> str:
    """Write ``data`` as indented JSON to ``path``, or to ``benchmarks/results/<stem>-<time>.json``
    when ``path`` is None (creating the folder); return the path written."""
    out_path = path or os.path.join(
        os.path.dirname(os.path.abspath(__file__)),
        "results",
        time.strftime(stem + "-%Y%m%d-%H%M%S.json"),
    )
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
    return out_path


def machine_info(uvloop: bool) -> dict[str, Any]:
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }
    model = cpu_model()
    if model is not None:
        info["cpu"] = model
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            kib = int(f.readline().split()[1])
            info["memory_gib"] = round(kib / 1024 / 1024, 1)
    except OSError:
        pass
    try:
        import tornado

        info["tornado"] = tornado.version
    except ImportError:
        info["tornado"] = "not installed"
    try:
        import pycurl

        info["pycurl"] = pycurl.version
    except ImportError:
        info["pycurl"] = None
    try:
        import uvloop as _uvloop

        info["uvloop"] = _uvloop.__version__ if uvloop else "installed, not used"
    except ImportError:
        info["uvloop"] = None
    info["nginx"] = nginx_version()
    info["nchan"] = nchan_version()
    info.update(gateway_source())
    return info


def gateway_source() -> dict[str, Any]:
    """Which gateway code ran: the checkout's HEAD and a hash of the package's sources (the
    tree may differ from HEAD)."""
    import hashlib

    import tornado_sse

    root = os.path.dirname(os.path.abspath(tornado_sse.__file__))
    digest = hashlib.sha256()
    for name in sorted(os.listdir(root)):
        if name.endswith(".py"):
            with open(os.path.join(root, name), "rb") as f:
                digest.update(name.encode() + b"\0" + f.read())
    head = subprocess.run(
        ["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {"gateway_git_head": head or None, "gateway_sources_sha256": digest.hexdigest()[:16]}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument(
        "--scenarios",
        default=",".join(scenarios.ORDER),
        help="comma-separated subset of: %s" % ", ".join(scenarios.ORDER),
    )
    p.add_argument(
        "--sizes",
        default=None,
        help="comma-separated stream counts for the sized scenarios (%s)" % ", ".join(SIZED),
    )
    p.add_argument("--runs", type=int, default=None, help="runs per server (default 3; smoke 1)")
    p.add_argument("--json", default=None, help="write results here (default benchmarks/results/)")
    p.add_argument("--smoke", action="store_true", help="a few seconds per scenario, small sizes")
    p.add_argument("--no-baseline", action="store_true", help="skip nginx + nchan")
    p.add_argument(
        "--interleave",
        action="store_true",
        help="alternate the scenarios run by run (connections, jwt, connections, jwt, ...) "
        "instead of running each scenario's runs in a row, so that their ratios are taken "
        "under the same conditions",
    )
    p.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="REV",
        help="also run the gateway of git revision REV (a commit, tag or branch of this "
        "repository), interleaved with the others, and show current/REV ratios (repeatable, "
        "or comma-separated)",
    )
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=None,
        metavar="SECONDS",
        help="before each run, wait up to this long for other processes to leave the CPUs "
        "alone (default 10, at most 150 in all; smoke 0)",
    )
    p.add_argument("--no-uvloop", action="store_true", help="plain asyncio in the load side")
    p.add_argument(
        "--profile",
        metavar="DIR",
        default=None,
        help="attach py-spy to the gateway during %s and write profiles to DIR"
        % "/".join(PROFILED),
    )
    p.add_argument(
        "--profile-rate",
        type=int,
        default=500,
        metavar="HZ",
        help="py-spy samples per second with --profile (default 500)",
    )
    p.add_argument(
        "--profile-blocking",
        action="store_true",
        help="let py-spy pause the gateway for each sample (exact stacks, more overhead; "
        "default: --nonblocking)",
    )
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="SCENARIO.NAME=VALUE",
        help="override a scenario parameter, e.g. fanout.publishes=20 (repeatable)",
    )
    p.add_argument(
        "--gateway-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the gateway (repeatable)",
    )
    args = p.parse_args(argv)
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(args.scenarios) - set(scenarios.ORDER)
    if unknown:
        p.error("unknown scenario(s): %s" % ", ".join(sorted(unknown)))
    if args.sizes:
        args.sizes = [int(x) for x in args.sizes.split(",")]
    overrides: dict[str, dict[str, Any]] = {}
    for item in args.param:
        key, sep, value = item.partition("=")
        scenario, dot, name = key.partition(".")
        known = scenarios.PARAMS.get(scenario, {}).get("full", {})
        if not sep or not dot or name not in known or name == "sizes":
            p.error("--param %s: expected SCENARIO.NAME=VALUE with a known name" % item)
        overrides.setdefault(scenario, {})[name] = type(known[name])(value)
    args.overrides = overrides
    args.compare = [rev.strip() for item in args.compare for rev in item.split(",") if rev.strip()]
    if args.runs is None:
        args.runs = 1 if args.smoke else 3
    if args.quiet_wait is None:
        args.quiet_wait = 0.0 if args.smoke else 10.0
    return args


class Runner:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir = tempfile.mkdtemp(prefix="sse-bench-")
        ncpu = os.cpu_count() or 1
        pin = not args.no_pin and ncpu >= 2
        self.server_cpu = 0 if pin else None
        self.load_cpu = 1 if pin else None
        self.gateway_env = dict(kv.split("=", 1) for kv in args.gateway_env)
        self.uvloop = not args.no_uvloop
        self.quiet_budget = 150.0
        #: The revisions of ``--compare``, by target name, once :meth:`checkout` made them.
        self.revisions: dict[str, Checkout] = {}

    def checkout(self) -> str | None:
        """Extract every ``--compare`` revision and check that its modules import here; None
        when all are ready, else what is wrong (the checkouts made so far stay until
        :meth:`cleanup`)."""
        for rev in self.args.compare:
            checkout = Checkout(rev)
            try:
                checkout.create(self.workdir)
            except ValueError as exc:
                return "--compare %s: %s" % (rev, exc)
            if any(c.commit == checkout.commit for c in self.revisions.values()):
                checkout.remove()
                continue
            self.revisions["%s@%s" % (GATEWAY, checkout.label)] = checkout
            problem = checkout.missing()
            if problem is not None:
                return problem
        return None

    def cleanup(self) -> None:
        """Remove the ``--compare`` checkouts."""
        for checkout in self.revisions.values():
            checkout.remove()

    def _wait_quiet(self) -> float:
        wait = min(self.args.quiet_wait, self.quiet_budget)
        t0 = time.monotonic()
        busy = wait_quiet(wait)
        self.quiet_budget = max(0.0, self.quiet_budget - (time.monotonic() - t0))
        return busy

    def run_one(
        self, scenario: str, size: int, target: str, run: int, params: dict[str, Any]
    ) -> dict[str, Any]:
        spec_params = {k: v for k, v in params.items() if k != "sizes"}
        spec_params["size"] = size
        heartbeat = scenarios.PARAMS[scenario]["heartbeat"]
        bound = scenarios.PARAMS[scenario]["bound"]
        started = time.monotonic()
        record: dict[str, Any] = {
            "scenario": scenario,
            "size": size,
            "target": target,
            "run": run,
            "foreign_cpu_pct_before": self._wait_quiet(),
            "loadavg_before": os.getloadavg(),
        }
        backend = MockBackend(self.workdir, self.load_cpu, self.uvloop)
        backend.start()
        server: Gateway | Nchan
        if target == GATEWAY or target in self.revisions:
            settings = {"HEARTBEAT_INTERVAL_SECONDS": "%g" % heartbeat, "MAX_CONNECTIONS": "20000"}
            settings.update(scenarios.PARAMS[scenario].get("gateway_env", {}))
            settings.update(self.gateway_env)
            server = Gateway(
                self.workdir,
                self.server_cpu,
                backend.port,
                settings,
                source=self.revisions.get(target),
            )
        else:
            server = Nchan(self.workdir, self.server_cpu, backend.port, heartbeat)
        try:
            server.start()
            spec: dict[str, Any] = {
                "scenario": scenario,
                "target": target,
                "kind": NCHAN if target == NCHAN else GATEWAY,
                "port": server.port,
                "pid": server.measure_pid,
                "backend_port": backend.port,
                "backend_pid": backend.pid,
                "tag": "r%d" % run,
                "uvloop": self.uvloop,
                "params": spec_params,
            }
            if self.args.profile and target != NCHAN and scenario in PROFILED:
                os.makedirs(self.args.profile, exist_ok=True)
                # The current tree's profiles keep their old names; a revision's say which.
                suffix = "" if target == GATEWAY else "-" + target.split("@", 1)[1]
                name = "%s-%d-run%d%s.txt" % (scenario, size, run, suffix)
                spec["profile"] = {
                    "out": os.path.abspath(os.path.join(self.args.profile, name)),
                    "rate": self.args.profile_rate,
                    "blocking": self.args.profile_blocking,
                }
            record.update(self._loadgen(spec, bound))
            if "profile" in spec and os.path.exists(spec["profile"]["out"]):
                record["profile"] = profiles.summarize(spec["profile"]["out"])
        except Exception as exc:
            record["error"] = "%s: %s" % (type(exc).__name__, exc)
        finally:
            server.stop()
            backend.stop()
        record["seconds"] = round(time.monotonic() - started, 1)
        return record

    def _loadgen(self, spec: dict[str, Any], bound: float) -> dict[str, Any]:
        argv = [sys.executable, "-m", "benchmarks.loadgen", json.dumps(spec)]
        log = os.path.join(self.workdir, "loadgen-%d.log" % time.monotonic_ns())
        try:
            with open(log, "wb") as err:
                done = subprocess.run(
                    argv,
                    stdout=subprocess.PIPE,
                    stderr=err,
                    stdin=subprocess.DEVNULL,
                    timeout=bound,
                    preexec_fn=pinner(self.load_cpu),
                    cwd=ROOT,
                    check=False,
                )
        except subprocess.TimeoutExpired:
            return {"error": "load generator exceeded the %ds bound" % bound}
        for line in reversed(done.stdout.decode(errors="replace").splitlines()):
            if line.startswith("RESULT "):
                return json.loads(line[7:])
        with open(log, encoding="utf-8", errors="replace") as f:
            tail = f.read()[-2000:]
        return {"error": "load generator exited %d without a result: %s" % (done.returncode, tail)}

    def run_all(self) -> list[dict[str, Any]]:
        args = self.args
        ok, why = nchan_available()
        self.baseline = ok and not args.no_baseline
        self.baseline_note = "" if ok else why
        targets = [GATEWAY, *self.revisions] + ([NCHAN] if self.baseline else [])
        jobs = []
        for scenario in args.scenarios:
            params = dict(scenarios.PARAMS[scenario]["smoke" if args.smoke else "full"])
            params.update(args.overrides.get(scenario, {}))
            sizes = args.sizes if args.sizes and scenario in SIZED else params["sizes"]
            for size in sizes:
                for run in range(1, args.runs + 1):
                    for target in targets:
                        if scenario in ("batch", "socket") and target == NCHAN:
                            continue  # nchan has no batch publish, no socket: nothing to run
                        jobs.append((scenario, size, run, target, params))
        if args.interleave:
            # By size, then run, then scenario; the servers keep alternating within (stable).
            rank = {name: k for k, name in enumerate(args.scenarios)}
            jobs.sort(key=lambda job: (job[1], job[2], rank[job[0]]))
        records = []
        for scenario, size, run, target, params in jobs:
            rec = self.run_one(scenario, size, target, run, params)
            records.append(rec)
            print(progress_line(rec, args.runs), flush=True)
        return records


def wait_quiet(max_wait: float, threshold: float = 25.0) -> float:
    """Wait (up to ``max_wait`` s) until the machine is nearly idle: less than ``threshold``
    percent of one core busy over half a second. Returns the last busy figure."""
    deadline = time.monotonic() + max_wait
    ncpu = os.cpu_count() or 1
    while True:
        b0, t0 = machine_ticks()
        time.sleep(0.5)
        b1, t1 = machine_ticks()
        busy = 100.0 * ncpu * (b1 - b0) / max(t1 - t0, 1)
        if busy < threshold or time.monotonic() >= deadline:
            return busy
        time.sleep(1.0)


def progress_line(rec: dict[str, Any], runs: int) -> str:
    head = "[%s %d run %d/%d %s %.0fs]" % (
        rec["scenario"],
        rec["size"],
        rec["run"],
        runs,
        rec["target"],
        rec["seconds"],
    )
    if "error" in rec:
        return head + " FAILED: " + rec["error"]
    if "skipped" in rec:
        return head + " skipped: " + rec["skipped"]
    shown = []
    for metric, _, _ in HEADLINE[rec["scenario"]]:
        if metric in rec.get("metrics", {}):
            shown.append("%s=%s" % (metric, fmt(rec["metrics"][metric])))
    cpu = rec.get("cpu", {})
    shown.append(
        "cpu(%% of a core): server=%.0f loadgen=%.0f backend=%.0f other=%.0f"
        % (
            cpu.get("target_cpu_pct", 0),
            cpu.get("loadgen_cpu_pct", 0),
            cpu.get("backend_cpu_pct", 0),
            cpu.get("foreign_cpu_pct", 0),
        )
    )
    for name in CHECKS.get(rec["scenario"], []):
        if name in rec.get("checks", {}):
            shown.append("%s=%s" % (name, rec["checks"][name]))
    return head + " " + " ".join(shown)


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        if value != value:
            return "n/a"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 100:
            return "%.0f" % value
        if abs(value) >= 10:
            return "%.1f" % value
        return "%.2f" % value
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def aggregate(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians per (scenario, size, target) and metric, with the run count and flags."""
    groups: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for rec in records:
        groups.setdefault((rec["scenario"], rec["size"], rec["target"]), []).append(rec)
    out: dict[str, Any] = {}
    for (scenario, size, target), recs in groups.items():
        good = [r for r in recs if "error" not in r and "skipped" not in r]
        metrics: dict[str, float] = {}
        if good:
            for name, value in good[0]["metrics"].items():
                values = [
                    r["metrics"][name]
                    for r in good
                    if isinstance(r["metrics"].get(name), (int, float))
                ]
                if values and isinstance(value, (int, float)):
                    metrics[name] = statistics.median(values)
        checks: dict[str, Any] = {}
        for name in CHECKS.get(scenario, []):
            vals = [r["checks"].get(name) for r in good]
            checks[name] = "%d/%d" % (sum(1 for v in vals if v), len(vals))
        # The load generator and the mock backend share one CPU when pinned: their sum is what
        # the load side had left.
        load = [
            r.get("cpu", {}).get("loadgen_cpu_pct", 0.0)
            + r.get("cpu", {}).get("backend_cpu_pct", 0.0)
            for r in good
        ]
        loadgen_only = [r.get("cpu", {}).get("loadgen_cpu_pct", 0.0) for r in good]
        server = [r.get("cpu", {}).get("target_cpu_pct", 0.0) for r in good]
        foreign = [r.get("cpu", {}).get("foreign_cpu_pct", 0.0) for r in good]
        out["%s|%d|%s" % (scenario, size, target)] = {
            "scenario": scenario,
            "size": size,
            "target": target,
            "runs": len(good),
            "failed_runs": len(recs) - len(good),
            "errors": [r["error"] for r in recs if "error" in r],
            "metrics": metrics,
            "checks": checks,
            "loadgen_cpu_pct_max": max(loadgen_only) if loadgen_only else None,
            "load_side_cpu_pct_max": max(load) if load else None,
            "loadgen_saturated": bool(load) and max(load) >= SATURATED,
            "server_cpu_pct_median": statistics.median(server) if server else None,
            "foreign_cpu_pct_max": max(foreign) if foreign else None,
        }
    return out


CHECK_LABELS = {
    "exactly_once_in_order": "exactly once, in order",
    "all_delivered": "all delivered",
    "disconnects_match": "disconnects = connects",
}

#: Other processes' CPU (percent of one core) from which a run is flagged as disturbed.
DISTURBED = 25.0


def revision_targets(medians: dict[str, Any]) -> list[str]:
    """The ``--compare`` targets (``tornado_sse@REV``) that have medians, in run order."""
    found: list[str] = []
    for m in medians.values():
        if m["target"].startswith(GATEWAY + "@") and m["target"] not in found:
            found.append(m["target"])
    return found


def legend(revisions: list[str]) -> str:
    """What the ratio columns divide: ``ratio = tornado_sse / nchan``, and per revision."""
    parts = ["ratio = tornado_sse / nchan"]
    parts += ["ratio vs %s = tornado_sse / %s" % (t.split("@", 1)[1], t) for t in revisions]
    return "; ".join(parts)


def ratio(a: Any, b: Any) -> str:
    """``a / b`` as ``1.23x``, or ``-`` when either is missing or ``b`` is zero."""
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b:
        return "%.2fx" % (a / b)
    return "-"


def table(medians: dict[str, Any], baseline: bool) -> tuple[list[str], list[list[str]]]:
    """The medians as rows under ``header``: the current tree, nchan and their ratio, then for
    each ``--compare`` revision its figure and the ratio current / revision (columns that exist
    only when revisions ran, so the table without them is unchanged), then notes."""
    revisions = revision_targets(medians)
    header = ["scenario", "size", "metric", "better", "tornado_sse", "nchan", "ratio"]
    for target in revisions:
        header += [target, "ratio vs %s" % target.split("@", 1)[1]]
    header.append("notes")
    rows = []
    seen: list[tuple[str, int]] = []
    for m in medians.values():
        if (m["scenario"], m["size"]) not in seen:
            seen.append((m["scenario"], m["size"]))
    for scenario, size in seen:
        gw = medians.get("%s|%d|%s" % (scenario, size, GATEWAY))
        nc = medians.get("%s|%d|%s" % (scenario, size, NCHAN))
        revs = [medians.get("%s|%d|%s" % (scenario, size, t)) for t in revisions]
        notes = []
        for side, m in ((GATEWAY, gw), *zip(revisions, revs, strict=True), (NCHAN, nc)):
            if m is None:
                continue
            if m["loadgen_saturated"]:
                notes.append(
                    "LOAD GENERATOR SATURATED vs %s: load generator + mock backend used %.0f%% "
                    "of their core, so the %s figure is a lower bound"
                    % (side, m["load_side_cpu_pct_max"], side)
                )
            elif (m["load_side_cpu_pct_max"] or 0) >= BUSY:
                notes.append(
                    "load generator + mock backend at up to %.0f%% of their core vs %s: "
                    "that figure may be partly limited by the load side"
                    % (m["load_side_cpu_pct_max"], side)
                )
            if (m["foreign_cpu_pct_max"] or 0) >= DISTURBED:
                notes.append(
                    "other processes used up to %.0f%% of a core during %s runs"
                    % (m["foreign_cpu_pct_max"], side)
                )
            if m["failed_runs"]:
                notes.append("%s: %d run(s) failed" % (side, m["failed_runs"]))
        for metric, label, better in HEADLINE[scenario]:
            g = gw["metrics"].get(metric) if gw else None
            n = nc["metrics"].get(metric) if nc else None
            nchan_cell = fmt(n)
            if n is None:
                nchan_cell = "n/a (no batch API)" if scenario == "batch" and baseline else "-"
            row = [
                scenario,
                "%d %s" % (size, scenarios.SIZE_MEANS[scenario]),
                label,
                better,
                fmt(g),
                nchan_cell,
                ratio(g, n),
            ]
            for rm in revs:
                r = rm["metrics"].get(metric) if rm else None
                row += [fmt(r), ratio(g, r)]
            rows.append(row + ["; ".join(notes)])
            notes = []
        if gw and gw["checks"]:

            def checks(m: dict[str, Any] | None) -> str:
                if not m or not m["checks"]:
                    return "-"
                return ", ".join(
                    "%s %s" % (CHECK_LABELS.get(k, k), v) for k, v in m["checks"].items()
                )

            row = [scenario, "", "checks (runs passed)", "", checks(gw), checks(nc), ""]
            for rm in revs:
                row += [checks(rm), ""]
            rows.append(row + [""])
    return header, rows


def render(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]
    line = "  ".join(h.ljust(widths[i]) for i, h in enumerate(header))
    out = [line, "  ".join("-" * w for w in widths)]
    for r in rows:
        out.append("  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip())
    return "\n".join(out)


def goals(medians: dict[str, Any]) -> list[dict[str, Any]]:
    """The performance targets of the issue, evaluated on the medians present."""

    def get(scenario: str, size: int | None, target: str, metric: str) -> float | None:
        cands = [
            m
            for m in medians.values()
            if m["scenario"] == scenario
            and m["target"] == target
            and (size is None or m["size"] == size)
        ]
        if not cands:
            return None
        m = max(cands, key=lambda c: c["size"])
        return m["metrics"].get(metric)

    out = []

    def add(name: str, measured: str, met: bool | None) -> None:
        out.append({"goal": name, "measured": measured, "met": met})

    g, n = (get("connections", 10000, t, "rss_per_stream_kib") for t in (GATEWAY, NCHAN))
    if g is not None:
        if n:
            add(
                "RSS per held stream at 10k <= 1.5x nchan",
                "%.2f KiB vs %.2f KiB (%.2fx)" % (g, n, g / n),
                g <= 1.5 * n,
            )
        else:
            add("RSS per held stream at 10k <= 1.5x nchan", "%.2f KiB (no baseline)" % g, None)
    for m in medians.values():
        if m["scenario"] == "connections" and m["target"] == GATEWAY:
            v = m["metrics"].get("connects_per_s")
            if v is not None:
                add(
                    ">= 1,500 connects/s incl. callback (%d streams)" % m["size"],
                    "%s/s" % fmt(v),
                    v >= 1500,
                )
    for m in medians.values():
        if m["scenario"] == "jwt" and m["target"] == GATEWAY:
            callback = medians.get("connections|%d|%s" % (m["size"], GATEWAY))
            v = m["metrics"].get("connects_per_s")
            c = callback["metrics"].get("connects_per_s") if callback else None
            if v is not None and c:
                add(
                    "JWT connects/s >= 2.5x callback connects/s (%d streams)" % m["size"],
                    "%s/s vs %s/s (%.2fx)" % (fmt(v), fmt(c), v / c),
                    v >= 2.5 * c,
                )
    v = get("unicast", None, GATEWAY, "sends_per_s")
    if v is not None:
        add(">= 4,000 single sends/s", "%s/s" % fmt(v), v >= 4000)
    s, h = (get(name, None, GATEWAY, "sends_per_s") for name in ("socket", "unicast"))
    if s is not None and h:
        add(
            "single sends/s over the socket >= 10x over HTTP",
            "%s/s vs %s/s (%.1fx)" % (fmt(s), fmt(h), s / h),
            s >= 10 * h,
        )
    s, h = (get(name, None, GATEWAY, "latency_p99_ms") for name in ("socket", "unicast"))
    if s is not None and h is not None:
        add(
            "p99 at 500 sends/s over the socket <= over HTTP",
            "%.2f ms vs %.2f ms" % (s, h),
            s <= h,
        )
    v = get("batch", None, GATEWAY, "events_per_s")
    if v is not None:
        add(">= 20,000 events/s through batches", "%s/s" % fmt(v), v >= 20000)
    v = get("unicast", None, GATEWAY, "latency_p99_ms")
    if v is not None:
        add("p99 <= 5 ms at 500 sends/s", "%.2f ms" % v, v <= 5)
    g, n = (get("heartbeat", 5000, t, "cpu_pct") for t in (GATEWAY, NCHAN))
    if g is not None:
        if n is not None:
            add(
                "heartbeat CPU (5,000 streams, 1 s) <= nchan's",
                "%.2f%% vs %.2f%%" % (g, n),
                g <= n,
            )
        else:
            add("heartbeat CPU (5,000 streams, 1 s) <= nchan's", "%.2f%% (no baseline)" % g, None)
    v = get("fanout", 10000, GATEWAY, "time_to_last_ms")
    if v is not None:
        add("one publish to 10,000 subscribers in <= 250 ms", "%.0f ms" % v, v <= 250)
    # Against each --compare revision: at least as many connects/s as it made, at every size.
    for target in revision_targets(medians):
        for m in medians.values():
            if m["scenario"] != "connections" or m["target"] != GATEWAY:
                continue
            old = medians.get("connections|%d|%s" % (m["size"], target))
            g = m["metrics"].get("connects_per_s")
            r = old["metrics"].get("connects_per_s") if old else None
            if g is not None and r:
                add(
                    "connects/s incl. callback (%d streams) >= %s's" % (m["size"], target),
                    "%s/s vs %s/s (%.2fx)" % (fmt(g), fmt(r), g / r),
                    g >= r,
                )
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runner = Runner(args)
    try:
        return run(args, runner)
    finally:
        runner.cleanup()


def run(args: argparse.Namespace, runner: Runner) -> int:
    """Everything :func:`main` does once the runner exists; the caller removes checkouts."""
    problem = runner.checkout()
    if problem is not None:
        print("benchmarks: " + problem, file=sys.stderr)
        shutil.rmtree(runner.workdir, ignore_errors=True)
        return 2
    info = machine_info(runner.uvloop)
    if runner.revisions:
        info["compare"] = [
            {"target": target, "rev": c.rev, "commit": c.commit}
            for target, c in runner.revisions.items()
        ]
    print(
        "machine: %s CPUs (%s), %s GiB; Python %s, Tornado %s, pycurl %s; nginx %s, nchan %s"
        % (
            info["nproc"],
            info.get("cpu", "?"),
            info.get("memory_gib", "?"),
            info["python"],
            info["tornado"],
            "yes" if info["pycurl"] else "no",
            info["nginx"],
            info["nchan"],
        ),
        flush=True,
    )
    if runner.server_cpu is not None:
        print("pinning: server on CPU 0, load generator and mock backend on CPU 1", flush=True)
    for target, c in runner.revisions.items():
        print("compare: %s is commit %s, run from %s" % (target, c.commit, c.path), flush=True)
    started = time.monotonic()
    records = runner.run_all()
    if not runner.baseline:
        reason = "--no-baseline" if args.no_baseline else runner.baseline_note
        print("baseline: nginx + nchan not run (%s)" % reason)
    medians = aggregate(records)
    header, rows = table(medians, runner.baseline)
    print()
    print("medians of %d run(s) per server, %s" % (args.runs, legend(list(runner.revisions))))
    print(render(header, rows))
    results_goals = goals(medians)
    if results_goals:
        print()
        print(
            render(
                ["goal", "measured", "met"],
                [
                    [g["goal"], g["measured"], {True: "met", False: "NOT MET", None: "-"}[g["met"]]]
                    for g in results_goals
                ],
            )
        )
    profiled = [r for r in records if "profile" in r]
    for r in profiled:
        print()
        print(profiles.render(r["profile"]))
    out_path = write_results(
        args.json,
        "run",
        {
            "machine": info,
            "args": vars(args),
            "baseline": runner.baseline,
            "baseline_note": runner.baseline_note,
            "compare": info.get("compare", []),
            "pinned": runner.server_cpu is not None,
            "seconds": round(time.monotonic() - started, 1),
            "medians": medians,
            "goals": results_goals,
            "runs": records,
        },
    )
    print()
    print("results written to %s (%.0f s)" % (out_path, time.monotonic() - started))
    failed = sum(1 for r in records if "error" in r)
    broken = [
        "%s %d %s run %d: %s" % (r["scenario"], r["size"], r["target"], r["run"], name)
        for r in records
        for name in CHECKS.get(r["scenario"], [])
        if "checks" in r and not r["checks"].get(name)
    ]
    for line in broken:
        print("CHECK FAILED: " + line)
    if failed:
        print("%d run(s) failed; their logs are in %s" % (failed, runner.workdir))
    else:
        shutil.rmtree(runner.workdir, ignore_errors=True)
    return 1 if failed or broken else 0
