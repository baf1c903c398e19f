"""What the gateway's log says, at its default level, about mistakes a backend can make: a
stream it refused, and a send with a field the gateway does not know (a typo)."""

from __future__ import annotations

import pytest

from tests.support.backend import Answer
from tests.support.process import start_gateway


def lines_with(log: list[str], text: str) -> list[str]:
    return [line for line in log if text in line]


@pytest.mark.parametrize(("status", "level"), [(403, "INFO"), (500, "WARNING"), (404, "WARNING")])
@pytest.mark.gen_test(timeout=30)
async def test_a_stream_refused_by_the_backend_is_logged_with_its_status(backend, status, level):
    backend.connect_answer = Answer(status=status)
    gw = await start_gateway({"CALLBACK_URL": backend.url})
    try:
        stream = await gw.stream("/sse/refused", {"X-Request-ID": "req-refused"})
        try:
            assert stream.status == status
            (connect,) = await backend.wait_for_calls("connect")
        finally:
            await stream.aclose()
    finally:
        await gw.stop()
    (line,) = lines_with(gw.log, "stream refused by the backend")
    assert " %s " % level in line
    assert "token=%s" % connect.token in line
    assert "request_id=req-refused" in line and "status=%d" % status in line


@pytest.mark.gen_test(timeout=30)
async def test_an_unknown_field_in_a_send_is_a_warning_once_per_field(backend):
    gw = await start_gateway({"CALLBACK_URL": backend.url})
    try:
        stream = await gw.stream()
        try:
            assert stream.status == 200
            (connect,) = await backend.wait_for_calls("connect")
            typo = {"token": connect.token, "event": {"nmae": "update", "data": "1"}}
            for body in (typo, typo, [typo], {**typo, "clsoe": False}):
                status, _ = await gw.send(body)
                assert status == 200
            events = await stream.wait_events(4)
            # The typo is not an error: the events arrive, as "message" events.
            assert [e.type for e in events] == ["message"] * 4
        finally:
            await stream.aclose()
    finally:
        await gw.stop()
    warnings = lines_with(gw.log, "unknown field in a send")
    assert len(warnings) == 2, warnings
    assert " WARNING " in warnings[0] and warnings[0].endswith("field=event.nmae")
    assert warnings[1].endswith("field=clsoe")
