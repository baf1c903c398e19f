"""The load generator: one process per scenario run, driving one server under test.

Run by the benchmark runner as ``python -m benchmarks.loadgen SPEC_JSON``; prints one line
``RESULT {...}`` on stdout. asyncio with raw transports (uvloop when installed). It measures its
own CPU over every measurement window, so the runner can say when the load side, not the server,
was the limit.
"""

from __future__ import annotations

import json
import sys
import traceback
from typing import Any

from . import eventloop, scenarios
from .context import Context


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    ctx = Context(spec)
    runner = scenarios.RUNNERS[spec["scenario"]]
    try:
        return await runner(ctx, **spec["params"])
    finally:
        await ctx.profile_stop()


def main() -> None:
    spec = json.loads(sys.argv[1])
    loop = eventloop.loop_name("auto" if spec.get("uvloop", True) else "asyncio")
    try:
        result = eventloop.run(run(spec), loop)
        result["uvloop"] = loop == "uvloop"
    except Exception as exc:  # reported to the runner, which marks the run failed
        traceback.print_exc()
        result = {"error": "%s: %s" % (type(exc).__name__, exc)}
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
