"""The HTTP API: bearer-token auth, thin routers over `replay`, and errors mapped to statuses.

Imports `replay` (and settings handed in by the wiring); never `storage`, `streams` or SQL.
"""

from api.app import create_app
from api.auth import (
    AuthError,
    AuthUnavailable,
    Forbidden,
    MissingToken,
    Principal,
    TokenVerifier,
    Unauthenticated,
    generate_ed25519_keypair,
    load_or_create_dev_keys,
    mint_token,
)

__all__ = [
    "AuthError",
    "AuthUnavailable",
    "Forbidden",
    "MissingToken",
    "Principal",
    "TokenVerifier",
    "Unauthenticated",
    "create_app",
    "generate_ed25519_keypair",
    "load_or_create_dev_keys",
    "mint_token",
]
