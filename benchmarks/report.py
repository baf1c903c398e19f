"""``python -m benchmarks.report RESULTS.json``: a results file as Markdown tables.

Prints the machine, the medians with the nchan figures and ratios, the goals, and (with
``--profiles``) the profile summaries, ready to paste into ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from .runner import GATEWAY, HEADLINE, NCHAN, fmt, goals, legend, revision_targets, table


def markdown(header: list[str], rows: list[list[str]]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def with_ranges(
    header: list[str], rows: list[list[str]], runs: list[dict[str, Any]]
) -> list[list[str]]:
    """Add the smallest and largest value over the runs to each median cell (the columns
    under ``header`` named after a target)."""
    labels = {(s, label): metric for s, items in HEADLINE.items() for metric, label, _ in items}
    targets = {GATEWAY, NCHAN, *(h for h in header if h.startswith(GATEWAY + "@"))}
    columns = [(i, h) for i, h in enumerate(header) if h in targets]
    out = []
    for row in rows:
        scenario, size_text, label = row[0], row[1], row[2]
        metric = labels.get((scenario, label))
        if metric is None or not size_text:
            out.append(row)
            continue
        size = int(size_text.split()[0])
        row = list(row)
        for col, target in columns:
            values = [
                r["metrics"][metric]
                for r in runs
                if r["scenario"] == scenario
                and r["size"] == size
                and r["target"] == target
                and isinstance(r.get("metrics", {}).get(metric), (int, float))
            ]
            if len(values) > 1:
                row[col] += " (%s to %s)" % (fmt(min(values)), fmt(max(values)))
        out.append(row)
    return out


def machine(info: dict[str, Any]) -> str:
    pycurl = info.get("pycurl")
    return "\n".join(
        [
            "- CPUs: %s (`nproc`), %s" % (info.get("nproc"), info.get("cpu", "?")),
            "- memory: %s GiB; kernel %s" % (info.get("memory_gib", "?"), info.get("kernel")),
            "- Python %s, Tornado %s, pycurl: %s"
            % (
                info.get("python"),
                info.get("tornado"),
                " ".join((pycurl or "not installed").split()[:2]),
            ),
            "- load side: uvloop %s" % (info.get("uvloop") or "not installed"),
            "- nginx %s, nchan (libnginx-mod-nchan) %s" % (info.get("nginx"), info.get("nchan")),
            "- gateway checkout %s, package sources sha256 %s"
            % (info.get("gateway_git_head"), info.get("gateway_sources_sha256")),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__)
    p.add_argument("results")
    p.add_argument("--profiles", action="store_true", help="also print the profile summaries")
    args = p.parse_args(argv)
    with open(args.results, encoding="utf-8") as f:
        data = json.load(f)
    print(machine(data["machine"]))
    print()
    runs = data["args"]["runs"]
    revisions = revision_targets(data["medians"])
    print("Medians of %d run(s) per server; %s." % (runs, legend(revisions)))
    for entry in data.get("compare", []):
        print("%s is commit %s." % (entry["target"], entry["commit"]))
    print()
    header, rows = table(data["medians"], data["baseline"])
    if runs > 1:
        rows = with_ranges(header, rows, data["runs"])
        targets = {GATEWAY, NCHAN, *revisions}
        header = [h + " (min to max)" if h in targets else h for h in header]
    print(markdown(header, rows))
    found = goals(data["medians"])
    if found:
        print()
        rows = [
            [g["goal"], g["measured"], {True: "met", False: "**not met**", None: "-"}[g["met"]]]
            for g in found
        ]
        print(markdown(["goal", "measured (median)", "verdict"], rows))
    if args.profiles:
        for rec in data["runs"]:
            prof = rec.get("profile")
            if not prof:
                continue
            print()
            print("%s %d: %d samples" % (rec["scenario"], rec["size"], prof["samples"]))
            for key in ("self_by_area", "self", "inclusive_tornado_sse"):
                print()
                print(markdown([key, "% of samples"], [[n, "%.1f" % v] for n, v in prof[key]]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
