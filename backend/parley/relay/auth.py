"""Who is calling: JWT verification, the principal it yields, and minting tokens for `parley token`.

Keys and algorithms come from settings only, never from the token: HS256/384/512 with ``jwt_secret``, or
RS*/PS*/ES*/EdDSA with ``jwt_public_key`` (PEM text or a path to a PEM file) or ``jwt_jwks_url``. A configuration
that mixes symmetric and asymmetric algorithms is refused at start-up, which closes the HS/RS key-confusion hole;
``none`` is never accepted. Errors name what is wrong ("token expired", "bad signature") and never echo the token.
"""

from __future__ import annotations

import logging
import math
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from parley.errors import AuthError, DependencyError, Forbidden
from parley.rag.types import KB_NAME_PATTERN
from parley.settings import Settings

log = logging.getLogger(__name__)
_KB_NAME = re.compile(KB_NAME_PATTERN)

SYMMETRIC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
MAX_TOKEN_CHARS = 8192
MAX_USER_ID_CHARS = 256
MIN_SECRET_BYTES = 32


@dataclass(frozen=True)
class Principal:
    """An authenticated user. ``providers`` is None when the token does not restrict the provider."""

    user_id: str
    claims: Mapping[str, Any] = field(hash=False)
    providers: frozenset[str] | None = None


def bearer_token(authorization_header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None when absent or malformed."""
    if not authorization_header:
        return None
    parts = authorization_header.strip().split(None, 1)
    if len(parts) != 2 or parts[0].lower() != "bearer":
        return None
    token = parts[1].strip()
    if not token or any(c.isspace() for c in token):
        return None
    return token


def check_provider(principal: Principal, provider: str) -> None:
    """Raise Forbidden (403) when the principal's token does not allow ``provider``."""
    if principal.providers is not None and provider not in principal.providers:
        raise Forbidden(f"provider {provider!r} is not allowed for this user", code="provider_not_allowed")


def granted_kbs(settings: Settings, principal: Principal) -> list[str] | None:
    """The knowledge bases the token grants (``settings.kb_claim``: a name or a list), first = default; None when
    the token has no such claim."""
    raw = principal.claims.get(settings.kb_claim)
    if raw is None:
        return None
    names = [raw] if isinstance(raw, str) else raw if isinstance(raw, list) else None
    if not names or not all(isinstance(n, str) and _KB_NAME.fullmatch(n) for n in names):
        raise Forbidden(f"the token's {settings.kb_claim!r} claim is not a valid knowledge-base name or list")
    return names


def kb_for(settings: Settings, principal: Principal, requested: str | None) -> str:
    """The session's knowledge base: ``?kb=`` if the token grants it, else the token's first, else the default.
    Raise Forbidden (403) for a knowledge base the token does not grant."""
    granted = granted_kbs(settings, principal)
    allowed = granted if granted is not None else [settings.kb_default]
    if not requested:
        return allowed[0]
    if requested not in allowed:
        raise Forbidden(f"knowledge base {requested!r} is not granted to this user", code="kb_not_allowed")
    return requested


def check_origin(settings: Settings, origin: str | None, host: str | None) -> None:
    """Raise Forbidden unless a browser's ``Origin`` is allowed.

    No Origin header (a server-side client) passes: Origin is a browser defence, and such clients authenticate
    with a Bearer JWT. ``allowed_origins=["*"]`` allows any; a non-empty list allows exactly those origins; an empty
    list allows the same origin only (the Origin's host[:port] equals the request's Host).
    """
    if origin is None:
        return
    allowed = [o.strip().rstrip("/").lower() for o in settings.allowed_origins]
    if "*" in allowed:
        return
    normalized = origin.strip().rstrip("/").lower()
    if allowed:
        if normalized in allowed:
            return
    elif host and normalized != "null":
        parts = urlsplit(normalized)
        if parts.scheme in ("http", "https") and parts.netloc and parts.netloc == host.strip().lower():
            return
    raise Forbidden("origin not allowed", code="origin_not_allowed")


def _load_public_key(value: str) -> Any:
    text = value.strip()
    if not text.startswith("-----BEGIN"):
        path = Path(text).expanduser()
        if not path.is_file():
            raise ValueError("PARLEY_JWT_PUBLIC_KEY is neither PEM text nor a readable PEM file")
        text = path.read_text()
    try:
        return load_pem_public_key(text.encode())
    except ValueError as exc:
        raise ValueError(f"PARLEY_JWT_PUBLIC_KEY is not a valid PEM public key: {exc}") from None


def _key_fits(key: Any, algorithm: str) -> bool:
    if algorithm.startswith(("RS", "PS")):
        return isinstance(key, rsa.RSAPublicKey)
    if algorithm.startswith("ES"):
        return isinstance(key, ec.EllipticCurvePublicKey)
    return isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey)


