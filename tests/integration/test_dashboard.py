"""``/internal/stats`` and ``/internal/dashboard``: this process's figures, and who may see them."""

from __future__ import annotations

import base64
import json
import os
import re

import pytest

from tests.support.backend import Answer
from tests.support.internal import cors_headers, error_code


def _metric(text: str, name: str, labels: str = "") -> float:
    match = re.search(r"^%s%s (\S+)$" % (re.escape(name), re.escape(labels)), text, re.MULTILINE)
    assert match, (name, labels)
    return float(match.group(1))


@pytest.mark.gen_test(timeout=10)
async def test_stats_count_connects_disconnects_events_and_callbacks_of_this_process(
    gateway, backend
):
    backend.answer_for = lambda body: Answer(
        status=401 if "denied" in body["request"]["url"] else 200
    )
    gw = gateway()
    stream = await gw.open("/sse/a")
    refused = await gw.stream("/sse/denied")
    assert refused.status == 401
    (connect, _) = await backend.wait_for_calls("connect", count=2)
    for i in range(3):
        status, _ = await gw.send({"token": connect.token, "event": {"data": str(i)}})
        assert status == 200
    await stream.wait_events(3)
    status, _ = await gw.send({"token": connect.token, "close": True})
    assert status == 200
    await backend.wait_for_calls("disconnect", token=connect.token)

    response = await gw.get("/internal/stats", internal=True)
    assert response.code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    stats = json.loads(response.body)
    assert stats["pid"] == os.getpid()
    assert stats["started"] <= stats["now"]
    assert stats["open_streams"] == 0
    assert stats["connects"]["accepted"] == 1
    assert stats["connects"]["rejected"] == 1
    assert stats["disconnects"] == {"client_closed": 0, "server_closed": 1, "error": 0}
    assert stats["events"] == 3
    assert stats["slow_consumer_closes"] == 0
    assert stats["callbacks"]["connect"]["count"] == 2
    assert stats["callbacks"]["connect"]["seconds"] > 0
    buckets = stats["callbacks"]["connect"]["buckets"]
    assert buckets[-1] == ["+Inf", 2]
    assert [count for _, count in buckets] == sorted(count for _, count in buckets)

    # The same figures as /metrics: both read one registry.
    text = (await gw.get("/metrics", internal=True)).body.decode()
    assert stats["connects"]["accepted"] == _metric(
        text, "tornado_sse_connects_total", '{outcome="accepted"}'
    )
    assert stats["events"] == _metric(text, "tornado_sse_frames_written_total", '{kind="event"}')


def _basic(user: str, password: str) -> dict[str, str]:
    pair = base64.b64encode(("%s:%s" % (user, password)).encode()).decode()
    return {"Authorization": "Basic " + pair}


@pytest.mark.parametrize("path", ["/internal/stats", "/internal/dashboard"])
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        _basic("dashboard", "wrong"),
        {"Authorization": "Basic s3cret"},  # not base64 of user:password
        _basic("s3cret", ""),  # the secret is the password, not the user
    ],
)
@pytest.mark.gen_test(timeout=10)
async def test_stats_and_dashboard_without_the_secret_are_401_with_both_challenges(
    gateway, path, headers
):
    gw = gateway(internal_secret="s3cret")
    stream = await gw.open("/sse/secret-path-xyz")
    assert stream.status == 200
    refused = await gw.get(path, headers=headers)
    assert error_code(refused, 401) == "UNAUTHORIZED"
    assert refused.headers.get_list("WWW-Authenticate") == [
        'Bearer realm="tornado_sse internal API"',
        'Basic realm="tornado_sse internal API", charset="UTF-8"',
    ]
    assert b"secret-path-xyz" not in refused.body and b"open_streams" not in refused.body


@pytest.mark.parametrize(
    "headers",
    [{"Authorization": "Bearer s3cret"}, _basic("dashboard", "s3cret"), _basic("", "s3cret")],
)
@pytest.mark.gen_test(timeout=10)
async def test_stats_and_dashboard_with_the_secret_as_bearer_or_basic_password(gateway, headers):
    gw = gateway(internal_secret="s3cret")
    stream = await gw.open("/sse/secret-path-xyz")
    assert stream.status == 200
    allowed = await gw.get("/internal/stats", headers=headers)
    assert allowed.code == 200 and json.loads(allowed.body)["open_streams"] == 1

    page = await gw.get(
        "/internal/dashboard", headers={**headers, "Origin": "https://page.example"}
    )
    assert page.code == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "connect-src 'self'" in page.headers["Content-Security-Policy"]
    assert cors_headers(page.headers) == {}  # internal: never CORS
    body = page.body.decode()
    assert "/internal/stats" in body
    assert "secret-path-xyz" not in body and "s3cret" not in body  # the page holds no data
    assert "http://" not in body and "https://" not in body  # nothing from elsewhere (no CDN)


@pytest.mark.gen_test(timeout=10)
async def test_stats_and_dashboard_are_only_on_internal_port_when_it_is_set(gateway):
    gw = gateway(internal_port=True)
    for path in ("/internal/stats", "/internal/dashboard"):
        public = await gw.get(path)
        assert error_code(public, 404) == "NOT_FOUND", path
        internal = await gw.get(path, internal=True)
        assert internal.code == 200, path


@pytest.mark.parametrize("path", ["/internal/send", "/internal/subscribe"])
@pytest.mark.gen_test(timeout=10)
async def test_json_posts_take_the_same_credentials_and_send_the_same_challenges(gateway, path):
    gw = gateway(internal_secret="s3cret")
    body = {"channel": "c"} if path == "/internal/send" else {"user": "u", "channels": ["c"]}
    refused = await gw.post(body, path=path, headers=_basic("x", "wrong"))
    assert error_code(refused, 401) == "UNAUTHORIZED"
    assert refused.headers.get_list("WWW-Authenticate") == [
        'Bearer realm="tornado_sse internal API"',
        'Basic realm="tornado_sse internal API", charset="UTF-8"',
    ]
    for headers in ({"Authorization": "bearer s3cret"}, _basic("backend", "s3cret")):
        allowed = await gw.post(body, path=path, headers=headers)
        assert allowed.code == 200, allowed.body
