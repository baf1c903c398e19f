"""protocol.decode_json and protocol.dumps give the same verdicts and bytes with orjson
installed and without it (the ``fast`` extra is optional)."""

from __future__ import annotations

from typing import Any

import pytest

from tornado_sse import protocol
from tornado_sse.errors import InvalidRequest

pytestmark = pytest.mark.skipif(protocol.orjson is None, reason="compares orjson with json")

BODIES = [
    b'{"token": "t", "event": {"name": "update", "data": "caf\xc3\xa9 \\u00e9"}}',
    b'[{"channel": "c", "event": {"data": ""}}, {"token": "x", "close": true}]',
    b'{"ref": [1, 2.5, null, false], "user": "u"}',
    b'"not an object"',
]
INVALID = [
    b"",
    b"{",
    b'{"a": NaN}',
    b"[Infinity]",
    b'{"data": "\\ud800"}',  # a lone surrogate
    b'"\xff"',  # not UTF-8
    b"[" * 100_000,  # too deep
]
VALUES: list[Any] = [
    {"status": "ok"},
    {"results": [{"status": 404, "body": {"error": {"code": "X", "message": "é ü"}}}]},
    {"status": "ok", "streams": 3},
    [None, True, 1, "a\nb"],
]


@pytest.fixture(params=["orjson", "json"])
def codec(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "json":
        monkeypatch.setattr(protocol, "orjson", None)
    return str(request.param)


@pytest.mark.parametrize("raw", BODIES)
def test_valid_bodies_decode_alike(codec: str, raw: bytes) -> None:
    import json

    assert protocol.decode_json(raw) == json.loads(raw.decode("utf-8"))


@pytest.mark.parametrize("raw", INVALID)
def test_invalid_bodies_are_invalid_json_with_the_same_message(codec: str, raw: bytes) -> None:
    with pytest.raises(InvalidRequest) as refused:
        protocol.decode_json(raw)
    assert refused.value.code == "INVALID_JSON"
    assert refused.value.message.startswith("body is not valid JSON")


@pytest.mark.parametrize("value", VALUES)
def test_dumps_writes_the_same_bytes(value: Any) -> None:
    import json

    expected = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    assert protocol.dumps(value) == expected
