"""Bearer-token authentication for the API: who is calling, and may they read evidence.

Tokens are JWTs signed with an asymmetric key; the API holds only the public half (a PEM file,
or the identity provider's JWKS URL), so a leaked API configuration cannot mint tokens. Only
EdDSA, RS256 and ES256 are accepted, and the algorithm is fixed by the key, never taken from
the token's header: that rules out the "alg: none" and HMAC-with-the-public-key forgeries.

The dev stack signs its own tokens: `load_or_create_dev_keys` keeps an Ed25519 key pair in a
directory and `mint_token` issues tokens that `TokenVerifier` accepts with the public half.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

logger = logging.getLogger(__name__)

READ_ROLES: frozenset[str] = frozenset({"auditor", "admin"})
ALGORITHMS: frozenset[str] = frozenset({"EdDSA", "RS256", "ES256"})
DEV_ISSUER = "blackbox-dev"
DEV_AUDIENCE = "blackbox"
MIN_RSA_BITS = 2048
# Tokens are headers; anything this long is garbage or an attempt to make us parse a lot.
MAX_TOKEN_LENGTH = 16_384
DEV_PRIVATE_KEY_FILE = "dev-jwt-ed25519.key.pem"
DEV_PUBLIC_KEY_FILE = "dev-jwt-ed25519.pub.pem"


class AuthError(Exception):
    """Base of the authentication failures; api.errors maps each to its HTTP status."""


class Unauthenticated(AuthError):
    """No token, or a token that is malformed, forged, expired or not meant for us (401)."""


class MissingToken(Unauthenticated):
    """No bearer token at all: the client should authenticate, there is nothing to reject."""

    def __init__(self) -> None:
        super().__init__("missing bearer token (Authorization: Bearer <JWT>)")


class Forbidden(AuthError):
    """A valid token whose holder lacks a role that may read evidence (403)."""


class AuthUnavailable(AuthError):
    """The identity provider's keys cannot be fetched right now (503, not the caller's fault)."""


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: the token's subject and roles, and all its claims."""

    subject: str
    roles: frozenset[str]
    claims: Mapping[str, Any] = field(repr=False)


def _algorithm_for(key: Any) -> str:
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "EdDSA"
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(f"RSA public key has {key.key_size} bits; at least {MIN_RSA_BITS} required")
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError(f"EC public key is on {key.curve.name}; ES256 needs P-256")
        return "ES256"
    raise ValueError(f"unsupported public key type {type(key).__name__}; use Ed25519, RSA or EC P-256")


class TokenVerifier:
    """Verifies bearer JWTs against one public key or a JWKS URL, and checks the caller's role.

    ``audience`` and ``issuer`` are checked when given; with ``audience=None`` the token's
    ``aud`` is not checked at all. ``exp`` and ``sub`` are always required. The role comes from
    a ``role`` claim (string) or a ``roles`` claim (list); one of ``allowed_roles`` must be there.
    """

    def __init__(
        self,
        *,
        public_key_pem: bytes | str | None = None,
        jwks_url: str | None = None,
        issuer: str | None = None,
        audience: str | None = None,
        allowed_roles: Collection[str] = READ_ROLES,
        leeway_seconds: float = 30.0,
        jwks_cache_seconds: float = 300.0,
        jwks_timeout_seconds: float = 10.0,
    ) -> None:
        if (public_key_pem is None) == (jwks_url is None):
            raise ValueError("give exactly one of public_key_pem and jwks_url")
        if not allowed_roles:
            raise ValueError("allowed_roles must name at least one role")
        self._issuer = issuer
        self._audience = audience
        self._allowed_roles = frozenset(allowed_roles)
        self._leeway = leeway_seconds
        self._static_key: tuple[Any, str] | None = None
        self._jwks: jwt.PyJWKClient | None = None
        if public_key_pem is not None:
            pem = public_key_pem.encode() if isinstance(public_key_pem, str) else public_key_pem
            try:
                key = serialization.load_pem_public_key(pem)
            except ValueError as exc:
                raise ValueError(f"public key is not a PEM public key: {exc}") from exc
            self._static_key = (key, _algorithm_for(key))
        elif jwks_url is not None:
            if not jwks_url.startswith(("https://", "http://")):
                raise ValueError("jwks_url must be an http(s) URL")
            # Keys are cached for jwks_cache_seconds; an unknown kid refetches the set, rate
            # limited by PyJWKClient's cooldown, so a rotated key is picked up without restarts.
            self._jwks = jwt.PyJWKClient(
                jwks_url,
                cache_keys=True,
                cache_jwk_set=True,
                lifespan=jwks_cache_seconds,
                timeout=jwks_timeout_seconds,
            )

    def describe(self) -> str:
        source = f"{self._static_key[1]} public key" if self._static_key else "JWKS"
        return f"JWT ({source}, issuer={self._issuer}, audience={self._audience})"

    def verify(self, token: str) -> Principal:
        """The caller behind ``token``; raises Unauthenticated, Forbidden or AuthUnavailable."""
        if not token or len(token) > MAX_TOKEN_LENGTH:
            raise Unauthenticated("bearer token is empty or too long")
        key, algorithm = self._signing_key(token)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "sub"], "verify_aud": self._audience is not None},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("token has expired") from exc
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(f"token is not valid: {exc}") from exc
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise Unauthenticated("token has no subject")
        roles = _roles(claims)
        if not roles & self._allowed_roles:
            raise Forbidden(
                f"subject {subject!r} has no role that may read sessions "
                f"(needs one of: {', '.join(sorted(self._allowed_roles))})"
            )
        return Principal(subject, roles, claims)

    def _signing_key(self, token: str) -> tuple[Any, str]:
        if self._static_key is not None:
            return self._static_key
        if self._jwks is None:  # unreachable: the constructor sets one of the two
            raise AuthUnavailable("no verification key configured")
        try:
            jwk = self._jwks.get_signing_key_from_jwt(token)
        except jwt.PyJWKClientConnectionError as exc:
            logger.error("cannot fetch JWKS: %s", exc)
            raise AuthUnavailable("the identity provider's keys cannot be fetched") from exc
        except (jwt.PyJWKClientError, jwt.PyJWKError, jwt.InvalidTokenError) as exc:
            raise Unauthenticated(f"no matching signing key: {exc}") from exc
        if jwk.algorithm_name not in ALGORITHMS:
            # A JWKS may publish HMAC or exotic keys; only our three asymmetric ones verify here.
            raise Unauthenticated(f"signing key algorithm {jwk.algorithm_name} is not accepted")
        return jwk.key, jwk.algorithm_name


