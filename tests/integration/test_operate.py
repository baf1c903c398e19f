"""Operating the gateway: what its metrics carry, and what ``INTERNAL_SECRET`` guards (as the
README says)."""

from __future__ import annotations

import json

import pytest
from tornado.httpclient import AsyncHTTPClient

from tests.integration.test_observability import sample, scrape


@pytest.mark.gen_test(timeout=15)
async def test_metrics_carry_the_process_collector(gateway):
    text = await scrape(gateway())
    assert sample(text, "process_resident_memory_bytes") > 0
    assert sample(text, "process_open_fds") > 0
    assert sample(text, "process_cpu_seconds_total") > 0
    assert sample(text, "process_start_time_seconds") > 0


@pytest.mark.gen_test(timeout=15)
async def test_internal_secret_guards_the_internal_api_and_nothing_a_browser_uses(gateway, backend):
    gw = gateway(internal_secret="s3cret")
    # Guarded: every route of the internal API, and the metrics.
    send = await gw.post({"channel": "c", "event": {"data": "x"}})
    listing = await gw.get("/internal/connections", internal=True)
    history = await gw.get("/internal/history?channel=c", internal=True)
    metrics = await gw.get("/metrics", internal=True)
    assert (send.code, listing.code, history.code, metrics.code) == (401, 401, 401, 401)
    assert json.loads(send.body)["error"]["code"] == "UNAUTHORIZED"
    # Not guarded: streams, their CORS preflight, and the health endpoints.
    stream = await gw.stream("/sse/browser")
    assert stream.status == 200
    for path in ("/healthz", "/readyz"):
        assert (await gw.get(path)).code == 200
    preflight = await AsyncHTTPClient().fetch(
        gw.base_url + "/sse/browser",
        method="OPTIONS",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "GET"},
        raise_error=False,
    )
    assert preflight.code == 204
