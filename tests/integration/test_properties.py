"""Property-based tests of a live gateway (wire contract sections 1, 4.1 and 4.2).

Hypothesis generates request bodies, event sequences and request headers; each property is
checked against a real gateway on loopback, over real sockets:

* **Every answer of ``/internal/send`` is well formed** (1, 4.1): whatever the body (any JSON
  value, arbitrary bytes, lone surrogates, objects aimed at each row of the validation table,
  batches of them), the answer is never 5xx, always JSON, and exactly the one a small model of
  the validation table in 4.1 predicts (status and error code, item by item for batches).
* **Never a broken stream** (4.2): the events a WHATWG parser reads off a stream are exactly the
  sends the gateway accepted, in order, with their data (CRLF and CR normalised to LF), type and
  last event id; nothing a 400 refused leaks through.
* **Any header** (1.2): a stream request with arbitrary (legal) headers is either accepted with
  the headers forwarded lower-cased in the connect callback, or refused with a 4xx JSON error;
  never a 5xx, never a dropped connection.

How the tests drive hypothesis: each test is a plain synchronous ``@given`` function that runs
one asynchronous scenario per example with ``io_loop.run_sync``. The ``gateway`` and
``backend`` fixtures are function-scoped, so one gateway serves every example of a test (which
keeps the whole file fast); each example opens its own stream and so gets its own token, and
nothing an example does can reach another example's stream.

Every test uses ``derandomize=True`` (the examples are a fixed function of the test, so CI and a
laptop run the same cases and a red build can be reproduced by rerunning it) and
``database=None`` (no example database under ``.hypothesis/``: a failure found once is kept
as an explicit ``@example`` here, not replayed from a local, untracked store).
"""

from __future__ import annotations

import json
import re
import string
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, currently_in_test_context, event, example, given, settings
from hypothesis import strategies as st

from tests.support.helpers import open_with_token
from tests.support.internal import RawResponse, raw_request
from tests.support.sse_parser import ParsedEvent

