"""Operations: health endpoints, CORS, the connections listing, and the internal API's guards
(wire contract sections 1, 4, 4.3 and 7)."""

from __future__ import annotations

import json
import re

import pytest

from tests.support.backend import Answer
from tests.support.internal import cors_headers, error_code, raw_request

ALLOW_METHODS = "GET, POST, OPTIONS"
ALLOW_HEADERS = "Content-Type, Cache-Control, Last-Event-ID, Authorization, X-Request-ID"

# --------------------------------------------------------------------------------------------
# Health


@pytest.mark.gen_test(timeout=10)
async def test_healthz_is_200_ok(gateway):
    gw = gateway()
    response = await gw.get("/healthz")
    assert response.code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert json.loads(response.body) == {"status": "ok"}


@pytest.mark.gen_test(timeout=10)
async def test_readyz_is_200_ready_when_configured(gateway):
    gw = gateway()
    response = await gw.get("/readyz")
    assert response.code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    body = json.loads(response.body)
    assert body["status"] == "ready"
    assert body["configured"] is True


@pytest.mark.gen_test(timeout=10)
async def test_readyz_is_503_not_ready_without_callback_url(gateway):
    gw = gateway(callback_url=None)
    response = await gw.get("/readyz")
    assert response.code == 503
    assert response.headers["Content-Type"].startswith("application/json")
    body = json.loads(response.body)
    assert body["status"] == "not_ready"
    assert body["configured"] is False
    assert isinstance(body["reasons"], list) and body["reasons"]
    assert all(isinstance(r, str) and r for r in body["reasons"])
    health = await gw.get("/healthz")
    assert (health.code, json.loads(health.body)) == (200, {"status": "ok"})


@pytest.mark.gen_test(timeout=10)
async def test_stream_without_callback_url_is_503_service_not_configured(gateway, backend):
    gw = gateway(callback_url=None)
    stream = await gw.stream()
    assert stream.status == 503
    await stream.read_to_end()
    assert stream.json()["error"]["code"] == "SERVICE_NOT_CONFIGURED"
    assert backend.calls == []


# --------------------------------------------------------------------------------------------
# CORS (section 1)


@pytest.mark.gen_test(timeout=10)
async def test_default_cors_allows_any_origin_on_the_stream(gateway):
    gw = gateway()
    stream = await gw.open(headers={"Origin": "https://page.example"})
    assert stream.headers["access-control-allow-origin"] == "*"


@pytest.mark.gen_test(timeout=10)
async def test_default_cors_is_on_stream_json_errors(gateway, backend):
    backend.connect_answer = Answer(status=401)
    gw = gateway()
    stream = await gw.stream(headers={"Origin": "https://page.example"})
    assert stream.status == 401
    await stream.read_to_end()
    assert stream.headers["content-type"].startswith("application/json")
    assert stream.json()["error"]["code"] == "BACKEND_AUTH_FAILED"
    assert stream.headers["access-control-allow-origin"] == "*"


@pytest.mark.gen_test(timeout=10)
async def test_default_cors_is_on_stream_503_without_callback_url(gateway):
    gw = gateway(callback_url=None)
    stream = await gw.stream(headers={"Origin": "https://page.example"})
    assert stream.status == 503
    assert stream.headers["access-control-allow-origin"] == "*"


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
@pytest.mark.gen_test(timeout=10)
async def test_default_cors_is_on_health_endpoints(gateway, path):
    gw = gateway()
    response = await gw.get(path, headers={"Origin": "https://page.example"})
    assert response.code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.gen_test(timeout=10)
async def test_default_cors_is_on_readyz_503(gateway):
    gw = gateway(callback_url=None)
    response = await gw.get("/readyz", headers={"Origin": "https://page.example"})
    assert response.code == 503
    assert response.headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize("path", ["/sse/x", "/healthz", "/readyz"])
@pytest.mark.gen_test(timeout=10)
async def test_options_preflight_is_204_with_allowed_methods_and_headers_and_no_callback(
    gateway, backend, path
):
    gw = gateway()
    response = await raw_request(
        gw.port,
        "OPTIONS",
        path,
        headers={
            "Origin": "https://page.example",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "last-event-id",
        },
    )
    assert response.code == 204, response.body
    assert response.headers["access-control-allow-origin"] == "*"
    assert response.headers["access-control-allow-methods"] == ALLOW_METHODS
    assert response.headers["access-control-allow-headers"] == ALLOW_HEADERS
    # Open a real stream: its connect callback is the only one the backend ever got.
    await gw.open("/sse/real")
    (connect,) = await backend.wait_for_calls("connect")
    assert connect.body["request"]["url"] == "/sse/real"
    assert len(backend.calls) == 1


