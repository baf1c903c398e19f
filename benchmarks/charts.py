"""``python -m benchmarks.charts RESULTS.json --out docs/images/``: bar charts of a results file.

For each scenario of ``python -m benchmarks --json`` one PNG, ``bench-<scenario>.png``: a panel
per headline metric (:data:`benchmarks.runner.HEADLINE`), the medians of tornado_sse beside its
baseline (nginx + nchan) and any ``--compare`` revision, grouped by size, with the ratio
tornado_sse / baseline over each group. Then ``bench-cpu-per-op.png``: the server's CPU
microseconds per operation of every scenario and size that has them, on a log scale (they
span two orders of magnitude). Every chart names the commit, the run count and the machine.

Needs matplotlib, which the gateway does not: ``pip install '.[charts]'``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .runner import GATEWAY, HEADLINE, NCHAN, revision_targets
from .scenarios import SIZE_MEANS

#: The colour of each kind of target: the current tree, the baseline, older revisions.
COLORS = {GATEWAY: "#2e90fa", NCHAN: "#98a2b3"}
REVISION_COLORS = ("#7a5af8", "#f79009", "#12b76a")

#: The CPU-per-operation metric, and what an operation is in each scenario.
CPU_METRIC = "cpu_us_per_op"
OPERATION = {
    "connections": "connect",
    "jwt": "connect",
    "unicast": "send",
    "batch": "event",
    "fanout": "delivery",
    "heartbeat": "heartbeat",
    "churn": "cycle",
}


def targets(medians: dict[str, Any]) -> list[str]:
    """The targets that have medians: tornado_sse, its ``--compare`` revisions, nchan."""
    found = {m["target"] for m in medians.values()}
    order = [GATEWAY, *revision_targets(medians), NCHAN]
    return [t for t in order if t in found]


def color(target: str, order: list[str]) -> str:
    if target in COLORS:
        return COLORS[target]
    revisions = [t for t in order if t not in COLORS]
    return REVISION_COLORS[revisions.index(target) % len(REVISION_COLORS)]


def value(medians: dict[str, Any], scenario: str, size: int, target: str, metric: str) -> Any:
    """The median of ``metric``, or None where that target did not measure it."""
    entry = medians.get("%s|%d|%s" % (scenario, size, target))
    figure = entry["metrics"].get(metric) if entry else None
    return figure if isinstance(figure, (int, float)) and not isinstance(figure, bool) else None


def sizes_of(medians: dict[str, Any], scenario: str) -> list[int]:
    return sorted({m["size"] for m in medians.values() if m["scenario"] == scenario})


def caption(data: dict[str, Any]) -> str:
    """Which run the chart shows: commit, runs, machine (shared, as every run here is)."""
    info = data.get("machine", {})
    head = (info.get("gateway_git_head") or "?")[:7]
    return "commit %s · medians of %s runs per target · %s CPUs (%s), a shared machine" % (
        head,
        data.get("args", {}).get("runs", "?"),
        info.get("nproc", "?"),
        info.get("cpu", "?"),
    )


def ratio_text(figure: float | None, base: float | None) -> str:
    if figure is None or not base:
        return ""
    return "%.2fx" % (figure / base)


def scenario_chart(data: dict[str, Any], scenario: str, out: Path) -> Path | None:
    """``bench-<scenario>.png`` in ``out``, or None when the results lack the scenario."""
    import matplotlib.pyplot as plt

    medians = data["medians"]
    sizes = sizes_of(medians, scenario)
    metrics = [(m, label, better) for m, label, better in HEADLINE[scenario] if better != "-"]
    if not sizes or not metrics:
        return None
    order = targets(medians)
    width = 0.8 / len(order)
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics) + 0.6, 3.7))
    axes = list(axes) if len(metrics) > 1 else [axes]
    for ax, (metric, label, better) in zip(axes, metrics, strict=True):
        top = 0.0
        for i, target in enumerate(order):
            figures = [value(medians, scenario, size, target, metric) for size in sizes]
            xs = [k + (i - (len(order) - 1) / 2) * width for k in range(len(sizes))]
            heights = [f if f is not None else 0 for f in figures]
            top = max([top, *heights])
            ax.bar(xs, heights, width, color=color(target, order), label=target)
            for x, f in zip(xs, figures, strict=True):
                if f is None:
                    ax.text(x, 0, "n/a", ha="center", va="bottom", fontsize=7, color="#667085")
        for k, size in enumerate(sizes):
            mine = value(medians, scenario, size, GATEWAY, metric)
            base = value(medians, scenario, size, NCHAN, metric)
            text = ratio_text(mine, base)
            if text:
                peak = max(v or 0 for v in (mine, base))
                ax.text(k, peak, text, ha="center", va="bottom", fontsize=8, color="#1d2330")
        ax.set_ylim(0, (top or 1) * 1.18)
        ax.set_xticks(range(len(sizes)), ["%d" % s for s in sizes], fontsize=8)
        ax.set_xlabel(SIZE_MEANS.get(scenario, ""), fontsize=8)
        ax.set_title("%s\n(%s is better)" % (label, better), fontsize=9)
        ax.tick_params(axis="y", labelsize=8)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, fontsize=8, frameon=False, loc="upper right", ncol=len(order))
    fig.suptitle(
        "%s: tornado_sse against its baseline (ratio = tornado_sse / %s)" % (scenario, NCHAN),
        fontsize=10,
    )
    fig.text(0.5, 0.01, caption(data), ha="center", fontsize=7, color="#667085")
    fig.tight_layout(rect=(0, 0.04, 1, 0.93))
    path = out / ("bench-%s.png" % scenario)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def cpu_chart(data: dict[str, Any], out: Path) -> Path | None:
    """``bench-cpu-per-op.png`` in ``out``: CPU µs per operation, every scenario and size that
    has it; None when none has."""
    import matplotlib.pyplot as plt

    medians = data["medians"]
    order = targets(medians)
    groups = [
        (scenario, size)
        for scenario in HEADLINE
        for size in sizes_of(medians, scenario)
        if any(value(medians, scenario, size, t, CPU_METRIC) is not None for t in order)
    ]
    if not groups:
        return None
    width = 0.8 / len(order)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.0 * len(groups) + 1.5), 4.4))
    for i, target in enumerate(order):
        figures = [value(medians, s, n, target, CPU_METRIC) for s, n in groups]
        xs = [k + (i - (len(order) - 1) / 2) * width for k in range(len(groups))]
        shown = [(x, f) for x, f in zip(xs, figures, strict=True) if f is not None]
        ax.bar(
            [x for x, _ in shown],
            [f for _, f in shown],
            width,
            color=color(target, order),
            label=target,
        )
    for k, (scenario, size) in enumerate(groups):
        mine = value(medians, scenario, size, GATEWAY, CPU_METRIC)
        base = value(medians, scenario, size, NCHAN, CPU_METRIC)
        text = ratio_text(mine, base)
        if text:
            ax.text(k, max(mine or 0, base or 0) * 1.08, text, ha="center", fontsize=7)
    ax.set_yscale("log")
    labels = ["%s\n%d\nper %s" % (s, n, OPERATION.get(s, "op")) for s, n in groups]
    ax.set_xticks(range(len(groups)), labels, fontsize=7)
    ax.set_ylabel("server CPU per operation (µs, log scale; lower is better)", fontsize=8)
    ax.tick_params(axis="y", labelsize=8)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.legend(fontsize=8, frameon=False, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=3)
    ax.set_title("Server CPU per operation (ratio = tornado_sse / %s)" % NCHAN, fontsize=10, pad=22)
    fig.text(0.5, 0.01, caption(data), ha="center", fontsize=7, color="#667085")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    path = out / "bench-cpu-per-op.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def charts(data: dict[str, Any], out: Path) -> list[Path]:
    """Write every chart of the results ``data`` into ``out`` (created); the paths written."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    out.mkdir(parents=True, exist_ok=True)
    written = [scenario_chart(data, scenario, out) for scenario in HEADLINE]
    written.append(cpu_chart(data, out))
    return [path for path in written if path is not None]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.charts", description=__doc__)
    p.add_argument("results", help="a results file of python -m benchmarks --json")
    p.add_argument("--out", default="docs/images", help="where the PNGs go (default docs/images)")
    args = p.parse_args(argv)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print(
            "python -m benchmarks.charts: needs matplotlib: pip install '.[charts]'",
            file=sys.stderr,
        )
        return 2
    with open(args.results, encoding="utf-8") as f:
        data = json.load(f)
    for path in charts(data, Path(args.out)):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
