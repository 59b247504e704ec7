"""The one place where errors become HTTP responses.

Rule: bad input gets a 4xx that says what was wrong; nothing a caller sends produces a 500.
Server-side conditions are 503 (the index, the object store or the identity provider cannot
serve now; corrupt evidence, which is logged at ERROR for operators). Anything unexpected is a
500 whose body says nothing about the code; the stack trace goes to the log only.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.access_log import AccessNotRecorded
from api.auth import AuthUnavailable, Forbidden, MissingToken, Unauthenticated
from api.models import ErrorOut
from replay import ArchiveUnavailable, EvidenceCorrupt, InvalidQuery, SessionNotFound

logger = logging.getLogger(__name__)

REALM = "blackbox"
RETRY_AFTER_SECONDS = "5"

# For the OpenAPI document: what each route may answer besides its success model.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "The query cannot be answered (bad cursor, range or filter)."},
    401: {"model": ErrorOut, "description": "Missing, invalid or expired bearer token."},
    403: {"model": ErrorOut, "description": "The token's holder has no auditor or admin role."},
    422: {"model": ErrorOut, "description": "A parameter is malformed."},
    503: {
        "model": ErrorOut,
        "description": "Index, object store or identity provider unavailable, archived evidence "
        "unreadable, or the access log cannot record a read of session content.",
    },
}
SESSION_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    404: {"model": ErrorOut, "description": "No such session."},
}


def _error(
    status: int,
    error: str,
    message: str,
    *,
    headers: dict[str, str] | None = None,
    details: list[dict[str, Any]] | None = None,
) -> JSONResponse:
    body = ErrorOut(error=error, message=message, details=details)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


def _bearer_challenge(error: str | None = None, description: str | None = None) -> str:
    # RFC 6750 §3: a request without a token gets the bare challenge; a bad token says why.
    challenge = f'Bearer realm="{REALM}"'
    if error:
        challenge += f', error="{error}"'
    if description:
        safe = description.replace("\\", "").replace('"', "'")
        challenge += f', error_description="{safe}"'
    return challenge


async def _session_not_found(request: Request, exc: Exception) -> JSONResponse:
    return _error(404, "session_not_found", str(exc))


async def _invalid_query(request: Request, exc: Exception) -> JSONResponse:
    return _error(400, "invalid_query", str(exc))


async def _archive_unavailable(request: Request, exc: Exception) -> JSONResponse:
    logger.warning("%s %s: %s", request.method, request.url.path, exc)
    return _error(
        503,
        "archive_unavailable",
        "the index or the object store is unavailable; retry later",
        headers={"Retry-After": RETRY_AFTER_SECONDS},
    )


async def _evidence_corrupt(request: Request, exc: Exception) -> JSONResponse:
    # Not the caller's fault and not transient: an incident for operators, so ERROR, and an
    # answer that says plainly that the evidence, not the service, is the problem.
    logger.error("%s %s: archived evidence is corrupt: %s", request.method, request.url.path, exc)
    return _error(
        503,
        "evidence_corrupt",
        f"the archived records cannot be read as the index describes them: {exc}. "
        "Operators have been alerted; run verify for a full verdict.",
    )


async def _access_not_recorded(request: Request, exc: Exception) -> JSONResponse:
    return _error(
        503,
        "access_not_recorded",
        f"{exc}; session content is shown only once its reading is on record. Retry later.",
        headers={"Retry-After": RETRY_AFTER_SECONDS},
    )


async def _unauthenticated(request: Request, exc: Exception) -> JSONResponse:
    missing = isinstance(exc, MissingToken)
    challenge = _bearer_challenge() if missing else _bearer_challenge("invalid_token", str(exc))
    return _error(401, "unauthenticated", str(exc), headers={"WWW-Authenticate": challenge})


async def _forbidden(request: Request, exc: Exception) -> JSONResponse:
    logger.warning("%s %s refused: %s", request.method, request.url.path, exc)
    return _error(
        403, "forbidden", str(exc), headers={"WWW-Authenticate": _bearer_challenge("insufficient_scope")}
    )


async def _auth_unavailable(request: Request, exc: Exception) -> JSONResponse:
    return _error(503, "auth_unavailable", str(exc), headers={"Retry-After": RETRY_AFTER_SECONDS})


async def _validation_failed(request: Request, exc: Exception) -> JSONResponse:
    problems = exc.errors() if isinstance(exc, RequestValidationError) else []
    details = [
        {"location": ".".join(str(part) for part in p.get("loc", ())), "message": str(p.get("msg"))}
        for p in problems
    ]
    summary = "; ".join(f"{d['location']}: {d['message']}" for d in details) or "invalid request"
    return _error(422, "invalid_request", summary, details=details)


async def _http_exception(request: Request, exc: Exception) -> JSONResponse:
    status = exc.status_code if isinstance(exc, StarletteHTTPException) else 500
    detail = exc.detail if isinstance(exc, StarletteHTTPException) else "error"
    headers = getattr(exc, "headers", None)
    codes = {404: "not_found", 405: "method_not_allowed"}
    return _error(status, codes.get(status, "http_error"), str(detail), headers=headers)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("%s %s failed unexpectedly", request.method, request.url.path)
    return _error(500, "internal_error", "internal error; the details are in the server log")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(SessionNotFound, _session_not_found)
    app.add_exception_handler(InvalidQuery, _invalid_query)
    app.add_exception_handler(ArchiveUnavailable, _archive_unavailable)
    app.add_exception_handler(EvidenceCorrupt, _evidence_corrupt)
    app.add_exception_handler(AccessNotRecorded, _access_not_recorded)
    app.add_exception_handler(Unauthenticated, _unauthenticated)
    app.add_exception_handler(Forbidden, _forbidden)
    app.add_exception_handler(AuthUnavailable, _auth_unavailable)
    app.add_exception_handler(RequestValidationError, _validation_failed)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(Exception, _unexpected)
