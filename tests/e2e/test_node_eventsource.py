"""The npm ``eventsource`` client under node against the gateway: named, multi-line and UTF-8
events, ids, and its reconnect with a non-ASCII ``Last-Event-ID`` after the backend closed it.

``tests/e2e/node/client.mjs`` reports each ``open``, ``error`` and event as a JSON line; the
package is installed from ``tests/e2e/node/package.json`` (``npm ci``, which tests/run.py runs).
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.support.waiting import wait_until

NODE_DIR = Path(__file__).resolve().parent / "node"


class NodeClient:
    """``node client.mjs <url> <types>...`` with its reports in :attr:`reports`."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.reports: list[dict[str, Any]] = []
        self.stderr = b""
        self._changed = asyncio.Event()
        self._pump = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            self.reports.append(json.loads(line))
            self._changed.set()

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.reports if r["kind"] == kind]

    async def wait_for(self, predicate: Any, timeout: float = 10.0) -> None:
        try:
            await wait_until(lambda: predicate(self), self._changed, timeout)
        except TimeoutError:
            raise AssertionError("node client reported %r" % self.reports) from None

    async def stop(self) -> None:
        """Close its stdin (it closes the EventSource and exits), or kill it by its PID."""
        if self.process.returncode is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                await asyncio.wait_for(self.process.wait(), 5)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        await self._pump


async def start_node_client(url: str, *types: str) -> NodeClient:
    node = shutil.which("node")
    assert node, "node is needed for this test (Debian package 'nodejs')"
    assert (NODE_DIR / "node_modules" / "eventsource").is_dir(), (
        "the npm eventsource package is missing: run `npm ci --prefix tests/e2e/node` "
        "(tests/run.py does)"
    )
    process = await asyncio.create_subprocess_exec(
        node,
        str(NODE_DIR / "client.mjs"),
        url,
        *types,
        cwd=str(NODE_DIR),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return NodeClient(process)


@pytest.mark.gen_test(timeout=60)
async def test_npm_eventsource_receives_events_and_reconnects_with_a_non_ascii_last_event_id(
    gateway, backend
):
    gw = gateway()
    client = await start_node_client(gw.base_url + "/sse/node?x=1", "update")
    try:
        await client.wait_for(lambda c: c.of("open"))
        (connect,) = await backend.wait_for_calls("connect")
        assert connect.body["request"]["url"] == "/sse/node?x=1"
        sent = [
            {"data": "plain"},
            {"name": "update", "data": "line one\nline two\n\nline four"},
            {"name": "update", "data": "héllo wörld ✓ 🎉 — 日本語"},
            {"data": "crlf\r\nand\rcr", "id": "ünï"},
        ]
        for event in sent:
            status, _ = await gw.send({"token": connect.token, "event": event})
            assert status == 200
        await client.wait_for(lambda c: len(c.of("event")) >= len(sent))
        assert [(e["type"], e["data"], e["lastEventId"]) for e in client.of("event")] == [
            ("message", "plain", ""),
            ("update", "line one\nline two\n\nline four", ""),
            ("update", "héllo wörld ✓ 🎉 — 日本語", ""),
            ("message", "crlf\nand\ncr", "ünï"),
        ]

        # The backend closes the stream; the client comes back by itself with its last id.
        status, _ = await gw.send({"token": connect.token, "close": True})
        assert status == 200
        second = (await backend.wait_for_calls("connect", count=2, timeout=15))[1]
        assert second.body["request"]["headers"]["last-event-id"] == "ünï"
        await client.wait_for(lambda c: len(c.of("open")) >= 2)
    finally:
        await client.stop()