@pytest.mark.gen_test(timeout=10)
async def test_cors_origin_list_echoes_a_matching_origin_with_credentials(gateway):
    gw = gateway(cors_origins="https://a.example, https://b.example")
    for origin in ("https://a.example", "https://b.example"):
        stream = await gw.open(headers={"Origin": origin})
        assert stream.headers["access-control-allow-origin"] == origin
        assert stream.headers["access-control-allow-credentials"] == "true"
        assert "origin" in stream.headers["vary"].lower()
        response = await gw.get("/healthz", headers={"Origin": origin})
        assert response.headers["Access-Control-Allow-Origin"] == origin
        assert response.headers["Access-Control-Allow-Credentials"] == "true"
        assert "origin" in response.headers["Vary"].lower()


@pytest.mark.gen_test(timeout=10)
async def test_cors_origin_list_preflight_echoes_a_matching_origin(gateway, backend):
    gw = gateway(cors_origins="https://a.example, https://b.example")
    response = await raw_request(
        gw.port,
        "OPTIONS",
        "/sse/x",
        headers={"Origin": "https://b.example", "Access-Control-Request-Method": "GET"},
    )
    assert response.code == 204
    assert response.headers["access-control-allow-origin"] == "https://b.example"
    assert response.headers["access-control-allow-credentials"] == "true"
    assert response.headers["access-control-allow-methods"] == ALLOW_METHODS
    assert response.headers["access-control-allow-headers"] == ALLOW_HEADERS
    assert "origin" in response.headers["vary"].lower()


@pytest.mark.parametrize(
    "origin", ["https://c.example", "https://a.example.evil", "http://a.example", "null", None]
)
@pytest.mark.gen_test(timeout=10)
async def test_cors_origin_list_gives_no_allow_origin_to_other_origins(gateway, origin):
    gw = gateway(cors_origins="https://a.example, https://b.example")
    headers = {"Origin": origin} if origin is not None else {}
    stream = await gw.open(headers=headers)
    assert "access-control-allow-origin" not in stream.headers
    assert "access-control-allow-credentials" not in stream.headers
    response = await gw.get("/healthz", headers=headers)
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Access-Control-Allow-Credentials" not in response.headers


@pytest.mark.gen_test(timeout=10)
async def test_empty_cors_origins_sends_no_cors_headers(gateway, backend):
    gw = gateway(cors_origins="")
    origin = {"Origin": "https://page.example"}
    stream = await gw.open(headers=origin)
    assert cors_headers(stream.headers) == {}
    for path in ("/healthz", "/readyz"):
        response = await gw.get(path, headers=origin)
        assert response.code == 200
        assert cors_headers(response.headers) == {}
    preflight = await raw_request(
        gw.port, "OPTIONS", "/sse/x", headers={**origin, "Access-Control-Request-Method": "GET"}
    )
    assert cors_headers(preflight.headers) == {}
    backend.connect_answer = Answer(status=403)
    refused = await gw.stream(headers=origin)
    assert refused.status == 403
    assert cors_headers(refused.headers) == {}


# --------------------------------------------------------------------------------------------
# GET /internal/connections (4.3)


@pytest.mark.gen_test(timeout=10)
async def test_connections_lists_open_streams(gateway, backend):
    backend.answer_for = lambda body: Answer(
        body=b'{"channels":["news","user.1"]}' if "/a" in body["request"]["url"] else b""
    )
    gw = gateway()
    await gw.open("/sse/a?x=1&b=%20")
    await gw.open("/sse/b")
    connects = await backend.wait_for_calls("connect", count=2)
    response = await gw.get("/internal/connections", internal=True)
    assert response.code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    body = json.loads(response.body)
    assert body["count"] == 2
    by_token = {c["token"]: c for c in body["connections"]}
    assert set(by_token) == {c.token for c in connects}
    a, b = by_token[connects[0].token], by_token[connects[1].token]
    assert a["url"] == "/sse/a?x=1&b=%20"
    assert sorted(a["channels"]) == ["news", "user.1"]
    assert b["url"] == "/sse/b"
    assert b["channels"] == []
    for entry in (a, b):
        assert set(entry) >= {"token", "url", "channels", "connected_at"}
        assert isinstance(entry["connected_at"], str)
        assert re.fullmatch(
            r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", entry["connected_at"]
        ), entry["connected_at"]


@pytest.mark.gen_test(timeout=10)
async def test_connections_limit_caps_the_list_but_not_the_count(gateway, backend):
    gw = gateway()
    for i in range(3):
        await gw.open("/sse/%d" % i)
    connects = await backend.wait_for_calls("connect", count=3)
    response = await gw.get("/internal/connections?limit=1", internal=True)
    body = json.loads(response.body)
    assert body["count"] == 3
    assert len(body["connections"]) == 1
    assert body["connections"][0]["token"] in {c.token for c in connects}
    zero = json.loads((await gw.get("/internal/connections?limit=0", internal=True)).body)
    assert (zero["count"], zero["connections"]) == (3, [])


@pytest.mark.gen_test(timeout=10)
async def test_connections_count_drops_when_a_stream_closes(gateway, backend):
    gw = gateway()
    first = await gw.open("/sse/1")
    await gw.open("/sse/2")
    connects = await backend.wait_for_calls("connect", count=2)
    first.close()
    await backend.wait_for_calls("disconnect", token=connects[0].token)
    body = json.loads((await gw.get("/internal/connections", internal=True)).body)
    assert body["count"] == 1
    assert [c["token"] for c in body["connections"]] == [connects[1].token]