# Shared by every property. ``function_scoped_fixture`` is suppressed on purpose: the gateway
# and the fake backend are deliberately shared by all the examples of one test (starting a
# gateway per example would be slow and test nothing more), and each example isolates itself
# by opening its own stream, hence its own token.
COMMON = settings(
    deadline=None,  # network round trips; timeouts in the scenarios catch hangs
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

UNKNOWN = "00000000-0000-4000-8000-000000000000"  # a well-formed token no stream holds
#: Stands for "the token of this example's live stream" in generated values; replaced before
#: sending (the token only exists once the stream is open).
LIVE = "<live token>"
#: Marks a key that the generated object leaves out (``fixed_dictionaries`` cannot weight it).
MISSING = object()

MAX_BODY_BYTES = 1024 * 1024  # the default MAX_BODY_BYTES, which these gateways keep
UPPER_SNAKE = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*")
CHANNEL_NAME = re.compile(r"[!-~]{1,200}")  # 3.1


@pytest.fixture
def gw(gateway: Any) -> Any:
    """One gateway (default settings) shared by all the examples of a test."""
    return gateway()


def run(io_loop: Any, scenario: Any, timeout: float = 30.0) -> None:
    """Run one example's async scenario to completion on the test's IOLoop."""
    io_loop.run_sync(scenario, timeout=timeout)


# --------------------------------------------------------------------------------------------
# Strategies


def _drop_missing(value: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in value.items() if v is not MISSING}


class Repeated(str):
    """``piece * times``, with a repr that says so: a failing example holding a megabyte of
    text then prints in one line (and hypothesis does not warn about an overly large repr,
    which the warnings-are-errors setting would turn into the reported failure)."""

    piece: str
    times: int

    def __new__(cls, piece: str, times: int) -> Repeated:
        self = super().__new__(cls, piece * times)
        self.piece, self.times = piece, times
        return self

    def __repr__(self) -> str:
        return "%r * %d" % (self.piece, self.times)


def _long_text(piece: str, target_bytes: int) -> Repeated:
    """``piece`` repeated to about ``target_bytes`` bytes of ASCII-escaped JSON."""
    return Repeated(piece, max(1, target_bytes // (len(json.dumps(piece)) - 2)))


def _weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """Draw from each strategy in proportion to its weight. (``one_of`` flattens nested
    ``one_of``s, so the seven branches of JUNK would outvote everything else.)"""
    pool = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.sampled_from(pool).flatmap(lambda strategy: strategy)


#: Any character JSON text can carry (lone surrogates have their own strategy below).
CHARS = st.characters(exclude_categories=("Cs",))
#: Characters that matter to the SSE format or to UTF-8, drawn often on purpose.
SPECIAL = st.sampled_from(
    ["\x00", "\r", "\n", "\r\n", "\n\r", "\u2028", "\x85", "\ufeff", "\U0001f600", "\xe9", " ", ":"]
)
#: A long run of one or two characters, up to 1.5 MB of JSON: some bodies are just under
#: MAX_BODY_BYTES and some over it.
LONG_TEXT = st.builds(
    _long_text,
    st.text(CHARS, min_size=1, max_size=2),
    st.one_of(
        st.integers(1_000, 300_000),
        st.sampled_from([MAX_BODY_BYTES - 100, MAX_BODY_BYTES + 1, 3 * MAX_BODY_BYTES // 2]),
    ),
)
SHORT_TEXT = st.one_of(
    st.text(CHARS, max_size=20),
    st.lists(st.one_of(SPECIAL, st.text(CHARS, max_size=6)), max_size=8).map("".join),
)
#: Short text, often with NUL, CR, LF, CRLF, emoji; now and then a long run.
TEXT = _weighted((6, SHORT_TEXT), (1, LONG_TEXT))
#: The same, with lone surrogates mixed in (JSON can escape them, ``\\ud800``; the gateway must
#: refuse them as INVALID_JSON, since they cannot be written to a UTF-8 stream).
SURROGATE_TEXT = st.lists(
    st.one_of(
        st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
        SPECIAL,
        st.text(CHARS, max_size=4),
    ),
    min_size=1,
    max_size=6,
).map("".join)

JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(CHARS, max_size=6),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(CHARS, max_size=3), st.integers(), max_size=2),
)
KEYS = st.one_of(
    st.sampled_from(["token", "channel", "event", "data", "name", "id", "close"]),
    st.text(CHARS, max_size=8),
)


def json_values(text: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    """Any JSON value whose strings come from ``text``."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        text,
    )
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(st.one_of(KEYS, text), children, max_size=4),
        ),
        max_leaves=12,
    )


def send_objects(text: st.SearchStrategy[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects aimed at the validation table of 4.1: each field absent, valid or junk.

    Weighted so that most objects get past the token rule and reach the later rows, the
    lookup, and delivery to the live stream.
    """
    missing = st.just(MISSING)
    events = st.fixed_dictionaries(
        {
            "data": _weighted((6, text), (1, missing), (1, JUNK)),
            "name": _weighted((3, missing), (4, text), (1, JUNK)),
            "id": _weighted((3, missing), (4, text), (1, JUNK)),
        }
    ).map(_drop_missing)
    return st.fixed_dictionaries(
        {
            "token": _weighted(
                (6, st.just(LIVE)), (1, st.sampled_from([UNKNOWN, MISSING, ""])), (1, JUNK)
            ),
            "channel": _weighted(
                (12, missing), (1, st.sampled_from([None, "news", "a b", "x" * 201])), (1, JUNK)
            ),
            "event": _weighted((6, events), (1, missing), (1, JUNK)),
            "close": _weighted((6, missing), (2, st.booleans()), (1, JUNK)),
        },
        optional={"extra": json_values(text)},
    ).map(_drop_missing)


@dataclass(frozen=True)
class Body:
    """A request body: a JSON ``value`` (encoded ASCII-escaped or as raw UTF-8), or ``raw``."""

    value: Any = None
    ascii: bool = True
    raw: bytes | None = None

    def needs_live_token(self) -> bool:
        return self.raw is None and _contains(self.value, LIVE)

    def encode(self, live_token: str | None) -> bytes:
        if self.raw is not None:
            return self.raw
        value = _replace(self.value, LIVE, live_token) if live_token else self.value
        # surrogatepass: a lone surrogate written as raw "UTF-8" is invalid UTF-8 on the wire.
        return json.dumps(value, ensure_ascii=self.ascii).encode("utf-8", "surrogatepass")


def _contains(value: Any, needle: str) -> bool:
    if isinstance(value, dict):
        return any(_contains(v, needle) for v in value.values())
    if isinstance(value, list):
        return any(_contains(v, needle) for v in value)
    return value == needle


def _replace(value: Any, needle: str, new: Any) -> Any:
    if isinstance(value, dict):
        return {k: _replace(v, needle, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace(v, needle, new) for v in value]
    return new if value == needle else value


#: Largest body sent: enough to cross MAX_BODY_BYTES, small enough to keep examples quick
#: (bodies of any size get their 413: tests/integration/test_promises.py).
MAX_SENT_BYTES = 2 * MAX_BODY_BYTES


def json_bodies(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Body]:
    return st.builds(Body, value=values, ascii=st.booleans()).filter(
        lambda body: len(body.encode(None)) <= MAX_SENT_BYTES
    )


# --------------------------------------------------------------------------------------------
# The model: what the wire contract says /internal/send answers


@dataclass
class SendModel:
    """Section 4.1 as a table, for one live stream: the answer each send should get.

    Answers are reduced to ``(status, "ok")`` or ``(status, ERROR_CODE)``; a batch to
    ``(200, [item answers...])``.
    """

    live_token: str | None
    live: bool = True
    max_body_bytes: int = MAX_BODY_BYTES

    def body(self, raw: bytes) -> tuple[int, Any]:
        if len(raw) > self.max_body_bytes:
            return 413, "PAYLOAD_TOO_LARGE"
        try:
            value = json.loads(raw.decode("utf-8"), parse_constant=_not_json)
            _check_unicode(value)
        except (UnicodeError, ValueError, RecursionError):
            return 400, "INVALID_JSON"
        if isinstance(value, list):
            return 200, [self.item(item) for item in value]
        if not isinstance(value, dict):
            return 400, "INVALID_JSON"
        return self.item(value)

    def item(self, item: Any) -> tuple[int, str]:
        if not isinstance(item, dict):
            return 400, "INVALID_JSON"
        token, channel = item.get("token"), item.get("channel")
        # Exactly one of token and channel is a non-empty string, the other absent or null.
        if (token is None) == (channel is None):
            return 400, "INVALID_TOKEN_MISSING"
        target = token if channel is None else channel
        if not (isinstance(target, str) and target):
            return 400, "INVALID_TOKEN_MISSING"
        if channel is not None and not CHANNEL_NAME.fullmatch(channel):
            return 400, "INVALID_CHANNEL"  # the README's choice where the contract is silent
        if "event" in item:
            sent = item["event"]
            if not isinstance(sent, dict):
                return 400, "INVALID_EVENT_TYPE"
            if not isinstance(sent.get("data"), str):
                return 400, "INVALID_EVENT_DATA_MISSING"
            if "name" in sent and not _clean_field(sent["name"]):
                return 400, "INVALID_EVENT_NAME_TYPE"
            if "id" in sent and not _clean_field(sent["id"]):
                return 400, "INVALID_EVENT_ID"
        close = item.get("close", False)
        if "close" in item and not isinstance(close, bool):
            return 400, "INVALID_CLOSE_TYPE"
        if channel is not None:
            return (400, "INVALID_CLOSE_TYPE") if close else (200, "ok")
        if not (self.live and token == self.live_token):
            return 404, "TOKEN_NOT_FOUND"
        if close:
            self.live = False
        return 200, "ok"


def _not_json(name: str) -> Any:
    raise ValueError("%s is not JSON" % name)


def _check_unicode(value: Any) -> None:
    """Raise UnicodeError if a string of ``value`` (keys included) holds a lone surrogate."""
    if isinstance(value, str):
        value.encode("utf-8")
    elif isinstance(value, dict):
        for key, item in value.items():
            key.encode("utf-8")
            _check_unicode(item)
    elif isinstance(value, list):
        for item in value:
            _check_unicode(item)


def _clean_field(value: Any) -> bool:
    return isinstance(value, str) and not any(c in value for c in "\r\n\0")


# --------------------------------------------------------------------------------------------
# Shape checks: what every answer must look like, whatever its content


def _is_json_type(content_type: str) -> bool:
    return content_type.split(";")[0].strip().lower() == "application/json"


def reduce_error(body: Any) -> str:
    """Check ``body`` is exactly ``{"error": {"code": UPPER_SNAKE, "message": text}}``."""
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error, dict) and set(error) == {"code", "message"}, body
    assert isinstance(error["code"], str) and UPPER_SNAKE.fullmatch(error["code"]), body
    assert isinstance(error["message"], str) and error["message"].strip(), body
    return error["code"]


def reduce_answer(status: int, body: Any, *, batch_allowed: bool = True) -> tuple[int, Any]:
    """Check one answer's shape; reduce it to ``(status, "ok" | CODE | [items])``."""
    assert isinstance(status, int) and 200 <= status < 500, (status, body)
    if status != 200:
        return status, reduce_error(body)
    assert isinstance(body, dict), body
    if batch_allowed and set(body) == {"results"}:
        results = body["results"]
        assert isinstance(results, list), body
        items = []
        for result in results:
            assert isinstance(result, dict) and set(result) == {"status", "body"}, result
            items.append(reduce_answer(result["status"], result["body"], batch_allowed=False))
        return 200, items
    assert set(body) == {"status"} and body["status"] in ("ok", "buffered"), body
    return 200, "ok"


def reduce_response(response: RawResponse) -> tuple[int, Any]:
    """Check a whole HTTP answer: never 5xx, JSON typed, JSON body of a valid shape."""
    assert response.code < 500, (response.code, response.body[:300])
    content_type = response.headers.get("content-type", "")
    assert _is_json_type(content_type), (response.code, content_type, response.body[:300])
    return reduce_answer(response.code, json.loads(response.body))


def _record(answer: tuple[int, Any]) -> None:
    """Tell ``--hypothesis-show-statistics`` which answers the examples reached."""
    if not currently_in_test_context():
        return  # an explicit, non-hypothesis test
    status, detail = answer
    for item in detail if isinstance(detail, list) else [answer]:
        event("answer %d %s" % item)
    if isinstance(detail, list):
        event("batch of %s items" % ("0" if not detail else "1" if len(detail) == 1 else "2+"))


# --------------------------------------------------------------------------------------------
# 1. Every answer of /internal/send is well formed and the one the contract predicts


async def _check_send(gw: Any, backend: Any, body: Body) -> None:
    stream, token = (None, None)
    if body.needs_live_token():
        stream, token = await open_with_token(gw, backend)
    raw = body.encode(token)
    model = SendModel(live_token=token)
    response = await raw_request(
        gw.port, "POST", "/internal/send", headers={"Content-Type": "application/json"}, body=raw
    )
    got = reduce_response(response)
    assert got == model.body(raw), raw[:300]
    _record(got)
    if stream is not None:
        await stream.aclose()


LONE_SURROGATE_BODIES = [
    b'{"token": "\\ud800"}',
    b'{"token": "t", "event": {"data": "a\\udc00b"}}',
    b'{"token": "t", "event": {"data": "\\udbff\\udbff"}}',
    b'{"\\udfff": 1}',
    b'[{"token": "t", "event": {"data": "x", "name": "\\ud83d"}}]',
    b'"\\ud800"',
]


@pytest.mark.parametrize("raw", LONE_SURROGATE_BODIES)
@pytest.mark.gen_test(timeout=10)
async def test_lone_surrogate_escapes_are_invalid_json_not_an_error_500(gw, backend, raw):
    await _check_send(gw, backend, Body(raw=raw))


@settings(COMMON, max_examples=100)
@given(body=json_bodies(json_values(TEXT)) | json_bodies(json_values(SURROGATE_TEXT)))
def test_any_json_body_gets_a_well_formed_answer(gw, backend, io_loop, body):
    run(io_loop, lambda: _check_send(gw, backend, body))


#: Valid JSON with arbitrary bytes where ``%s`` is: they may or may not decode (as UTF-8, then
#: as JSON), so the answers range over INVALID_JSON, the validation table and the lookup.
BYTE_TEMPLATES = [
    b"%s",
    b'{"token": "%s"}',
    b'{"token": "' + UNKNOWN.encode() + b'", "event": {"data": "%s"}}',
    b'{"token": "' + UNKNOWN.encode() + b'", "event": {"data": "x", "name": "%s"}}',
    b'{"token": "' + UNKNOWN.encode() + b'", "event": {"data": "x", "id": "%s"}}',
    b"[%s]",
    b'{"token": "t", "close": %s}',
]
BYTE_BODIES = st.builds(
    lambda template, payload: template.replace(b"%s", payload),
    st.sampled_from(BYTE_TEMPLATES),
    st.binary(max_size=64),
)


@settings(COMMON, max_examples=75)
@given(raw=BYTE_BODIES)
def test_any_bytes_body_gets_a_well_formed_answer(gw, backend, io_loop, raw):
    run(io_loop, lambda: _check_send(gw, backend, Body(raw=raw)))


@settings(COMMON, max_examples=100)
@given(
    body=st.one_of(
        json_bodies(send_objects(TEXT)),
        json_bodies(st.lists(st.one_of(send_objects(TEXT), JUNK), max_size=5)),
        json_bodies(send_objects(SURROGATE_TEXT)),
    )
)
def test_every_send_gets_the_answer_of_the_validation_table(gw, backend, io_loop, body):
    run(io_loop, lambda: _check_send(gw, backend, body))


# --------------------------------------------------------------------------------------------
# 2. Never a broken stream

#: Event text: arbitrary characters, with NUL, CR, LF, CRLF and emoji drawn often.
EVENT_TEXT = st.lists(st.one_of(SPECIAL, st.text(CHARS, max_size=8)), max_size=8).map("".join)
#: Names and ids: usually text (which CR, LF or NUL make invalid), sometimes absent or junk.
FIELD = _weighted((4, st.just(MISSING)), (4, EVENT_TEXT), (1, st.sampled_from([None, 1, ["x"]])))
STREAM_EVENTS = st.fixed_dictionaries({"data": EVENT_TEXT, "name": FIELD, "id": FIELD}).map(
    _drop_missing
)
#: Posts: (as a batch?, events). A single event not sent as a batch is posted alone.
POSTS = st.lists(st.tuples(st.booleans(), st.lists(STREAM_EVENTS, min_size=1, max_size=4)))

MARKER_TYPE = "end-of-example"
BIG_DATA = Repeated("x" * 98 + "\r\n", 10_000)  # 1 000 000 characters, 10 000 CRLF breaks


def _normalise(data: str) -> str:
    return data.replace("\r\n", "\n").replace("\r", "\n")


async def _check_stream(gw: Any, backend: Any, posts: list[tuple[bool, list[Any]]]) -> None:
    stream, token = await open_with_token(gw, backend)
    model = SendModel(live_token=token)
    accepted: list[dict[str, Any]] = []
    for as_batch, events in posts:
        items = [{"token": token, "event": sent} for sent in events]
        bodies = [items] if as_batch else [[item] for item in items]
        for batch in bodies:
            body: Any = batch if as_batch else batch[0]
            response = await gw.post(body)
            assert response.headers.get("Content-Type", "").startswith("application/json")
            got = reduce_answer(response.code, json.loads(response.body))
            answers = got[1] if as_batch else [got]
            expected = [model.item(item) for item in batch]
            assert answers == expected, (batch, answers)
            accepted += [i["event"] for i, a in zip(batch, answers, strict=True) if a[0] == 200]
            for answer in answers:
                event("send answer %d %s" % answer)
    marker = str(uuid.uuid4())
    status, answer = await gw.send({"token": token, "event": {"name": MARKER_TYPE, "data": marker}})
    assert (status, answer) == (200, {"status": "ok"})

    await stream.wait_until(lambda s: any(e.data == marker for e in s.events), timeout=10)
    last_id = ""
    expected_events = []
    for sent in accepted + [{"name": MARKER_TYPE, "data": marker}]:
        last_id = sent.get("id", last_id)
        expected_events.append(
            ParsedEvent(sent.get("name") or "message", _normalise(sent["data"]), last_id)
        )
    assert stream.events == expected_events
    event(
        "events on the stream: %s" % ("0" if not accepted else "1-3" if len(accepted) < 4 else "4+")
    )
    await stream.aclose()


@settings(COMMON, max_examples=50)
@example(posts=[(False, [{"data": BIG_DATA}])])
@example(posts=[(True, [{"data": Repeated("\r\u20ac\n", 90_000)}, {"data": "\r", "id": "1"}])])
@example(posts=[(False, [{"data": "a\x00b\rc\r\nd\n", "name": "n", "id": ""}])])
@given(posts=POSTS)
def test_stream_carries_exactly_the_accepted_events_in_order(gw, backend, io_loop, posts):
    run(io_loop, lambda: _check_stream(gw, backend, posts))


# --------------------------------------------------------------------------------------------
# 3. Any header

TCHAR = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"
#: Headers that change how the request itself is framed or answered (a GET with a
#: Content-Length waits for a body; Expect asks for an interim 100 answer; a second Host is
#: another property): not what this property is about.
FRAMING = {"host", "content-length", "transfer-encoding", "expect"}
HEADER_NAMES = st.one_of(
    st.text(st.sampled_from(TCHAR), min_size=1, max_size=20).filter(
        lambda name: name.lower() not in FRAMING
    ),
    st.sampled_from(
        [
            "Cookie",
            "cookie",
            "Authorization",
            "Last-Event-ID",
            "X-Request-ID",
            "Accept",
            "Accept-Encoding",
            "Origin",
            "Cache-Control",
            "Connection",
            "X-Forwarded-For",
        ]
    ),
)
#: Printable latin-1 (no C0 or C1 controls, so no CR or LF), plus tab.
VALUE_CHARS = st.one_of(
    st.characters(codec="latin-1", exclude_categories=("Cc",)), st.sampled_from(["\t", " "])
)
HEADER_VALUES = st.one_of(
    st.text(VALUE_CHARS, max_size=40),
    st.builds(Repeated, st.text(VALUE_CHARS, min_size=1, max_size=3), st.integers(100, 1365)),
)
HEADERS = st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=20)
MAX_HEADER_BYTES = 64 * 1024  # the default MAX_HEADER_BYTES, which these gateways keep


def _forwarded(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """The ``headers`` of the connect callback for these request headers (1.2)."""
    headers: dict[str, str] = {}
    for name, raw_value in pairs:
        key = name.lower()
        value = raw_value.strip(" \t")  # optional whitespace around a value is not part of it
        if key in headers:
            headers[key] += ("; " if key == "cookie" else ", ") + value
        else:
            headers[key] = value
    return headers


async def _check_headers(gw: Any, backend: Any, pairs: list[tuple[str, str]]) -> None:
    size = sum(len(name) + len(value) + 4 for name, value in pairs)
    before = len(backend.of("connect"))
    stream = await gw.stream("/sse/test", pairs)  # fails if the gateway drops the connection
    if currently_in_test_context():
        event("stream answer %d" % stream.status)
    if stream.status == 200:
        assert size <= MAX_HEADER_BYTES, size
        assert stream.headers.get("content-type") == "text/event-stream; charset=utf-8", (
            stream.headers
        )
        assert "content-encoding" not in stream.headers, stream.headers  # never compressed
        calls = await backend.wait_for_calls("connect", count=before + 1)
        host = [("Host", "127.0.0.1:%d" % gw.port)]
        assert calls[before].body["request"]["headers"] == _forwarded(host + pairs)
    else:
        raw = await stream.read_to_end()
        assert 400 <= stream.status < 500, (stream.status, raw[:300])
        assert _is_json_type(stream.headers.get("content-type", "")), (stream.headers, raw[:300])
        code = reduce_error(json.loads(raw))
        assert stream.headers.get("access-control-allow-origin") == "*", stream.headers
        # Only an oversize head may be refused: the backend accepts every stream.
        assert (stream.status, code) == (431, "REQUEST_HEADER_FIELDS_TOO_LARGE"), raw
        assert size > MAX_HEADER_BYTES - 200, size
        assert len(backend.of("connect")) == before  # refused before any callback
    await stream.aclose()


@settings(COMMON, max_examples=100)
@example(pairs=[("Cookie", "a=1"), ("cookie", "b=2"), ("X-A", " x "), ("x-a", "\ty")])
# A head over MAX_HEADER_BYTES: 431, a JSON error that, as every error of the stream endpoint,
# carries its CORS header (section 1, CORS).
@example(pairs=[("X-Big-%d" % i, Repeated("\xe9", 4096)) for i in range(17)])
@given(pairs=HEADERS)
def test_any_request_headers_are_forwarded_or_refused_with_a_json_4xx(gw, backend, io_loop, pairs):
    run(io_loop, lambda: _check_headers(gw, backend, pairs))
