"""JWTs for the tests: keys, tokens signed by PyJWT, and the forgeries PyJWT refuses to make.

The keys are made once per test session (an RSA key takes a moment). :func:`sign` signs with
PyJWT; :func:`hmac_by_hand` and :func:`unsigned` build tokens with the standard library only,
for the attacks PyJWT itself will not produce (an HS256 token whose secret is a public key's
PEM, ``alg: none``).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

#: A JWT_SECRET long enough for HS256 only (40 bytes).
SECRET = "s3cret-for-tests-0123456789abcdefghijklm"
#: One long enough for HS512 too (64 bytes).
LONG_SECRET = "L" * 64


@dataclass(frozen=True)
class KeyPair:
    """A private key (to sign with) and its public key as PEM text (``JWT_PUBLIC_KEY``)."""

    private: Any
    public_pem: str


def _pair(private: Any) -> KeyPair:
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return KeyPair(private, pem.decode("ascii"))


@functools.cache
def rsa_keys(bits: int = 2048) -> KeyPair:
    return _pair(rsa.generate_private_key(public_exponent=65537, key_size=bits))


@functools.cache
def ec_keys(curve: str = "P-256") -> KeyPair:
    curves = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "secp256k1": ec.SECP256K1()}
    return _pair(ec.generate_private_key(curves[curve]))


@functools.cache
def ed25519_keys() -> KeyPair:
    return _pair(ed25519.Ed25519PrivateKey.generate())


def claims(ttl: float = 60.0, **values: Any) -> dict[str, Any]:
    """Stream claims: ``sub`` 42, no channels, ``exp`` in ``ttl`` seconds, then ``values``
    (a value of ``None`` leaves that claim out)."""
    base: dict[str, Any] = {"sub": "42", "channels": [], "exp": int(time.time() + ttl)}
    base.update(values)
    return {k: v for k, v in base.items() if v is not None}


def sign(payload: dict[str, Any], key: Any = SECRET, algorithm: str = "HS256") -> str:
    """``payload`` signed by PyJWT with ``key`` (a secret, or a private key)."""
    return jwt.encode(payload, key, algorithm=algorithm)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _segment(value: dict[str, Any]) -> str:
    return _b64(json.dumps(value, separators=(",", ":")).encode())


def hmac_by_hand(payload: dict[str, Any], key: bytes | str, algorithm: str = "HS256") -> str:
    """An HS256 (or HS384, HS512) token with ``key`` as its HMAC secret, whatever ``key`` is
    (a public key's PEM, a secret too short for the algorithm)."""
    raw = key.encode() if isinstance(key, str) else key
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
    signing_input = _segment({"alg": algorithm, "typ": "JWT"}) + "." + _segment(payload)
    signature = hmac.new(raw, signing_input.encode("ascii"), digest[algorithm]).digest()
    return signing_input + "." + _b64(signature)


def unsigned(payload: dict[str, Any]) -> str:
    """An ``alg: none`` token: no signature at all."""
    return _segment({"alg": "none", "typ": "JWT"}) + "." + _segment(payload) + "."


def tampered(token: str) -> str:
    """``token`` with its payload changed after signing (``sub`` 43): a bad signature."""
    header, payload, signature = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body["sub"] = "43"
    return ".".join([header, _segment(body), signature])
