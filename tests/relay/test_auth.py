"""The JWT attack matrix at the verifier level, good tokens for every key kind, and the small auth helpers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import SecretStr

from parley.errors import AuthError, DependencyError, Forbidden
from parley.relay.auth import JWTVerifier, Principal, bearer_token, check_origin, check_provider, mint_token
from parley.settings import Settings

SECRET = "a-test-secret-that-is-long-enough-for-hs256-and-even-for-hs512-tokens!"


def _pem(private_key: Any) -> str:
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _hs_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "jwt_secret": SecretStr(SECRET),
        "jwt_algorithms": ["HS256"],
        "jwt_leeway_s": 10,
    }
    values.update(overrides)
    return Settings(**values)


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {"sub": "alice", "iat": now, "nbf": now, "exp": now + 600}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _hs(claims: dict[str, Any], secret: str = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, secret, algorithm=algorithm)


def _refused(verifier: JWTVerifier, token: str, message: str) -> AuthError:
    with pytest.raises(AuthError) as info:
        verifier.verify(token)
    err = info.value
    assert err.status == 401 and not isinstance(err, Forbidden)
    assert message in err.message
    if len(token) > 8:
        assert token not in str(err) and token not in err.message
    return err


# --- good tokens ------------------------------------------------------------------------------------------


def test_good_hs256_minted_token() -> None:
    settings = _hs_settings()
    token = mint_token(settings, "alice", ttl_s=60)
    principal = JWTVerifier(settings).verify(token)
    assert principal.user_id == "alice"
    assert principal.providers is None
    assert principal.claims["exp"] - principal.claims["iat"] == 60
    assert {"nbf", "jti"} <= set(principal.claims)


def test_minted_token_carries_providers_aud_and_iss() -> None:
    settings = _hs_settings(jwt_audience="parley", jwt_issuer="https://id.example")
    token = mint_token(settings, "bob", extra_claims={"parley_providers": ["local"], "sub": "mallory"})
    principal = JWTVerifier(settings).verify(token)
    assert principal.user_id == "bob"  # standard claims win over extra ones
    assert principal.providers == frozenset({"local"})
    assert (principal.claims["aud"], principal.claims["iss"]) == ("parley", "https://id.example")


def test_good_rs256_with_pem_text_and_file(rsa_key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
    token = jwt.encode(_claims(), rsa_key, algorithm="RS256")
    pem_file = tmp_path / "key.pem"
    pem_file.write_text(_pem(rsa_key))
    for key in (_pem(rsa_key), str(pem_file)):
        verifier = JWTVerifier(Settings(jwt_algorithms=["RS256"], jwt_public_key=key))
        assert verifier.verify(token).user_id == "alice"


def test_good_es256(ec_key: ec.EllipticCurvePrivateKey) -> None:
    token = jwt.encode(_claims(sub="carol"), ec_key, algorithm="ES256")
    verifier = JWTVerifier(Settings(jwt_algorithms=["ES256"], jwt_public_key=_pem(ec_key)))
    assert verifier.verify(token).user_id == "carol"


def test_leeway_accepts_small_clock_skew() -> None:
    now = int(time.time())
    verifier = JWTVerifier(_hs_settings(jwt_leeway_s=10))
    token = _hs(_claims(exp=now - 3, nbf=now + 3, iat=now + 3))
    assert verifier.verify(token).user_id == "alice"


# --- the attack matrix ------------------------------------------------------------------------------------


def test_expired() -> None:
    err = _refused(JWTVerifier(_hs_settings()), _hs(_claims(exp=int(time.time()) - 60)), "token expired")
    assert err.code == "token_expired"


def test_nbf_in_the_future() -> None:
    _refused(JWTVerifier(_hs_settings()), _hs(_claims(nbf=int(time.time()) + 60)), "not yet valid")


def test_iat_in_the_future_beyond_leeway() -> None:
    _refused(JWTVerifier(_hs_settings()), _hs(_claims(iat=int(time.time()) + 60)), "issued in the future")


def test_bad_signature() -> None:
    verifier = JWTVerifier(_hs_settings())
    _refused(verifier, _hs(_claims(), secret="another-secret-that-is-long-enough-too!!"), "bad signature")
    header, payload, signature = _hs(_claims()).split(".")
    forged = base64.urlsafe_b64encode(json.dumps(_claims(sub="root")).encode()).rstrip(b"=").decode()
    _refused(verifier, f"{header}.{forged}.{signature}", "bad signature")


def test_alg_none_is_refused() -> None:
    token = jwt.encode(_claims(), "", algorithm="none")
    _refused(JWTVerifier(_hs_settings()), token, "algorithm not allowed")
    _refused(JWTVerifier(_hs_settings()), _unsigned(_claims(), alg="None"), "algorithm not allowed")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(claims: dict[str, Any], alg: str) -> str:
    header = _b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(claims).encode())}."


def test_hs_rs_key_confusion(rsa_key: rsa.RSAPrivateKey) -> None:
    """An HS256 token 'signed' with the RSA public key as HMAC secret must not pass an RS256 verifier."""
    pem = _pem(rsa_key)
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    signing_input = f"{header}.{_b64(json.dumps(_claims()).encode())}"
    signature = _b64(hmac.new(pem.encode(), signing_input.encode(), hashlib.sha256).digest())
    verifier = JWTVerifier(Settings(jwt_algorithms=["RS256"], jwt_public_key=pem))
    _refused(verifier, f"{signing_input}.{signature}", "algorithm not allowed")


def test_mixed_or_unknown_algorithm_configs_are_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    pem = _pem(rsa_key)
    for algorithms in (["HS256", "RS256"], ["none"], ["RS256", "none"], []):
        with pytest.raises(ValueError):
            JWTVerifier(Settings(jwt_secret=SecretStr(SECRET), jwt_algorithms=algorithms, jwt_public_key=pem))
    with pytest.raises(ValueError):  # an RSA key cannot verify ES256
        JWTVerifier(Settings(jwt_algorithms=["ES256"], jwt_public_key=pem))
    with pytest.raises(ValueError):  # HMAC without a secret
        JWTVerifier(Settings(jwt_algorithms=["HS256"], jwt_secret=SecretStr("")))
    with pytest.raises(ValueError):  # a public key used as an HMAC secret
        JWTVerifier(Settings(jwt_algorithms=["HS256"], jwt_secret=SecretStr(pem)))
    with pytest.raises(ValueError):  # public-key algorithm without a key
        JWTVerifier(Settings(jwt_algorithms=["RS256"]))


def test_wrong_audience_and_issuer() -> None:
    verifier = JWTVerifier(_hs_settings(jwt_audience="parley", jwt_issuer="https://id.example"))
    good = _claims(aud="parley", iss="https://id.example")
    assert verifier.verify(_hs(good)).user_id == "alice"
    _refused(verifier, _hs({**good, "aud": "someone-else"}), "wrong token audience")
    _refused(verifier, _hs({**good, "iss": "https://evil.example"}), "wrong token issuer")
    _refused(verifier, _hs({k: v for k, v in good.items() if k != "aud"}), "lacks the aud claim")
    _refused(verifier, _hs({k: v for k, v in good.items() if k != "iss"}), "lacks the iss claim")


def test_missing_or_bad_sub_and_exp() -> None:
    verifier = JWTVerifier(_hs_settings())
    _refused(verifier, _hs(_claims(sub=None)), "lacks the sub claim")
    _refused(verifier, _hs(_claims(exp=None)), "lacks the exp claim")
    _refused(verifier, _hs(_claims(sub="")), "")
    _refused(verifier, _hs(_claims(sub="x" * 300)), "sub")
    _refused(verifier, _hs(_claims(sub="a\nb")), "sub")
    _refused(
        verifier, _hs(_claims(sub=" ")), "sub"
    )  # a blank id would be one user shared by every such token
    exp = int(time.time()) + 600
    _refused(verifier, _hs(_claims(exp=str(exp))), "exp")  # a numeric string is not a NumericDate
    _refused(verifier, _hs(_claims(nbf=str(exp - 1200))), "nbf")


def test_disallowed_algorithm(ec_key: ec.EllipticCurvePrivateKey, rsa_key: rsa.RSAPrivateKey) -> None:
    _refused(JWTVerifier(_hs_settings()), _hs(_claims(), algorithm="HS512"), "algorithm not allowed")
    verifier = JWTVerifier(Settings(jwt_algorithms=["RS256"], jwt_public_key=_pem(rsa_key)))
    _refused(verifier, jwt.encode(_claims(), ec_key, algorithm="ES256"), "algorithm not allowed")


@pytest.mark.parametrize(
    "token", ["", "garbage", "not.a.jwt", "a.b", "e30.e30.", "..", "x" * 9000, "eyJhbGciOiJIUzI1NiJ9.!!!.abc"]
)
def test_garbage_tokens(token: str) -> None:
    _refused(JWTVerifier(_hs_settings()), token, "")


def test_bad_providers_claim() -> None:
    verifier = JWTVerifier(_hs_settings())
    _refused(verifier, _hs(_claims(parley_providers={"local": True})), "parley_providers")
    assert verifier.verify(_hs(_claims(parley_providers="local"))).providers == frozenset({"local"})


# --- JWKS from a real loopback server ---------------------------------------------------------------------


@pytest.fixture
def jwks_server(rsa_key: rsa.RSAPrivateKey) -> Iterator[str]:
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True)
    body = json.dumps({"keys": [{**jwk, "kid": "k1", "alg": "RS256", "use": "sig"}]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_jwks(jwks_server: str, rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = JWTVerifier(Settings(jwt_algorithms=["RS256", "RS384"], jwt_jwks_url=jwks_server))
    assert verifier.uses_network
    token = jwt.encode(_claims(), rsa_key, algorithm="RS256", headers={"kid": "k1"})
    assert verifier.verify(token).user_id == "alice"
    assert verifier.verify(token).user_id == "alice"  # from the cache
    _refused(
        verifier,
        jwt.encode(_claims(), rsa_key, algorithm="RS256", headers={"kid": "k9"}),
        "unknown signing key",
    )
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _refused(
        verifier, jwt.encode(_claims(), other, algorithm="RS256", headers={"kid": "k1"}), "bad signature"
    )
    # The key says RS256: an RS384 token under its kid is refused even though RS384 is configured.
    _refused(
        verifier,
        jwt.encode(_claims(), rsa_key, algorithm="RS384", headers={"kid": "k1"}),
        "does not match its key",
    )


def test_jwks_unreachable_is_a_dependency_error(rsa_key: rsa.RSAPrivateKey) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    verifier = JWTVerifier(Settings(jwt_algorithms=["RS256"], jwt_jwks_url=f"http://127.0.0.1:{port}/jwks"))
    with pytest.raises(DependencyError):
        verifier.verify(jwt.encode(_claims(), rsa_key, algorithm="RS256", headers={"kid": "k1"}))


# --- helpers ----------------------------------------------------------------------------------------------


def test_check_provider() -> None:
    anyone = Principal(user_id="a", claims={}, providers=None)
    local_only = Principal(user_id="b", claims={}, providers=frozenset({"local"}))
    check_provider(anyone, "openai")
    check_provider(local_only, "local")
    with pytest.raises(Forbidden) as info:
        check_provider(local_only, "openai")
    assert info.value.status == 403


def test_bearer_token() -> None:
    assert bearer_token("Bearer abc.def.ghi") == "abc.def.ghi"
    assert bearer_token("bearer   abc ") == "abc"
    for header in (None, "", "Bearer", "Bearer ", "Basic abc", "Bearer a b", "abc"):
        assert bearer_token(header) is None


def test_check_origin() -> None:
    same = Settings(allowed_origins=[])
    check_origin(same, None, "relay.example:8080")  # not a browser
    check_origin(same, "http://relay.example:8080", "relay.example:8080")
    for origin in ("http://evil.example", "null", "http://relay.example:9999"):
        with pytest.raises(Forbidden):
            check_origin(same, origin, "relay.example:8080")
    listed = Settings(allowed_origins=["https://app.example/"])
    check_origin(listed, "https://APP.example", "relay.example")
    with pytest.raises(Forbidden):
        check_origin(listed, "https://relay.example", "relay.example")
    check_origin(Settings(allowed_origins=["*"]), "https://anything.example", "relay.example")


def test_mint_token_needs_a_secret_and_hs256() -> None:
    with pytest.raises(ValueError, match="PARLEY_JWT_SECRET"):
        mint_token(Settings(jwt_secret=SecretStr("")), "alice")
    with pytest.raises(ValueError, match="HS256"):
        mint_token(Settings(jwt_secret=SecretStr(SECRET), jwt_algorithms=["RS256"]), "alice")
    with pytest.raises(ValueError):
        mint_token(_hs_settings(), "alice", ttl_s=0)
