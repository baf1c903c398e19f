"""First end-to-end checks of the stream endpoint."""

import pytest


@pytest.mark.gen_test
async def test_accepted_stream_receives_a_sent_event(gateway, backend):
    gw = gateway()
    stream = await gw.open()
    (connect,) = await backend.wait_for_calls("connect")
    status, body = await gw.send({"token": connect.token, "event": {"data": "hi"}})
    assert (status, body) == (200, {"status": "ok"})
    events = await stream.wait_events(1)
    assert events[0].data == "hi"
