"""The FastAPI application: routes under /api/v1, each one call into `replay`, and /healthz.

Routes are plain ``def``: the reader does blocking I/O (index queries, object-store reads), so
FastAPI runs them in its thread pool instead of stalling the event loop.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from api.access_log import AccessLog, record_read
from api.auth import TokenVerifier
from api.deps import PrincipalDep, ReaderDep, get_principal
from api.errors import ERROR_RESPONSES, SESSION_RESPONSES, install_error_handlers
from api.ledger_routes import LedgerSessionVerdictOut, ledger_verdict, with_ledger
from api.ledger_routes import router as ledger_router
from api.metrics import MetricsSource, install_metrics
from api.models import EventOut, EventsOut, HealthOut, SessionOut, SessionPageOut, VerdictOut
from api.web import mount_web_ui
from replay import SessionReader
from replay.proofs import ProofService

logger = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
ASCIICAST_MEDIA_TYPE = "application/x-asciicast"
DEFAULT_EVENTS_PAGE = 1000
MAX_EVENTS_PAGE = 10_000
MAX_ID_LENGTH = 256  # the longest session id a gateway may send (streams.validate)

# A health check returns normally (anything but False) when its dependency answers.
HealthCheck = Callable[[], object]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]")

SessionId = Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH, description="The session's id.")]

router = APIRouter(prefix=API_PREFIX, dependencies=[Depends(get_principal)], responses=ERROR_RESPONSES)


def _micros(moment: datetime | None) -> int | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # a time without offset is read as UTC, as documented
    return (moment - _EPOCH) // timedelta(microseconds=1)


# Query parameters of the search, spelled once so the route's signature stays readable.
PrincipalQ = Annotated[str | None, Query(max_length=256, description="Exact principal name.")]
IdentityKindQ = Annotated[str | None, Query(max_length=32, examples=["AI_AGENT"])]
TargetQ = Annotated[str | None, Query(max_length=256, description="Exact target (connection) name.")]
TargetKindQ = Annotated[str | None, Query(max_length=32, examples=["POSTGRES"])]
SinceQ = Annotated[datetime | None, Query(description="Started at or after (ISO 8601; UTC if no offset).")]
UntilQ = Annotated[datetime | None, Query(description="Started before (ISO 8601; UTC if no offset).")]
PageLimitQ = Annotated[int, Query(ge=1, le=500)]
CursorQ = Annotated[str | None, Query(max_length=2048, description="next_cursor of the previous page.")]
KindsQ = Annotated[list[str] | None, Query(description="Record kinds to keep (repeatable): EVENT, GAP, ...")]
AfterIndexQ = Annotated[int | None, Query(ge=0, description="Only records after this chain index.")]
EventsLimitQ = Annotated[int, Query(ge=1, le=MAX_EVENTS_PAGE)]


@router.get("/sessions", response_model=SessionPageOut, summary="Search sessions, newest first")
def search_sessions(
    *,
    reader: ReaderDep,
    caller: PrincipalDep,
    principal: PrincipalQ = None,
    identity_kind: IdentityKindQ = None,
    target: TargetQ = None,
    target_kind: TargetKindQ = None,
    since: SinceQ = None,
    until: UntilQ = None,
    limit: PageLimitQ = 50,
    cursor: CursorQ = None,
) -> SessionPageOut:
    page = reader.search(
        principal=principal,
        identity_kind=identity_kind,
        target=target,
        target_kind=target_kind,
        since_us=_micros(since),
        until_us=_micros(until),
        limit=limit,
        cursor=cursor,
    )
    return SessionPageOut(items=[SessionOut.of(item) for item in page.items], next_cursor=page.next_cursor)


@router.get("/sessions/{session_id}", response_model=SessionOut, responses=SESSION_RESPONSES)
def get_session(session_id: SessionId, reader: ReaderDep, caller: PrincipalDep) -> SessionOut:
    return SessionOut.of(reader.get_session(session_id))


@router.get("/sessions/{session_id}/events", response_model=EventsOut, responses=SESSION_RESPONSES)
def session_events(
    *,
    session_id: SessionId,
    request: Request,
    reader: ReaderDep,
    caller: PrincipalDep,
    kind: KindsQ = None,
    after_index: AfterIndexQ = None,
    limit: EventsLimitQ = DEFAULT_EVENTS_PAGE,
) -> Response:
    logger.info("%s reads the records of session %s", caller.subject, session_id)
    events = reader.events(session_id, kinds=kind, after_index=after_index, limit=limit)
    body = (
        EventsOut(
            session_id=session_id,
            events=[EventOut.model_validate(event) for event in events],
            next_after_index=events[-1]["index"] if len(events) == limit else None,
        )
        .model_dump_json()
        .encode()
    )
    record_read(request, caller, session_id, len(body))
    return Response(body, media_type="application/json")


@router.get(
    "/sessions/{session_id}/asciicast",
    response_class=Response,
    responses={**SESSION_RESPONSES, 200: {"content": {ASCIICAST_MEDIA_TYPE: {}}, "description": "v2 file"}},
)
def session_asciicast(
    session_id: SessionId,
    request: Request,
    reader: ReaderDep,
    caller: PrincipalDep,
    include_input: Annotated[bool, Query(description="Also replay keystrokes as input events.")] = False,
) -> Response:
    logger.info("%s replays session %s", caller.subject, session_id)
    cast = reader.asciicast(session_id, include_input=include_input).encode()
    record_read(request, caller, session_id, len(cast))
    filename = _UNSAFE_FILENAME.sub("_", session_id) + ".cast"
    return Response(
        cast,
        media_type=ASCIICAST_MEDIA_TYPE,
        headers={"Content-Disposition": f'inline; filename="{filename}"'},
    )


@router.get(
    "/sessions/{session_id}/verify", response_model=LedgerSessionVerdictOut, responses=SESSION_RESPONSES
)
def verify_session(
    session_id: SessionId, request: Request, reader: ReaderDep, caller: PrincipalDep
) -> LedgerSessionVerdictOut:
    """The session's chain checks and, with the ledger on, each record's inclusion proof under a
    signed checkpoint; ``valid`` only when both hold."""
    logger.info("%s verifies session %s", caller.subject, session_id)
    verdict, records = reader.verify_and_read(session_id)
    return with_ledger(VerdictOut.of(verdict), ledger_verdict(request, session_id, records))


def create_app(
    reader: SessionReader,
    auth: TokenVerifier,
    *,
    extra_health_checks: Mapping[str, HealthCheck] | None = None,
    metrics_source: MetricsSource | None = None,
    proofs: ProofService | None = None,
    access_log: AccessLog | None = None,
    title: str = "Blackbox",
) -> FastAPI:
    """The API over one reader; /api/v1 requires a bearer token that ``auth`` accepts. With
    ``proofs`` (the ledger), the checkpoint and proof routes are served too. With
    ``access_log``, every read of session content is put on record before it is answered
    (`api.access_log`); without, reads are not audited."""
    app = FastAPI(
        title=title,
        summary="Audit log and replay of machine-identity sessions",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
    )
    app.state.reader = reader
    app.state.verifier = auth
    checks = dict(extra_health_checks or {})
    install_error_handlers(app)
    app.state.proofs = proofs  # None: the ledger routes answer 404 (see ledger_routes.get_proofs)
    app.state.access_log = access_log
    app.include_router(router)
    app.include_router(ledger_router)

    @app.get("/healthz", response_model=HealthOut, responses={503: {"model": HealthOut}})
    def healthz() -> JSONResponse:
        """Reachability of the index, the object store and any extra dependency; no auth."""
        results = reader.health()
        for name, check in checks.items():
            try:
                answer = check()
            except Exception as exc:  # a failing dependency is a result here, not an error
                results[name] = f"unavailable: {type(exc).__name__}"
            else:
                results[name] = "unavailable" if answer is False else "ok"
        healthy = all(value == "ok" for value in results.values())
        body = HealthOut(status="ok" if healthy else "unavailable", checks=results)
        return JSONResponse(body.model_dump(), status_code=200 if healthy else 503)

    install_metrics(app, _with_access_log(metrics_source, access_log))
    mount_web_ui(app)
    return app


def _with_access_log(source: MetricsSource | None, access_log: AccessLog | None) -> MetricsSource | None:
    if access_log is None:
        return source
    log = access_log  # a name the closure can rely on being non-None

    def gauges() -> dict[str, float]:
        return {**(source() if source is not None else {}), **log.gauges()}

    return gauges
