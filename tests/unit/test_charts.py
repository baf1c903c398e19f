"""``python -m benchmarks.charts``: a small results file in, one valid PNG per scenario and the
CPU-per-operation chart out. Skipped only where matplotlib is not installed (the ``test`` extra
installs it)."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("matplotlib")

from benchmarks import charts  # noqa: E402  (after the skip: it needs matplotlib to draw)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _median(scenario: str, size: int, target: str, **metrics: float) -> dict[str, Any]:
    return {"scenario": scenario, "size": size, "target": target, "metrics": metrics}


def _results() -> dict[str, Any]:
    medians = [
        _median(
            "connections",
            100,
            "tornado_sse",
            connects_per_s=1900.0,
            connect_p99_ms=90.0,
            cpu_us_per_connect=500.0,
            cpu_us_per_op=500.0,
            rss_per_stream_kib=14.0,
        ),
        _median(
            "connections",
            100,
            "nchan",
            connects_per_s=6000.0,
            connect_p99_ms=12.0,
            cpu_us_per_connect=60.0,
            cpu_us_per_op=60.0,
            rss_per_stream_kib=10.0,
        ),
        _median(
            "connections",
            1000,
            "tornado_sse",
            connects_per_s=1500.0,
            connect_p99_ms=200.0,
            cpu_us_per_connect=650.0,
            cpu_us_per_op=650.0,
            rss_per_stream_kib=15.0,
        ),
        _median(
            "connections",
            1000,
            "tornado_sse@abc1234",
            connects_per_s=1400.0,
            connect_p99_ms=220.0,
            cpu_us_per_connect=700.0,
            cpu_us_per_op=700.0,
            rss_per_stream_kib=15.5,
        ),
        _median(
            "connections",
            1000,
            "nchan",
            connects_per_s=5500.0,
            connect_p99_ms=20.0,
            cpu_us_per_connect=62.0,
            cpu_us_per_op=62.0,
            rss_per_stream_kib=10.5,
        ),
        # The baseline has no batch API: a scenario with tornado_sse alone.
        _median("batch", 100, "tornado_sse", events_per_s=22000.0, cpu_us_per_op=18.0),
    ]
    return {
        "machine": {"nproc": 2, "cpu": "test CPU", "gateway_git_head": "0123456789abcdef"},
        "args": {"runs": 3},
        "medians": {"%s|%d|%s" % (m["scenario"], m["size"], m["target"]): m for m in medians},
    }


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC), path
    assert data[12:16] == b"IHDR" and data.endswith(b"IEND\xaeB`\x82"), path
    return struct.unpack(">II", data[16:24])


def test_charts_write_one_valid_png_per_scenario_and_the_cpu_chart(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    results.write_text(json.dumps(_results()))
    out = tmp_path / "images"
    assert charts.main([str(results), "--out", str(out)]) == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == ["bench-batch.png", "bench-connections.png", "bench-cpu-per-op.png"]
    for name in written:
        width, height = _png_size(out / name)
        assert width > 400 and height > 200, (name, width, height)


def test_charts_of_results_without_cpu_figures_skip_the_cpu_chart(tmp_path: Path) -> None:
    data = _results()
    for entry in data["medians"].values():
        entry["metrics"].pop("cpu_us_per_op", None)
    written = charts.charts(data, tmp_path)
    assert sorted(p.name for p in written) == ["bench-batch.png", "bench-connections.png"]


def test_the_ratio_is_tornado_sse_over_the_baseline() -> None:
    medians = _results()["medians"]
    mine = charts.value(medians, "connections", 100, "tornado_sse", "connects_per_s")
    base = charts.value(medians, "connections", 100, "nchan", "connects_per_s")
    assert charts.ratio_text(mine, base) == "0.32x"
    assert charts.ratio_text(mine, None) == ""  # no baseline figure: no ratio
    assert charts.value(medians, "batch", 100, "nchan", "events_per_s") is None
    assert charts.targets(medians) == ["tornado_sse", "tornado_sse@abc1234", "nchan"]
