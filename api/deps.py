"""Dependencies of the routes, as `Annotated` aliases: a route names what it needs by type.

The reader and the token verifier are put on ``app.state`` by `create_app`, the one place that
wires them; routes never construct either.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.auth import MissingToken, Principal, TokenVerifier
from replay import SessionReader

logger = logging.getLogger(__name__)

# auto_error=False: a missing or non-Bearer header must reach our handler (401 with the RFC 6750
# challenge), not FastAPI's default 403.
_bearer = HTTPBearer(auto_error=False, description="A JWT with role auditor or admin.")


def get_reader(request: Request) -> SessionReader:
    reader: SessionReader = request.app.state.reader
    return reader


def get_verifier(request: Request) -> TokenVerifier:
    verifier: TokenVerifier = request.app.state.verifier
    return verifier


VerifierDep = Annotated[TokenVerifier, Depends(get_verifier)]
ReaderDep = Annotated[SessionReader, Depends(get_reader)]


def get_principal(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    verifier: VerifierDep,
) -> Principal:
    """The authenticated caller; every /api/v1 route depends on it (FastAPI caches it per request)."""
    if credentials is None:
        raise MissingToken()
    return verifier.verify(credentials.credentials)


PrincipalDep = Annotated[Principal, Depends(get_principal)]
