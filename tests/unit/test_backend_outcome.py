"""How the answer (or failure) of a connect callback maps to an outcome, and the outcome to
the error a client gets: PROTOCOL 1.4, table by table, without a network."""

from __future__ import annotations

import io

import pytest
from tornado.curl_httpclient import CurlError
from tornado.httpclient import HTTPClientError, HTTPRequest, HTTPResponse
from tornado.simple_httpclient import HTTPStreamClosedError, HTTPTimeoutError

from tornado_sse.backend import connect_outcome
from tornado_sse.errors import Outcome, connect_error


def response(code: int, body: bytes = b"") -> HTTPResponse:
    return HTTPResponse(HTTPRequest("http://127.0.0.1:9/cb"), code, buffer=io.BytesIO(body))


@pytest.mark.parametrize(
    ("result", "outcome", "channels"),
    [
        (response(200), Outcome.ACCEPTED, ()),
        (response(204), Outcome.ACCEPTED, ()),
        (response(200, b"OK"), Outcome.ACCEPTED, ()),
        (response(200, b'{"channels": ["a", "b", "a"]}'), Outcome.ACCEPTED, ("a", "b")),
        (response(200, b'{"bindings": ["x"]}'), Outcome.ACCEPTED, ("x",)),
        (response(200, b'{"channels": "a"}'), Outcome.BAD_ANSWER, ()),
        (response(200, b'{"channels": ["has space"]}'), Outcome.BAD_ANSWER, ()),
        (response(302), Outcome.REJECTED, ()),
        (response(401), Outcome.REJECTED, ()),
        (response(500), Outcome.REJECTED, ()),
        (response(599), Outcome.REJECTED, ()),  # the backend's own 599 is passed through
        (HTTPTimeoutError("Timeout during request"), Outcome.TIMEOUT, ()),
        (TimeoutError(), Outcome.TIMEOUT, ()),
        (CurlError(28, "Operation timed out"), Outcome.TIMEOUT, ()),
        (ConnectionRefusedError(111, "Connection refused"), Outcome.UNAVAILABLE, ()),
        (CurlError(7, "Failed to connect to 127.0.0.1 port 1"), Outcome.UNAVAILABLE, ()),
        (CurlError(6, "Could not resolve host"), Outcome.UNAVAILABLE, ()),
        # Written, then the connection ended without an answer: the backend may know the token.
        (CurlError(52, "Empty reply from server"), Outcome.LOST, ()),
        (CurlError(56, "Recv failure: Connection reset by peer"), Outcome.LOST, ()),
        (CurlError(65, "seek callback returned error 1"), Outcome.LOST, ()),
        (HTTPStreamClosedError("Stream closed"), Outcome.LOST, ()),
        (CurlError(63, "Exceeded the maximum allowed file size"), Outcome.BAD_ANSWER, ()),
        (HTTPClientError(599, "Unknown"), Outcome.UNAVAILABLE, ()),
    ],
)
def test_connect_answers_map_to_outcomes(result, outcome, channels):
    mapped = connect_outcome(result)
    assert mapped.outcome is outcome
    assert mapped.channels == channels
    if isinstance(result, HTTPResponse):
        assert mapped.status == result.code


@pytest.mark.parametrize(
    ("outcome", "status", "client_status", "code"),
    [
        (Outcome.REJECTED, 401, 401, "BACKEND_AUTH_FAILED"),
        (Outcome.REJECTED, 403, 403, "BACKEND_FORBIDDEN"),
        (Outcome.REJECTED, 302, 302, "BACKEND_ERROR"),
        (Outcome.REJECTED, 500, 500, "BACKEND_ERROR"),
        (Outcome.REJECTED, 418, 418, "BACKEND_ERROR"),
        (Outcome.TIMEOUT, None, 504, "GATEWAY_TIMEOUT"),
        (Outcome.UNAVAILABLE, None, 503, "BACKEND_UNAVAILABLE"),
        (Outcome.LOST, None, 503, "BACKEND_UNAVAILABLE"),
        (Outcome.EXPIRED, None, 504, "GATEWAY_TIMEOUT"),
        (Outcome.REJECTED, 599, 599, "BACKEND_ERROR"),
        (Outcome.BAD_ANSWER, 200, 502, "BAD_CALLBACK_RESPONSE"),
    ],
)
def test_each_outcome_gives_the_clients_status_and_code(outcome, status, client_status, code):
    error = connect_error(outcome, status, "what went wrong")
    assert (error.status, error.code) == (client_status, code)
    assert error.message


@pytest.mark.parametrize(
    "result",
    [
        CurlError(7, "Failed to connect to 127.0.0.1 port 1: Connection refused"),
        CurlError(52, "Empty reply from server"),
        CurlError(28, "Operation timed out after 2001 milliseconds"),
        ConnectionRefusedError(111, "Connection refused"),
    ],
)
def test_public_messages_name_no_address_and_no_library_text(result):
    outcome = connect_outcome(result)
    message = connect_error(outcome.outcome, outcome.status, outcome.message).message
    for leak in ("127.0.0.1", "port", "Curl", "Errno", "refused", "Empty reply", "milliseconds"):
        assert leak not in message, message
