"""TokenVerifier and the dev-stack key helpers. Unit tests, plus a JWKS served over local HTTP."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import stat
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from api.auth import (
    AuthUnavailable,
    Forbidden,
    TokenVerifier,
    Unauthenticated,
    generate_ed25519_keypair,
    load_or_create_dev_keys,
    mint_token,
)


@pytest.fixture(scope="module")
def keypair() -> tuple[bytes, bytes]:
    return generate_ed25519_keypair()


@pytest.fixture
def verifier(keypair: tuple[bytes, bytes]) -> TokenVerifier:
    return TokenVerifier(public_key_pem=keypair[1], issuer="blackbox-dev", audience="blackbox")


def _sign(private_pem: bytes, claims: dict[str, Any], *, algorithm: str = "EdDSA", **headers: Any) -> str:
    key = serialization.load_pem_private_key(private_pem, password=None)
    return jwt.encode(claims, key, algorithm=algorithm, headers=headers or None)  # type: ignore[arg-type]


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"sub": "ana", "role": "auditor", "iss": "blackbox-dev", "aud": "blackbox", "exp": now + 600}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def test_minted_token_verifies(keypair: tuple[bytes, bytes], verifier: TokenVerifier) -> None:
    principal = verifier.verify(mint_token(keypair[0], role="auditor", subject="ana"))
    assert principal.subject == "ana"
    assert principal.roles == frozenset({"auditor"})
    assert principal.claims["iss"] == "blackbox-dev"
    assert verifier.verify(mint_token(keypair[0], role="admin", subject="root")).subject == "root"


def test_roles_list_is_accepted(keypair: tuple[bytes, bytes], verifier: TokenVerifier) -> None:
    token = _sign(keypair[0], _claims(role=None, roles=["viewer", "auditor"]))
    assert verifier.verify(token).roles == frozenset({"viewer", "auditor"})


@pytest.mark.parametrize("claims", [_claims(role="viewer"), _claims(role=None), _claims(role=None, roles=[])])
def test_valid_token_without_reader_role_is_forbidden(
    keypair: tuple[bytes, bytes], verifier: TokenVerifier, claims: dict[str, Any]
) -> None:
    with pytest.raises(Forbidden):
        verifier.verify(_sign(keypair[0], claims))


def test_expired_token_is_unauthenticated(keypair: tuple[bytes, bytes], verifier: TokenVerifier) -> None:
    token = _sign(keypair[0], _claims(exp=int(time.time()) - 3600))
    with pytest.raises(Unauthenticated, match="expired"):
        verifier.verify(token)


def test_token_from_another_key_is_unauthenticated(verifier: TokenVerifier) -> None:
    other_private, _ = generate_ed25519_keypair()
    with pytest.raises(Unauthenticated):
        verifier.verify(mint_token(other_private, role="auditor", subject="mallory"))


@pytest.mark.parametrize(
    "claims",
    [
        _claims(aud="someone-else"),
        _claims(iss="https://evil.example"),
        _claims(exp=None),
        _claims(sub=None),
        _claims(nbf=int(time.time()) + 3600),
    ],
    ids=["audience", "issuer", "no-exp", "no-sub", "not-yet-valid"],
)
def test_claims_are_checked(
    keypair: tuple[bytes, bytes], verifier: TokenVerifier, claims: dict[str, Any]
) -> None:
    with pytest.raises(Unauthenticated):
        verifier.verify(_sign(keypair[0], claims))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def test_forged_algorithms_are_refused(keypair: tuple[bytes, bytes], verifier: TokenVerifier) -> None:
    unsigned = jwt.encode(_claims(), key="", algorithm="none")
    # Signed by hand: PyJWT itself refuses to use a PEM key as an HMAC secret.
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    signing_input = f"{header}.{_b64(json.dumps(_claims()).encode())}"
    mac = hmac.new(keypair[1], signing_input.encode(), hashlib.sha256).digest()
    hmac_with_public_key = f"{signing_input}.{_b64(mac)}"
    for token in (unsigned, hmac_with_public_key, "not.a.jwt", "", "x" * 20_000):
        with pytest.raises(Unauthenticated):
            verifier.verify(token)


def test_rsa_and_ec_public_keys(tmp_path: Path) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    for private, algorithm in ((rsa_key, "RS256"), (ec_key, "ES256")):
        public_pem = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        verifier = TokenVerifier(public_key_pem=public_pem.decode())
        token = jwt.encode(_claims(), private, algorithm=algorithm)
        assert verifier.verify(token).subject == "ana"
        assert algorithm in verifier.describe()
        # The algorithm comes from the key: an EdDSA token is refused by an RSA/EC verifier.
        with pytest.raises(Unauthenticated):
            verifier.verify(mint_token(generate_ed25519_keypair()[0], role="auditor", subject="x"))


def test_unsuitable_configuration_is_refused() -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    weak_pem = weak.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    p384_pem = p384.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    for pem in (weak_pem, p384_pem, b"-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n"):
        with pytest.raises(ValueError):
            TokenVerifier(public_key_pem=pem)
    with pytest.raises(ValueError):
        TokenVerifier()
    with pytest.raises(ValueError):
        TokenVerifier(public_key_pem=generate_ed25519_keypair()[1], jwks_url="https://idp.example/jwks")
    with pytest.raises(ValueError):
        TokenVerifier(jwks_url="file:///etc/passwd")


def test_dev_keys_are_created_once_with_a_private_mode(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    private_path, public_path = load_or_create_dev_keys(directory)
    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
    again = load_or_create_dev_keys(directory)
    assert again == (private_path, public_path)
    assert private_path.read_bytes() == again[0].read_bytes()

    public_path.unlink()  # the public half is derived from the private one when missing
    _, public_path = load_or_create_dev_keys(directory)
    verifier = TokenVerifier(
        public_key_pem=public_path.read_bytes(), audience="blackbox", issuer="blackbox-dev"
    )
    token = mint_token(private_path.read_bytes(), role="auditor", subject="dev", ttl_seconds=60)
    assert verifier.verify(token).subject == "dev"


def test_mint_token_arguments() -> None:
    private_pem, _ = generate_ed25519_keypair()
    with pytest.raises(ValueError):
        mint_token(private_pem, role="auditor", subject="x", ttl_seconds=0)
    rsa_pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ValueError):
        mint_token(rsa_pem, role="auditor", subject="x")


# -- JWKS -------------------------------------------------------------------------------------


class _Jwks:
    def __init__(self) -> None:
        self.document: dict[str, Any] = {"keys": []}
        self.requests = 0


@pytest.fixture
def jwks_server() -> Iterator[tuple[str, _Jwks]]:
    state = _Jwks()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests += 1
            body = json.dumps(state.document).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json", state
    finally:
        server.shutdown()
        server.server_close()


def _jwk(private: ed25519.Ed25519PrivateKey, kid: str) -> dict[str, Any]:
    jwk: dict[str, Any] = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(private.public_key()))
    return {**jwk, "kid": kid, "use": "sig"}


def test_jwks_keys_verify_and_are_cached(jwks_server: tuple[str, _Jwks]) -> None:
    url, state = jwks_server
    key = ed25519.Ed25519PrivateKey.generate()
    state.document = {"keys": [_jwk(key, "k1")]}
    verifier = TokenVerifier(jwks_url=url, audience="blackbox")

    for _ in range(3):
        token = jwt.encode(_claims(), key, algorithm="EdDSA", headers={"kid": "k1"})
        assert verifier.verify(token).subject == "ana"
    assert state.requests == 1

    stranger = ed25519.Ed25519PrivateKey.generate()
    with pytest.raises(Unauthenticated):
        verifier.verify(jwt.encode(_claims(), stranger, algorithm="EdDSA", headers={"kid": "k2"}))
    with pytest.raises(Unauthenticated):  # right kid, wrong key
        verifier.verify(jwt.encode(_claims(), stranger, algorithm="EdDSA", headers={"kid": "k1"}))


def test_jwks_hmac_keys_are_refused(jwks_server: tuple[str, _Jwks]) -> None:
    url, state = jwks_server
    secret = b"a-shared-secret-of-at-least-32-bytes!"
    state.document = {"keys": [{"kty": "oct", "k": _b64(secret), "kid": "h1", "alg": "HS256"}]}
    token = jwt.encode(_claims(), secret, algorithm="HS256", headers={"kid": "h1"})
    with pytest.raises(Unauthenticated):
        TokenVerifier(jwks_url=url).verify(token)


def test_unreachable_jwks_is_unavailable_not_unauthenticated() -> None:
    verifier = TokenVerifier(jwks_url="http://127.0.0.1:9/jwks.json", jwks_timeout_seconds=1)
    key = ed25519.Ed25519PrivateKey.generate()
    token = jwt.encode(_claims(), key, algorithm="EdDSA", headers={"kid": "k"})
    with pytest.raises(AuthUnavailable):
        verifier.verify(token)
