"""The JWT verifier (PROTOCOL.md section 9), in memory: keys, algorithms, claims, errors."""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives import serialization

from tests.support.tokens import (
    LONG_SECRET,
    SECRET,
    claims,
    ec_keys,
    ed25519_keys,
    hmac_by_hand,
    rsa_keys,
    sign,
    tampered,
    unsigned,
)
from tornado_sse.errors import InvalidJWT, JWTExpired
from tornado_sse.jwt_auth import JWTVerifier, StreamClaims, jwt_from_url
from tornado_sse.protocol import Info


def code_of(verifier: JWTVerifier, token: str) -> str:
    """The error code ``verifier`` refuses ``token`` with (fails if it accepts it)."""
    with pytest.raises((InvalidJWT, JWTExpired)) as caught:
        verifier.verify(token)
    assert not token or token not in caught.value.message
    return caught.value.code


# -- accepted tokens ---------------------------------------------------------------------------


def test_hs256_token_gives_user_channels_info_and_exp():
    exp = int(time.time()) + 60
    token = sign(claims(channels=["news", "user.42", "news"], info={"name": "Ann"}, exp=exp))
    assert JWTVerifier(secret=SECRET).verify(token) == StreamClaims(
        user="42",
        channels=("news", "user.42"),
        info=Info({"name": "Ann"}, '{"name":"Ann"}'),
        expires_at=float(exp),
    )


def test_token_without_sub_channels_or_info_is_an_anonymous_stream_without_channels():
    token = sign({"exp": int(time.time()) + 60})
    got = JWTVerifier(secret=SECRET).verify(token)
    assert (got.user, got.channels, got.info) == (None, (), None)


@pytest.mark.parametrize(
    ("keys", "algorithm"),
    [
        (ec_keys, "ES256"),
        (rsa_keys, "RS256"),
        (rsa_keys, "PS512"),
        (ed25519_keys, "EdDSA"),
    ],
)
def test_asymmetric_token_verifies_with_the_public_key(keys, algorithm):
    pair = keys()
    token = sign(claims(channels=["a"]), pair.private, algorithm)
    verifier = JWTVerifier(public_key=pair.public_pem)
    assert verifier.verify(token).channels == ("a",)


def test_with_both_keys_each_token_is_verified_by_the_key_of_its_algorithm():
    pair = ec_keys()
    verifier = JWTVerifier(secret=SECRET, public_key=pair.public_pem)
    assert verifier.algorithms == ("ES256", "HS256")
    assert verifier.verify(sign(claims(sub="a"))).user == "a"
    assert verifier.verify(sign(claims(sub="b"), pair.private, "ES256")).user == "b"


def test_the_secret_length_decides_the_hmac_algorithms():
    assert JWTVerifier(secret=SECRET).algorithms == ("HS256",)
    assert JWTVerifier(secret=LONG_SECRET).algorithms == ("HS256", "HS384", "HS512")
    # HS512 with a 40-byte secret, which RFC 7518 forbids (PyJWT would warn about it).
    hs512 = hmac_by_hand(claims(), SECRET, "HS512")
    with pytest.raises(InvalidJWT, match="algorithm is not accepted"):
        JWTVerifier(secret=SECRET).verify(hs512)
    assert JWTVerifier(secret=SECRET).verify(hmac_by_hand(claims(), SECRET)).user == "42"


def test_audience_and_issuer_when_configured_must_match():
    verifier = JWTVerifier(secret=SECRET, audience="sse", issuer="https://app")
    token = sign(claims(aud=["other", "sse"], iss="https://app"))
    assert verifier.verify(token).user == "42"


# -- refused tokens ----------------------------------------------------------------------------


def test_bad_signature_is_invalid_jwt():
    token = sign(claims())
    assert code_of(JWTVerifier(secret=SECRET), tampered(token)) == "INVALID_JWT"
    other = sign(claims(), "another-secret-of-forty-bytes-0123456789")
    assert code_of(JWTVerifier(secret=SECRET), other) == "INVALID_JWT"


@pytest.mark.parametrize("config", ["secret", "public_key", "both"])
def test_alg_none_is_refused_whatever_the_keys(config):
    pair = rsa_keys()
    keys = {"secret": SECRET, "public_key": pair.public_pem}
    if config != "both":
        keys = {config: keys[config]}
    assert code_of(JWTVerifier(**keys), unsigned(claims())) == "INVALID_JWT"


