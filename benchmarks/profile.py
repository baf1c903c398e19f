"""Summaries of py-spy profiles (``py-spy record --format raw``: collapsed stacks).

``python -m benchmarks.profile FILE...`` prints, for each file, the functions with the most
samples on top of the stack (self) and anywhere in it (inclusive), and self time per source area.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*)\)$")

#: Frames every sample of a running loop has: left out of the inclusive lists.
SKELETON = {
    "_run_module_as_main",
    "_run_code",
    "<module>",
    "main",
    "run",
    "Runner.run",
    "BaseEventLoop.run_until_complete",
    "BaseEventLoop.run_forever",
    "BaseEventLoop._run_once",
}


def _parts(frame: str) -> tuple[str, str]:
    m = _FRAME.match(frame)
    return (m.group("func"), m.group("file")) if m else (frame, "")


def area(frame: str) -> str:
    """The package a frame's code belongs to (``stdlib`` for top-level standard modules)."""
    _, path = _parts(frame)
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    if path.startswith("<") or "/" not in path:
        return "stdlib"
    return path.split("/", 1)[0]


def short(frame: str) -> str:
    """``func (path)`` with the path cut to ``package/module.py``."""
    func, path = _parts(frame)
    for marker in ("site-packages/", "/lib/python3.11/", "/lib/python3.12/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return "%s (%s)" % (func, path) if path else func


def summarize(path: str, top: int = 15) -> dict[str, Any]:
    """Totals, top self and inclusive functions (percent of samples), self time per area."""
    self_counts: Counter[str] = Counter()
    incl_counts: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    total = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = [fr for fr in stack.split(";") if _FRAME.match(fr)]
            if not frames:
                continue
            total += count
            self_counts[short(frames[-1])] += count
            areas[area(frames[-1])] += count
            for fr in set(frames):
                if _parts(fr)[0] in SKELETON:
                    continue
                incl_counts[short(fr)] += count
                if area(fr) == "tornado_sse":
                    ours[short(fr)] += count

    def pct(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(k, 100.0 * v / total) for k, v in counter.most_common(top)] if total else []

    return {
        "file": path,
        "samples": total,
        "self": pct(self_counts),
        "inclusive": pct(incl_counts),
        "inclusive_tornado_sse": pct(ours),
        "self_by_area": pct(areas),
    }


def render(summary: dict[str, Any]) -> str:
    lines = ["%s: %d samples" % (summary["file"], summary["samples"])]
    for key, title in (
        ("self_by_area", "self time by area"),
        ("self", "top functions, self"),
        ("inclusive", "top functions, inclusive (loop skeleton left out)"),
        ("inclusive_tornado_sse", "tornado_sse functions, inclusive"),
    ):
        lines.append("  %s:" % title)
        lines += ["    %5.1f%%  %s" % (p, name) for name, p in summary[key]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    for path in argv if argv is not None else sys.argv[1:]:
        print(render(summarize(path)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
