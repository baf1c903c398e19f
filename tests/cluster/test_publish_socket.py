"""The publish socket over Redis: sends that wait for other instances (user sends, routed
token sends) keep the order of the messages, and their answers come in that order."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.cluster.test_users import by_path, ready
from tests.support.helpers import open_with_token
from tests.support.publish_socket import RawSocket


@pytest.mark.gen_test(timeout=60)
async def test_pipelined_sends_that_wait_on_redis_keep_their_order(redis_server, gateway, backend):
    backend.answer_for = by_path
    a, b = gateway(redis_url=redis_server.url), gateway(redis_url=redis_server.url)
    await ready(a, b)
    remote, remote_token = await open_with_token(b, backend, "/sse/ann//1")  # user ann, on b
    local, local_token = await open_with_token(a, backend, "/sse/-//2")  # anonymous, on a
    sock = await RawSocket.open(a.port)
    bodies: list[dict[str, Any]] = []
    for i in range(300):
        kind = i % 3
        if kind == 0:  # asks b over Redis
            body: dict[str, Any] = {"user": "ann", "event": {"data": str(i)}}
        elif kind == 1:  # routed to b over Redis
            body = {"token": remote_token, "event": {"data": str(i)}}
        else:  # delivered here at once
            body = {"token": local_token, "event": {"data": str(i)}}
        bodies.append({**body, "ref": i})
    for body in bodies:  # all written before any answer is read
        await sock.send_text(json.dumps(body))
    answers = []
    for _ in bodies:
        message = await sock.receive(20)
        assert message is not None, "the socket ended early"
        answers.append(json.loads(message.text))
    assert [a["ref"] for a in answers] == list(range(300))
    assert all(a["status"] == 200 for a in answers), [a for a in answers if a["status"] != 200]
    assert [a["body"] for a in answers[0::3]] == [{"status": "ok", "streams": 1}] * 100
    remote_events = await remote.wait_events(200, timeout=20)
    assert [e.data for e in remote_events] == [str(i) for i in range(300) if i % 3 != 2]
    local_events = await local.wait_events(100, timeout=20)
    assert [e.data for e in local_events] == [str(i) for i in range(2, 300, 3)]
    sock.close()
