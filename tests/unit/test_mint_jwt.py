"""``tornado_sse.client.mint_jwt``: HS256 with the standard library, checked by PyJWT."""

from __future__ import annotations

import jwt
import pytest

import tornado_sse_client
from tests.support.tokens import SECRET
from tornado_sse.client import mint_jwt
from tornado_sse.jwt_auth import JWTVerifier


def test_minted_token_is_an_hs256_jwt_that_pyjwt_verifies():
    token = mint_jwt("42", ["news", "user.42"], 60, {"name": "Zoë"}, secret=SECRET, now=1000.5)
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}
    payload = jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_exp": False})
    assert payload == {
        "sub": "42",
        "channels": ["news", "user.42"],
        "info": {"name": "Zoë"},
        "iat": 1000,
        "exp": 1061,  # rounded up: the token lives at least ttl seconds
    }


def test_minted_token_opens_what_it_says_at_the_gateways_verifier():
    token = mint_jwt(None, ["a"], 30, secret=SECRET, audience="sse", issuer="app")
    claims = JWTVerifier(secret=SECRET, audience="sse", issuer="app").verify(token)
    assert (claims.user, claims.channels, claims.info) == (None, ("a",), None)


def test_a_minted_token_signed_with_another_secret_does_not_verify():
    token = mint_jwt("42", [], 30, secret="x" * 32)
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, SECRET, algorithms=["HS256"])


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"secret": "short", "ttl": 60}, "at least 32 bytes"),
        ({"secret": SECRET, "ttl": 0}, "ttl"),
        ({"secret": SECRET, "ttl": float("nan")}, "ttl"),
        ({"secret": SECRET, "ttl": 60, "info": {"x": float("nan")}}, "JSON"),
    ],
)
def test_mint_jwt_refuses_what_the_gateway_could_never_accept(kwargs, words):
    with pytest.raises(ValueError, match=words):
        mint_jwt("42", [], **kwargs)


def test_mint_jwt_is_the_client_distributions_function():
    # Backends install tornado-sse-client alone; the gateway's module re-exports it.
    assert tornado_sse_client.mint_jwt is mint_jwt
