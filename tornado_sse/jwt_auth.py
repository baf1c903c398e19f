"""Stateless streams: a stream's JWT turned into verified claims, or the error its client gets.

PyJWT does the verification (signature, algorithm, ``exp``, ``nbf``, ``aud``, ``iss``); this
module decides which algorithms and keys are acceptable and checks the gateway's own claims
(wire contract section 9)::

    verifier = JWTVerifier(secret=os.environ["JWT_SECRET"], audience="sse")
    claims = verifier.verify(token)  # StreamClaims, or raises InvalidJWT / JWTExpired

The accepted algorithms follow from the configured keys alone, never from the token: HS256,
HS384 and HS512 only with a ``JWT_SECRET`` long enough for them (RFC 7518 3.2: at least the
hash's size), RS*/PS* with an RSA public key of 2048 bits or more, the one ES* of an elliptic
key's curve, EdDSA with an Ed25519 or Ed448 key. ``none`` never; a token whose header names an
algorithm of one key is verified with that key only, so an HS256 token signed with the public
key's PEM as its secret is refused (the HS/RS confusion). Nothing here does I/O or knows HTTP.

PyJWT and cryptography are the optional ``jwt`` extra: they are imported when a verifier is
built, so this module can be imported without them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from . import protocol
from .errors import InvalidJWT, JWTExpired

if TYPE_CHECKING:
    from .config import Settings

#: The query parameter of a stream request that carries its JWT.
PARAMETER = "jwt"

#: Each HMAC algorithm and the shortest secret it may use, in bytes (its hash's size).
HMAC_MIN_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
#: The smallest RSA key accepted, in bits (NIST SP 800-131A).
RSA_MIN_BITS = 2048
RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
#: The ES* algorithm of each elliptic curve (by cryptography's curve name).
EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


@dataclass(frozen=True, slots=True)
class StreamClaims:
    """What a verified JWT says about its stream.

    ``user`` is the ``sub`` claim (``None``: anonymous), ``channels`` the channels to subscribe
    (as a connect answer names them), ``info`` the ``info`` object validated
    (:class:`~tornado_sse.protocol.Info`; ``None`` when absent),
    ``expires_at`` the ``exp`` claim in Unix seconds: the stream ends then.
    """

    user: str | None
    channels: tuple[str, ...]
    info: protocol.Info | None
    expires_at: float


def jwt_from_url(url: str) -> str | None:
    """The ``jwt`` query parameter of a request target, ``None`` when it has none.

    Raises :class:`InvalidJWT` when it is given more than once (which one would a proxy in
    front have looked at?) or empty.
    """
    if PARAMETER + "=" not in url:
        return None
    values = parse_qs(urlsplit(url).query, keep_blank_values=True).get(PARAMETER)
    if values is None:
        return None  # e.g. "?xjwt=1"
    if len(values) > 1:
        raise InvalidJWT("give one 'jwt' query parameter, not %d" % len(values))
    if not values[0]:
        raise InvalidJWT("the 'jwt' query parameter is empty")
    return values[0]


class JWTVerifier:
    """Verifies stream JWTs against a secret and/or a public key (see the module's notes).

    The constructor raises ``ValueError`` (a one-line message naming the setting) for a key
    that could never verify a token, and ``ImportError`` without the ``jwt`` extra.
    """

    def __init__(
        self,
        *,
        secret: str | None = None,
        public_key: str | None = None,
        audience: str | None = None,
        issuer: str | None = None,
    ) -> None:
        import jwt  # the optional 'jwt' extra

        self._jwt = jwt
        self.audience = audience
        self.issuer = issuer
        #: The key of each accepted algorithm.
        self._keys: dict[str, Any] = {}
        if secret is not None:
            self._keys.update(_secret_algorithms(secret))
        if public_key is not None:
            key = _load_public_key(public_key)
            self._keys.update(dict.fromkeys(_public_key_algorithms(key), key))
        if not self._keys:
            raise ValueError("JWT_SECRET or JWT_PUBLIC_KEY is needed to verify JWTs")
        self._algorithms = tuple(sorted(self._keys))
        # Only one kind of key: no need to read the header to choose one.
        kinds = {isinstance(k, bytes) for k in self._keys.values()}
        self._only_key = next(iter(self._keys.values())) if len(kinds) == 1 else None
        self._decoder = jwt.PyJWT(
            options={
                "require": ["exp"],
                # ``iat`` is informational (RFC 7519 4.1.6): refusing one a little in the future
                # would refuse tokens minted by a backend whose clock is a little ahead.
                "verify_iat": False,
            }
        )

    @property
    def algorithms(self) -> tuple[str, ...]:
        """Every algorithm this verifier accepts, in a stable order."""
        return self._algorithms

    def verify(self, token: str) -> StreamClaims:
        """The claims of ``token`` once its signature, algorithm, ``exp``, ``nbf``, ``aud``
        (when an audience is configured, or the token names one) and ``iss`` (when an issuer is
        configured) are right. Raises :class:`JWTExpired` for an ``exp`` that has passed (and
        only when everything else verifies), :class:`InvalidJWT` for anything else."""
        jwt = self._jwt
        key = self._only_key
        algorithms = self.algorithms
        if key is None:
            try:
                alg = jwt.get_unverified_header(token).get("alg")
            except jwt.PyJWTError:
                raise InvalidJWT("not a JWT") from None
            key = self._keys.get(alg) if isinstance(alg, str) else None
            if key is None:
                raise InvalidJWT("the JWT's algorithm is not accepted here")
            algorithms = (alg,)
        try:
            claims = self._decoder.decode(
                token,
                key,
                algorithms=list(algorithms),
                audience=self.audience,
                issuer=self.issuer,
            )
        except jwt.ExpiredSignatureError:
            raise JWTExpired() from None
        except jwt.PyJWTError as exc:
            raise InvalidJWT(_why(jwt, exc)) from None
        except (ValueError, TypeError, OverflowError):  # input no PyJWT version should choke on
            raise InvalidJWT("not a valid JWT") from None
        return stream_claims(claims)


def stream_claims(claims: Mapping[str, Any]) -> StreamClaims:
    """The :class:`StreamClaims` of verified ``claims``; :class:`InvalidJWT` for a ``sub``,
    ``channels`` or ``info`` that a connect answer could not carry either (wire contract 3.1)."""
    user = claims.get("sub")
    if user is not None and not protocol.is_valid_user(user):
        raise InvalidJWT("'sub' must be 1-200 printable ASCII characters")
    channels: tuple[str, ...] = ()
    try:
        if "channels" in claims:
            channels = protocol.validate_channels(claims["channels"])
        info = protocol.validate_info(claims.get("info"))
    except ValueError as exc:
        raise InvalidJWT("the JWT's %s" % exc) from None
    # PyJWT checked that ``exp`` is there and a number, and compared its whole seconds.
    expires_at = float(int(claims["exp"]))
    return StreamClaims(user=user, channels=channels, info=info, expires_at=expires_at)


def verifier_for(settings: Settings) -> JWTVerifier | None:
    """The verifier ``settings`` ask for, ``None`` when no JWT key is set. Raises as
    :class:`JWTVerifier` does."""
    if not settings.jwt_configured:
        return None
    return JWTVerifier(
        secret=settings.jwt_secret,
        public_key=settings.jwt_public_key,
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
    )


def _secret_algorithms(secret: str) -> dict[str, bytes]:
    """The HS* algorithms ``secret`` is long enough for, each with the secret's bytes."""
    raw = secret.encode("utf-8")
    if raw.lstrip().startswith(b"-----BEGIN") or raw.startswith(b"ssh-"):
        raise ValueError("JWT_SECRET holds a key, not a secret: give keys as JWT_PUBLIC_KEY")
    usable = {alg: raw for alg, least in HMAC_MIN_BYTES.items() if len(raw) >= least}
    if not usable:
        raise ValueError(
            "JWT_SECRET is %d bytes long; HS256 needs at least %d (RFC 7518 3.2)"
            % (len(raw), HMAC_MIN_BYTES["HS256"])
        )
    return usable


def _load_public_key(pem: str) -> Any:
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        return load_pem_public_key(pem.encode("ascii"))
    except (ValueError, TypeError, UnicodeError):
        raise ValueError(
            "JWT_PUBLIC_KEY is not a PEM public key (-----BEGIN PUBLIC KEY-----)"
        ) from None
    except Exception as exc:  # cryptography's UnsupportedAlgorithm and its kin
        raise ValueError("JWT_PUBLIC_KEY cannot be used: %s" % type(exc).__name__) from None


def _public_key_algorithms(key: Any) -> tuple[str, ...]:
    """The algorithms a public key of this type (and size, or curve) verifies."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < RSA_MIN_BITS:
            raise ValueError(
                "JWT_PUBLIC_KEY is an RSA key of %d bits; at least %d are needed"
                % (key.key_size, RSA_MIN_BITS)
            )
        return RSA_ALGORITHMS
    if isinstance(key, ec.EllipticCurvePublicKey):
        alg = EC_ALGORITHMS.get(key.curve.name)
        if alg is None:
            raise ValueError(
                "JWT_PUBLIC_KEY is on the curve %s; JWTs use P-256, P-384 or P-521" % key.curve.name
            )
        return (alg,)
    if isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        return ("EdDSA",)
    raise ValueError("JWT_PUBLIC_KEY is not an RSA, elliptic curve or Ed25519/Ed448 key")


def _why(jwt: Any, exc: Exception) -> str:
    """What is wrong with a token, in words of ours (the client sees them)."""
    reasons = (
        (jwt.InvalidSignatureError, "the JWT's signature does not verify"),
        (jwt.InvalidAlgorithmError, "the JWT's algorithm is not accepted here"),
        (jwt.InvalidAudienceError, "the JWT is not meant for this audience"),
        (jwt.InvalidIssuerError, "the JWT's issuer is not accepted here"),
        (jwt.ImmatureSignatureError, "the JWT is not valid yet ('nbf')"),
        (jwt.InvalidKeyError, "the JWT cannot be verified with the configured key"),
    )
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return "the JWT lacks the '%s' claim" % exc.claim  # one of ours: exp, aud or iss
    for kind, why in reasons:
        if isinstance(exc, kind):
            return why
    return "not a valid JWT"