def _roles(claims: Mapping[str, Any]) -> frozenset[str]:
    found: set[str] = set()
    for name in ("role", "roles"):
        value = claims.get(name)
        if isinstance(value, str):
            found.add(value)
        elif isinstance(value, list):
            found.update(item for item in value if isinstance(item, str))
    return frozenset(found)


# -- the dev stack's own tokens ---------------------------------------------------------------


def generate_ed25519_keypair() -> tuple[bytes, bytes]:
    """A fresh Ed25519 key pair as (PKCS#8 private PEM, SubjectPublicKeyInfo public PEM)."""
    private = ed25519.Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem


def load_or_create_dev_keys(directory: Path) -> tuple[Path, Path]:
    """The dev stack's signing key pair in ``directory``, created on first use.

    Returns (private key path, public key path). The private key file is created with mode
    0600 in one step (O_EXCL), so it is never readable by others, not even briefly.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    private_path = directory / DEV_PRIVATE_KEY_FILE
    public_path = directory / DEV_PUBLIC_KEY_FILE
    if not private_path.exists():
        private_pem, _ = generate_ed25519_keypair()
        try:
            descriptor = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process created it first; use theirs
        else:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(private_pem)
            public_path.unlink(missing_ok=True)  # a public key left over from another pair
            logger.info("created a dev JWT signing key in %s", directory)
    if not public_path.exists():
        # Derived from the private key rather than stored with it, so the two always match.
        private = serialization.load_pem_private_key(private_path.read_bytes(), password=None)
        public_pem = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        temporary = public_path.with_name(f".{public_path.name}.{uuid.uuid4().hex}")
        temporary.write_bytes(public_pem)
        temporary.replace(public_path)
    return private_path, public_path


def mint_token(
    private_pem: bytes,
    *,
    role: str,
    subject: str,
    issuer: str = DEV_ISSUER,
    audience: str = DEV_AUDIENCE,
    ttl_seconds: int = 12 * 3600,
) -> str:
    """An EdDSA-signed JWT for ``subject`` with ``role``, valid for ``ttl_seconds`` from now."""
    if ttl_seconds <= 0:
        raise ValueError("ttl_seconds must be positive")
    if not subject:
        raise ValueError("subject must not be empty")
    key = serialization.load_pem_private_key(private_pem, password=None)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ValueError("mint_token signs with an Ed25519 private key (EdDSA)")
    now = int(time.time())
    claims = {
        "sub": subject,
        "role": role,
        "iss": issuer,
        "aud": audience,
        "iat": now,
        "nbf": now,
        "exp": now + ttl_seconds,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, key, algorithm="EdDSA")