@pytest.mark.parametrize("with_secret", [False, True])
@pytest.mark.parametrize("keys", [rsa_keys, ec_keys])
def test_hs256_signed_with_the_public_key_pem_is_refused(keys, with_secret):
    # The HS/RS confusion: a verifier that fed its public key to HMAC would accept this.
    pem = keys().public_pem
    forged = hmac_by_hand(claims(), pem)
    verifier = JWTVerifier(public_key=pem, secret=SECRET if with_secret else None)
    assert code_of(verifier, forged) == "INVALID_JWT"
    der = (
        keys()
        .private.public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    assert code_of(verifier, hmac_by_hand(claims(), der)) == "INVALID_JWT"


def test_asymmetric_token_is_refused_when_only_a_secret_is_configured():
    token = sign(claims(), rsa_keys().private, "RS256")
    assert code_of(JWTVerifier(secret=SECRET), token) == "INVALID_JWT"


def test_token_of_another_key_type_is_refused():
    token = sign(claims(), rsa_keys().private, "RS256")
    assert code_of(JWTVerifier(public_key=ec_keys().public_pem), token) == "INVALID_JWT"


@pytest.mark.parametrize(
    "values",
    [
        {"aud": "someone-else", "iss": "https://app"},
        {"iss": "https://app"},  # an audience is configured: the token must name it
        {"aud": "sse", "iss": "https://evil"},
        {"aud": "sse"},
    ],
    ids=["wrong-aud", "missing-aud", "wrong-iss", "missing-iss"],
)
def test_wrong_or_missing_audience_and_issuer_are_invalid_jwt(values):
    verifier = JWTVerifier(secret=SECRET, audience="sse", issuer="https://app")
    assert code_of(verifier, sign(claims(**values))) == "INVALID_JWT"


def test_a_token_for_an_audience_is_refused_when_none_is_configured():
    assert code_of(JWTVerifier(secret=SECRET), sign(claims(aud="elsewhere"))) == "INVALID_JWT"


def test_missing_exp_is_invalid_jwt():
    token = sign(claims(exp=None))
    with pytest.raises(InvalidJWT, match="'exp'"):
        JWTVerifier(secret=SECRET).verify(token)


@pytest.mark.parametrize("exp", ["soon", 1e400, [1]])
def test_exp_that_is_not_a_number_is_invalid_jwt(exp):
    assert code_of(JWTVerifier(secret=SECRET), sign(claims(exp=exp))) == "INVALID_JWT"


def test_past_exp_is_jwt_expired():
    token = sign(claims(exp=int(time.time()) - 1))
    assert code_of(JWTVerifier(secret=SECRET), token) == "JWT_EXPIRED"


def test_past_exp_with_a_bad_signature_is_invalid_not_expired():
    token = tampered(sign(claims(exp=int(time.time()) - 1)))
    assert code_of(JWTVerifier(secret=SECRET), token) == "INVALID_JWT"


def test_nbf_in_the_future_is_invalid_jwt():
    token = sign(claims(nbf=int(time.time()) + 60))
    assert code_of(JWTVerifier(secret=SECRET), token) == "INVALID_JWT"


def test_iat_a_little_in_the_future_is_accepted():
    # A backend whose clock is slightly ahead mints tokens "issued" in the gateway's future.
    token = sign(claims(iat=int(time.time()) + 5))
    assert JWTVerifier(secret=SECRET).verify(token).user == "42"


@pytest.mark.parametrize(
    "bad",
    [
        {"sub": ""},
        {"sub": "has space"},
        {"sub": "x" * 201},
        {"sub": 42},
        {"channels": "news"},
        {"channels": None},
        {"channels": ["ok", "not ok"]},
        {"channels": ["c%d" % i for i in range(101)]},
        {"info": ["not", "an", "object"]},
        {"info": {"blob": "x" * 1020}},
    ],
    ids=lambda bad: "-".join("%s=%s" % (k, str(v)[:12]) for k, v in bad.items()),
)
def test_claims_a_connect_answer_could_not_carry_are_invalid_jwt(bad):
    payload = {**claims(), **bad}
    assert code_of(JWTVerifier(secret=SECRET), sign(payload)) == "INVALID_JWT"


def test_info_of_exactly_1_kib_compact_is_accepted():
    info = {"b": "x" * (1024 - len('{"b":""}'))}
    assert JWTVerifier(secret=SECRET).verify(sign(claims(info=info))).info.value == info


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", "x" * 5000, "é.é.é"])
def test_garbage_is_invalid_jwt(token):
    assert code_of(JWTVerifier(secret=SECRET), token) == "INVALID_JWT"
    both = JWTVerifier(secret=SECRET, public_key=ec_keys().public_pem)
    assert code_of(both, token) == "INVALID_JWT"


def test_error_messages_say_what_is_wrong_in_our_words():
    verifier = JWTVerifier(secret=SECRET, audience="sse")
    messages = set()
    for token in (tampered(sign(claims(aud="sse"))), sign(claims(aud="x")), sign(claims())):
        with pytest.raises(InvalidJWT) as caught:
            verifier.verify(token)
        messages.add(caught.value.message)
    assert messages == {
        "the JWT's signature does not verify",
        "the JWT is not meant for this audience",
        "the JWT lacks the 'aud' claim",
    }


# -- unusable keys ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "problem"),
    [
        ({"secret": "short"}, "JWT_SECRET is 5 bytes long"),
        ({"secret": rsa_keys().public_pem}, "JWT_SECRET holds a key"),
        ({"public_key": "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----"}, "PEM"),
        ({"public_key": rsa_keys(1024).public_pem}, "RSA key of 1024 bits"),
        ({"public_key": ec_keys("secp256k1").public_pem}, "curve secp256k1"),
        ({}, "JWT_SECRET or JWT_PUBLIC_KEY"),
    ],
)
def test_keys_that_could_never_verify_a_token_are_refused(keys, problem):
    with pytest.raises(ValueError, match=problem) as caught:
        JWTVerifier(**keys)
    assert "\n" not in str(caught.value)


def test_a_private_key_is_not_taken_for_a_public_one():
    pem = (
        ec_keys()
        .private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    with pytest.raises(ValueError, match="not a PEM public key"):
        JWTVerifier(public_key=pem)


# -- the jwt query parameter ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "token"),
    [
        ("/sse/x", None),
        ("/sse/x?a=1", None),
        ("/sse/x?xjwt=1", None),
        ("/sse/x?jwt=abc.def.ghi", "abc.def.ghi"),
        ("/sse/x?a=1&jwt=abc&lastEventId=7", "abc"),
    ],
)
def test_jwt_from_url_finds_the_parameter(url, token):
    assert jwt_from_url(url) == token


@pytest.mark.parametrize("url", ["/sse/x?jwt=", "/sse/x?jwt=a&jwt=b"])
def test_an_empty_or_repeated_jwt_parameter_is_invalid_jwt(url):
    with pytest.raises(InvalidJWT):
        jwt_from_url(url)
