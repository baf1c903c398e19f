"""The log of ``--processes N``: every line says which process wrote it."""

from __future__ import annotations

import json
import os

import pytest


@pytest.mark.gen_test(timeout=60)
async def test_every_log_line_of_processes_n_names_its_worker_and_pid(cluster, backend):
    (gw,) = await cluster(1, "--processes", "2", LOG_FORMAT="json")
    for i in range(4):
        stream = await gw.stream("/sse/w%d" % i)
        assert stream.status == 200
        await stream.aclose()
    await backend.wait_for_calls("disconnect", 4)
    await gw.stop()
    entries = [json.loads(line) for line in gw.log]
    assert entries and all(isinstance(e["pid"], int) for e in entries)
    supervisor = [e for e in entries if "worker" not in e]
    workers = [e for e in entries if "worker" in e]
    assert {e["pid"] for e in supervisor} == {gw.pid}
    # Which worker takes which stream is the kernel's choice; each says it is one of the two.
    assert workers and {e["worker"] for e in workers} <= {0, 1}
    assert gw.pid not in {e["pid"] for e in workers}
    assert len({e["pid"] for e in workers}) == len({e["worker"] for e in workers})
    closed = [e for e in workers if e["msg"] == "stream closed"]
    assert len(closed) == 4
    assert all(isinstance(e["duration"], float) for e in closed)  # typed, not text
    assert os.getpid() not in {e["pid"] for e in entries}