class JWTVerifier:
    """Verifies JWTs against the configured key and claims. Construction validates the configuration."""

    def __init__(self, settings: Settings) -> None:
        algorithms = list(dict.fromkeys(settings.jwt_algorithms))
        if not algorithms:
            raise ValueError("PARLEY_JWT_ALGORITHMS is empty")
        unknown = [a for a in algorithms if a not in SYMMETRIC_ALGORITHMS | ASYMMETRIC_ALGORITHMS]
        if unknown:
            raise ValueError(f"unsupported JWT algorithm(s) {unknown} (never 'none')")
        symmetric = [a for a in algorithms if a in SYMMETRIC_ALGORITHMS]
        if symmetric and len(symmetric) != len(algorithms):
            raise ValueError(
                "PARLEY_JWT_ALGORITHMS mixes HMAC and public-key algorithms; configure one family"
            )
        self._audience = settings.jwt_audience or None
        self._issuer = settings.jwt_issuer or None
        self._leeway = float(settings.jwt_leeway_s)
        self._providers_claim = settings.jwt_providers_claim
        self._jwks: jwt.PyJWKClient | None = None
        self._key: Any = None
        if symmetric:
            secret = settings.jwt_secret.get_secret_value()
            if not secret:
                raise ValueError("HMAC algorithms configured but PARLEY_JWT_SECRET is not set")
            if secret.lstrip().startswith("-----BEGIN"):
                raise ValueError("PARLEY_JWT_SECRET looks like a PEM key; HMAC needs a shared secret")
            if len(secret.encode()) < MIN_SECRET_BYTES:
                log.warning(
                    "PARLEY_JWT_SECRET is shorter than %d bytes; use a longer random secret", MIN_SECRET_BYTES
                )
            self._key = secret.encode()
        elif settings.jwt_public_key and settings.jwt_jwks_url:
            raise ValueError("set PARLEY_JWT_PUBLIC_KEY or PARLEY_JWT_JWKS_URL, not both")
        elif settings.jwt_public_key:
            self._key = _load_public_key(settings.jwt_public_key)
            fitting = [a for a in algorithms if _key_fits(self._key, a)]
            if not fitting:
                raise ValueError(f"PARLEY_JWT_PUBLIC_KEY does not fit any of the algorithms {algorithms}")
            algorithms = fitting
        elif settings.jwt_jwks_url:
            self._jwks = jwt.PyJWKClient(settings.jwt_jwks_url, cache_keys=True, lifespan=300, timeout=5)
        else:
            raise ValueError(
                "public-key algorithms configured but neither PARLEY_JWT_PUBLIC_KEY nor _JWKS_URL set"
            )
        self._algorithms = frozenset(algorithms)

    @property
    def algorithms(self) -> frozenset[str]:
        return self._algorithms

    @property
    def uses_network(self) -> bool:
        """True when verification may fetch keys (JWKS): call it off the event loop (``asyncio.to_thread``)."""
        return self._jwks is not None

    def verify(self, token: str) -> Principal:
        """The principal of a valid token; AuthError (401) otherwise; DependencyError if the JWKS is unreachable."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
            raise AuthError("malformed token", code="invalid_token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise AuthError("malformed token", code="invalid_token") from None
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in self._algorithms:
            raise AuthError("token algorithm not allowed", code="invalid_token")
        key = self._signing_key(token, algorithm)
        options: dict[str, Any] = {
            "require": ["exp", "sub"],
            "verify_signature": True,
            "verify_exp": True,
            "verify_nbf": True,
            "verify_iat": False,  # checked below, with its own message
            "verify_aud": self._audience is not None,
            "verify_iss": self._issuer is not None,
        }
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                options=options,  # type: ignore[arg-type]
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
            )
        except jwt.InvalidTokenError as exc:
            raise _auth_error(exc) from None
        return self._principal(claims)

    def _signing_key(self, token: str, algorithm: str) -> Any:
        if self._jwks is None:
            return self._key
        try:
            jwk = self._jwks.get_signing_key_from_jwt(token)
        except jwt.PyJWKClientConnectionError:
            log.warning("JWKS endpoint unreachable")
            raise DependencyError("cannot fetch the signing keys (JWKS)") from None
        except (jwt.PyJWKClientError, jwt.InvalidTokenError):
            raise AuthError("unknown signing key", code="invalid_token") from None
        data: Mapping[str, Any] = getattr(jwk, "_jwk_data", None) or {}
        declared = data.get("alg")
        if (declared is not None and declared != algorithm) or data.get("use", "sig") != "sig":
            raise AuthError("token algorithm does not match its key", code="invalid_token")
        if not _key_fits(jwk.key, algorithm):
            raise AuthError("token algorithm does not match its key", code="invalid_token")
        return jwk.key

    def _principal(self, claims: dict[str, Any]) -> Principal:
        for name in ("exp", "nbf"):  # PyJWT reads "1700000000" as a number; RFC 7519 says NumericDate
            value = claims.get(name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
            ):
                raise AuthError(f"invalid {name} claim", code="invalid_token")
        iat = claims.get("iat")
        if iat is not None:
            if isinstance(iat, bool) or not isinstance(iat, int | float) or not math.isfinite(iat):
                raise AuthError("invalid iat claim", code="invalid_token")
            if iat > time.time() + self._leeway:
                raise AuthError("token issued in the future", code="invalid_token")
        sub = claims.get("sub")
        if (
            not isinstance(sub, str)
            or not sub.strip()  # " " would be one shared user for every such token
            or len(sub) > MAX_USER_ID_CHARS
            or not sub.isprintable()
        ):
            raise AuthError("token has no valid sub claim", code="invalid_token")
        providers: frozenset[str] | None = None
        raw = claims.get(self._providers_claim)
        if raw is not None:
            if isinstance(raw, str):
                raw = [raw]
            if not isinstance(raw, list) or not all(isinstance(p, str) for p in raw):
                raise AuthError(f"invalid {self._providers_claim} claim", code="invalid_token")
            providers = frozenset(raw)
        return Principal(user_id=sub, claims=MappingProxyType(dict(claims)), providers=providers)


def _auth_error(exc: jwt.InvalidTokenError) -> AuthError:
    if isinstance(exc, jwt.ExpiredSignatureError):
        return AuthError("token expired", code="token_expired")
    if isinstance(exc, jwt.ImmatureSignatureError):
        return AuthError("token not yet valid", code="invalid_token")
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return AuthError(f"token lacks the {exc.claim} claim", code="invalid_token")
    if isinstance(exc, jwt.InvalidAudienceError):
        return AuthError("wrong token audience", code="invalid_token")
    if isinstance(exc, jwt.InvalidIssuerError):
        return AuthError("wrong token issuer", code="invalid_token")
    if isinstance(exc, jwt.InvalidSignatureError):
        return AuthError("bad signature", code="invalid_token")
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return AuthError("token algorithm not allowed", code="invalid_token")
    if isinstance(exc, jwt.InvalidKeyError):
        return AuthError("token does not fit the configured key", code="invalid_token")
    if isinstance(exc, jwt.DecodeError):
        return AuthError("malformed token", code="invalid_token")
    return AuthError("invalid token", code="invalid_token")


def mint_token(
    settings: Settings, user_id: str, ttl_s: int = 3600, extra_claims: Mapping[str, Any] | None = None
) -> str:
    """An HS256 JWT for ``user_id`` signed with ``jwt_secret`` (what `parley token` prints).

    Standard claims (sub, iat, nbf, exp, jti, and aud/iss when configured) are set here and win over
    ``extra_claims``. Raises ValueError when the secret is unset or the relay would not accept HS256.
    """
    secret = settings.jwt_secret.get_secret_value()
    if not secret:
        raise ValueError("PARLEY_JWT_SECRET is not set: cannot mint a token (set it to a long random string)")
    if "HS256" not in settings.jwt_algorithms:
        raise ValueError(
            f"PARLEY_JWT_ALGORITHMS={list(settings.jwt_algorithms)} does not accept HS256 tokens"
        )
    if not user_id:
        raise ValueError("user id must not be empty")
    if ttl_s <= 0:
        raise ValueError("ttl_s must be positive")
    now = int(time.time())
    claims: dict[str, Any] = dict(extra_claims or {})
    claims.update(sub=user_id, iat=now, nbf=now, exp=now + int(ttl_s), jti=secrets.token_urlsafe(12))
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    return jwt.encode(claims, secret, algorithm="HS256")
