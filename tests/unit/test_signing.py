"""Signing of callbacks (PROTOCOL 3, ext): ``X-SSE-Signature: t=<t>,v1=<hex HMAC-SHA256>``.

The code is the client distribution's (``tornado_sse_client.signing``); ``tornado_sse.signing`` is
the same functions, and the gateway signs with them.
"""

from __future__ import annotations

import hashlib
import hmac

import pytest

from tornado_sse_client.signing import SIGNATURE_HEADER, sign, verify

SECRET = "s3cret"
BODY = b'{"action":"connect","token":"t1","request":{"url":"/sse/x","headers":{}}}'
T = 1_700_000_000


def test_header_name_is_x_sse_signature():
    assert SIGNATURE_HEADER == "X-SSE-Signature"


def test_known_vector_matches_an_independent_hmac():
    expected = hmac.new(b"s3cret", b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert sign(BODY, SECRET, timestamp=T) == "t=1700000000,v1=" + expected
    assert verify(BODY, "t=1700000000,v1=" + expected, SECRET, now=T)


def test_known_vector_with_a_non_ascii_secret_uses_its_utf8_bytes():
    expected = hmac.new("clé".encode(), b"5.", hashlib.sha256).hexdigest()
    assert sign(b"", "clé", timestamp=5) == "t=5,v1=" + expected


def test_sign_defaults_to_now(monkeypatch):
    monkeypatch.setattr("tornado_sse_client.signing.time.time", lambda: T + 0.9)
    assert sign(BODY, SECRET).startswith("t=1700000000,v1=")
    assert verify(BODY, sign(BODY, SECRET), SECRET)


def test_round_trip_verifies():
    assert verify(BODY, sign(BODY, SECRET, timestamp=T), SECRET, now=T + 1)


def test_empty_body_round_trips():
    assert verify(b"", sign(b"", SECRET, timestamp=T), SECRET, now=T)


def test_tampered_body_is_refused():
    header = sign(BODY, SECRET, timestamp=T)
    assert not verify(BODY.replace(b"t1", b"t2"), header, SECRET, now=T)
    assert not verify(BODY + b" ", header, SECRET, now=T)


def test_wrong_secret_is_refused():
    assert not verify(BODY, sign(BODY, SECRET, timestamp=T), "other", now=T)


def test_re_dated_signature_is_refused():
    digest = sign(BODY, SECRET, timestamp=T).split(",v1=")[1]
    assert not verify(BODY, f"t={T + 1},v1={digest}", SECRET, now=T)


@pytest.mark.parametrize("offset", [-300, 0, 300])
def test_timestamps_within_tolerance_are_accepted(offset):
    assert verify(BODY, sign(BODY, SECRET, timestamp=T), SECRET, now=T + offset)


@pytest.mark.parametrize("offset", [300.5, 301, 86_400])
def test_expired_signature_is_refused(offset):
    assert not verify(BODY, sign(BODY, SECRET, timestamp=T), SECRET, now=T + offset)


@pytest.mark.parametrize("offset", [300.5, 86_400])
def test_signature_from_the_future_is_refused(offset):
    assert not verify(BODY, sign(BODY, SECRET, timestamp=T), SECRET, now=T - offset)


def test_tolerance_is_configurable():
    header = sign(BODY, SECRET, timestamp=T)
    assert verify(BODY, header, SECRET, tolerance_seconds=10, now=T + 10)
    assert not verify(BODY, header, SECRET, tolerance_seconds=10, now=T + 11)


def test_verify_defaults_to_the_current_time(monkeypatch):
    header = sign(BODY, SECRET, timestamp=T)
    monkeypatch.setattr("tornado_sse_client.signing.time.time", lambda: T + 299.0)
    assert verify(BODY, header, SECRET)
    monkeypatch.setattr("tornado_sse_client.signing.time.time", lambda: T + 301.0)
    assert not verify(BODY, header, SECRET)


def _v1(secret: str, t: int = T) -> str:
    return hmac.new(secret.encode(), b"%d." % t + BODY, hashlib.sha256).hexdigest()


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "garbage",
        "t=,v1=",
        ",,,",
        f"v1={_v1(SECRET)}",  # missing t
        f"t={T}",  # missing v1
        f"t={T},v0={_v1(SECRET)}",  # only an unknown version
        f"t=abc,v1={_v1(SECRET)}",  # non-numeric t
        f"t=-{T},v1={_v1(SECRET)}",
        f"t={T}.5,v1={_v1(SECRET)}",
        f"t=1e9,v1={_v1(SECRET)}",
        f"t=\u0661\u0662,v1={_v1(SECRET)}",  # Arabic-Indic digits are not ASCII digits
        f"t={T},t={T},v1={_v1(SECRET)}",  # two timestamps
        f"t={T},v1={_v1(SECRET)[:-1]}",  # truncated digest
        f"t={T},v1={_v1(SECRET)}00",  # lengthened digest
        f"t={T},v1=\u00e9{_v1(SECRET)[1:]}",  # non-ASCII digest
        f"t={T};v1={_v1(SECRET)}",  # wrong separator
        f"t={T},v1={_v1(SECRET)},",  # trailing empty entry
        f"t={T} v1={_v1(SECRET)}",
    ],
)
def test_malformed_header_is_refused(header):
    assert not verify(BODY, header, SECRET, now=T)


def test_whitespace_around_entries_and_upper_case_hex_are_accepted():
    assert verify(BODY, f" t = {T} , v1 = {_v1(SECRET).upper()} ", SECRET, now=T)


def test_unknown_entries_are_ignored():
    assert verify(BODY, f"t={T},v0=abc,v2=def,v1={_v1(SECRET)}", SECRET, now=T)


def test_any_of_several_v1_entries_may_match():
    header = f"t={T},v1={_v1('old')},v1={_v1('new')}"
    assert verify(BODY, header, "new", now=T)
    assert verify(BODY, header, "old", now=T)
    assert not verify(BODY, header, "neither", now=T)


def test_sign_with_several_secrets_gives_one_v1_each():
    assert sign(BODY, ["old", "new"], timestamp=T) == f"t={T},v1={_v1('old')},v1={_v1('new')}"
    assert verify(BODY, sign(BODY, ["old", "new"], timestamp=T), "new", now=T)


def test_verify_with_several_secrets_accepts_any_of_them():
    header = sign(BODY, "new", timestamp=T)
    assert verify(BODY, header, ("old", "new"), now=T)
    assert not verify(BODY, header, ("old", "older"), now=T)


@pytest.mark.parametrize("secret", ["", [], [""], ["ok", ""]])
def test_empty_secret_is_a_programming_error(secret):
    with pytest.raises(ValueError):
        sign(BODY, secret, timestamp=T)
    with pytest.raises(ValueError):
        verify(BODY, sign(BODY, SECRET, timestamp=T), secret, now=T)


def test_negative_timestamp_cannot_be_signed():
    with pytest.raises(ValueError):
        sign(BODY, SECRET, timestamp=-1)


def test_the_gateway_signs_with_the_client_distributions_functions():
    from tornado_sse import signing as gateway_signing

    assert (gateway_signing.sign, gateway_signing.verify) == (sign, verify)