@pytest.mark.gen_test(timeout=10)
async def test_connections_bad_limit_is_400_json_error(gateway):
    gw = gateway()
    response = await gw.get("/internal/connections?limit=abc", internal=True)
    assert error_code(response, 400)


# --------------------------------------------------------------------------------------------
# INTERNAL_SECRET (4)


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong", "Bearer s3cre", "Bearer s3cret2", "s3cret", "Basic s3cret", "Bearer"],
)
@pytest.mark.gen_test(timeout=10)
async def test_internal_api_without_the_right_bearer_is_401(gateway, backend, authorization):
    gw = gateway(internal_secret="s3cret")
    stream = await gw.open()
    (connect,) = await backend.wait_for_calls("connect")
    headers = {"Authorization": authorization} if authorization is not None else {}
    send = await gw.post({"token": connect.token, "event": {"data": "no"}}, headers=headers)
    assert error_code(send, 401) == "UNAUTHORIZED"
    listing = await gw.get("/internal/connections", headers=headers, internal=True)
    assert error_code(listing, 401) == "UNAUTHORIZED"
    invalid = await gw.post({"token": 5}, headers=headers)
    assert error_code(invalid, 401) == "UNAUTHORIZED"  # authorisation comes before validation
    # Nothing was delivered: the first event on the stream is the authorised one.
    await gw.send(
        {"token": connect.token, "event": {"data": "yes"}},
        headers={"Authorization": "Bearer s3cret"},
    )
    await stream.wait_events(1)
    assert bytes(stream.raw) == b"data: yes\n\n"


@pytest.mark.gen_test(timeout=10)
async def test_internal_api_with_the_right_bearer_works(gateway, backend):
    gw = gateway(internal_secret="s3cret")
    stream = await gw.open()
    (connect,) = await backend.wait_for_calls("connect")
    auth = {"Authorization": "Bearer s3cret"}
    assert await gw.send({"token": connect.token, "event": {"data": "hi"}}, headers=auth) == (
        200,
        {"status": "ok"},
    )
    assert (await stream.wait_events(1))[0].data == "hi"
    listing = await gw.get("/internal/connections", headers=auth, internal=True)
    assert listing.code == 200
    assert json.loads(listing.body)["count"] == 1


@pytest.mark.gen_test(timeout=10)
async def test_internal_secret_does_not_guard_public_endpoints(gateway):
    gw = gateway(internal_secret="s3cret")
    assert (await gw.get("/healthz")).code == 200
    assert (await gw.get("/readyz")).code == 200


# --------------------------------------------------------------------------------------------
# INTERNAL_PORT (4)


@pytest.mark.gen_test(timeout=10)
async def test_internal_port_moves_the_internal_api_off_the_main_port(gateway, backend):
    gw = gateway(internal_port=1)
    assert gw.internal_port is not None and gw.internal_port != gw.port
    stream = await gw.open()
    (connect,) = await backend.wait_for_calls("connect")
    body = json.dumps({"token": connect.token, "event": {"data": "public"}}).encode()
    on_main = await raw_request(
        gw.port, "POST", "/internal/send", body=body, headers={"Content-Type": "application/json"}
    )
    assert error_code(on_main, 404) == "NOT_FOUND"
    listing_on_main = await gw.get("/internal/connections")
    assert error_code(listing_on_main, 404) == "NOT_FOUND"
    status, answer = await gw.send({"token": connect.token, "event": {"data": "internal"}})
    assert (status, answer) == (200, {"status": "ok"})
    await stream.wait_events(1)
    assert bytes(stream.raw) == b"data: internal\n\n"
    listing = await gw.get("/internal/connections", internal=True)
    assert json.loads(listing.body)["count"] == 1


@pytest.mark.gen_test(timeout=10)
async def test_internal_port_serves_no_streams(gateway, backend):
    gw = gateway(internal_port=1)
    response = await raw_request(gw.internal_port, "GET", "/sse/test")
    assert error_code(response, 404) == "NOT_FOUND"
    assert backend.calls == []


# --------------------------------------------------------------------------------------------
# MAX_CONNECTIONS (7)


@pytest.mark.gen_test(timeout=10)
async def test_stream_beyond_max_connections_is_503_too_many_connections(gateway, backend):
    gw = gateway(max_connections=2)
    first = await gw.open("/sse/1")
    await gw.open("/sse/2")
    connects = await backend.wait_for_calls("connect", count=2)
    third = await gw.stream("/sse/3")
    assert third.status == 503
    await third.read_to_end()
    assert third.headers["content-type"].startswith("application/json")
    assert third.json()["error"]["code"] == "TOO_MANY_CONNECTIONS"
    # A slot frees when a stream ends.
    first.close()
    await backend.wait_for_calls("disconnect", token=connects[0].token)
    await gw.open("/sse/4")
    urls = [c.body["request"]["url"] for c in backend.of("connect")]
    assert urls == ["/sse/1", "/sse/2", "/sse/4"]  # the refused stream made no callback
