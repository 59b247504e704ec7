"""Auditors' reads of session content, put on record before the content is handed over.

Invariant 7: every read of session content by an auditor is an audited, chained event. The API
is a gateway like any other for this: each auditor (token subject) gets a session of their own,
identity kind HUMAN, target ``blackbox-api``, and every read of a session's records, its
terminal replay or a record's proof file is an HttpExchange event in it, emitted through the
same SDK on ``blackbox.events``. The seal worker masks, scores and chains those events like any
session's, so the access trail is as tamper-evident, searchable and verifiable as the evidence
it guards (search by principal to see everything someone looked at).

The route waits until the broker has the event (``acks=all``) and only then answers; when the
event cannot be delivered, the read is refused with 503, never served unrecorded. One session
per auditor and API process at a time (``seq`` needs one writer); it ends after a quiet spell
shorter than the worker's idle timeout (which would seal it and refuse later reads) and when the
API stops; one left open by a crash is sealed by the worker's idle timeout.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from fastapi import Request

from api.auth import Principal
from ingest.emitter import Emitter
from ingest.events import SessionBuilder, make_gateway, make_identity, make_target
from schemas.bodies import HTTP_EXCHANGE

logger = logging.getLogger(__name__)

ACCESS_TARGET = "blackbox-api"
ACCESS_PURPOSE = "reads of recorded session content through the Blackbox API"
DEFAULT_TIMEOUT_SECONDS = 10.0
DEFAULT_QUIET_SECONDS = 900.0
# On each read's event: the session that was read (the URL says it too, but not as a field).
READ_SESSION_ATTRIBUTE = "read_session_id"


class AccessNotRecorded(Exception):
    """The read could not be put on record, so its content is not handed over."""


class AccessLog(Protocol):
    def record(self, caller: Principal, read: ContentRead) -> None:
        """Put ``read`` on record; returns once it is durable, raises AccessNotRecorded if not."""

    def gauges(self) -> dict[str, float]:
        """Counters for /metrics."""


@dataclass(frozen=True, slots=True)
class ContentRead:
    """What an auditor is about to be shown: the request and the answer's size."""

    session_id: str
    method: str
    url: str
    response_bytes: int
    client: str | None = None
    user_agent: str | None = None


@dataclass
class _AuditorSession:
    builder: SessionBuilder
    last_read: float  # monotonic


class KafkaAccessLog:
    """`AccessLog` through the emitter SDK, on an event loop of its own.

    Routes run in FastAPI's worker threads, and the API may be served by uvicorn's loop, a
    thread of the dev stack or a test client; a loop owned here works under all of them. One
    read is recorded at a time: the emitter's delivery failures are not per event, so a read is
    served only when nothing else was in flight that could have failed in its place.

    An auditor's session ends after ``quiet_seconds`` without a read, and the next read opens
    another: the worker seals sessions idle for its ``idle_timeout_seconds`` and refuses events
    after the seal, so ``quiet_seconds`` must stay below that (the wiring takes half of it).
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        *,
        api_id: str | None = None,
        version: str = "",
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        quiet_seconds: float = DEFAULT_QUIET_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._emitter = Emitter(
            bootstrap_servers, topic, linger_ms=0, request_timeout_ms=int(timeout_seconds * 1000)
        )
        self._gateway = make_gateway(api_id or f"blackbox-api@{socket.gethostname()}", "blackbox", version)
        self._timeout = timeout_seconds
        self._quiet = quiet_seconds
        self._clock = clock
        self._sessions: dict[str, _AuditorSession] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="access-log", daemon=True)
        self._one_at_a_time: asyncio.Lock | None = None
        self._quiet_timer: asyncio.Task[None] | None = None
        self._started = False
        self._counts_lock = threading.Lock()
        self._recorded = 0
        self._refused = 0

    def start(self) -> KafkaAccessLog:
        """Connect to the broker; raises `AccessNotRecorded` when it cannot."""
        self._thread.start()
        try:
            self._run(self._start())
        except Exception as exc:
            self._stop_loop()
            raise AccessNotRecorded(f"cannot start the access log: {exc}") from exc
        self._started = True
        logger.info("auditor reads are recorded on %s", self._emitter.topic)
        return self

    def record(self, caller: Principal, read: ContentRead) -> None:
        if not self._started:
            with self._counts_lock:
                self._refused += 1
            raise AccessNotRecorded("the access log is not running")
        try:
            self._run(self._record(caller, read))
            with self._counts_lock:
                self._recorded += 1
        except Exception as exc:  # any failure: the content is not served (never a 500 either)
            with self._counts_lock:
                self._refused += 1
            logger.error(
                "the read of session %s by %s was not recorded: %s", read.session_id, caller.subject, exc
            )
            raise AccessNotRecorded(
                f"the access log cannot record this read now ({type(exc).__name__})"
            ) from exc

    def gauges(self) -> dict[str, float]:
        with self._counts_lock:
            return {
                "blackbox_access_log_reads_recorded_total": self._recorded,
                "blackbox_access_log_reads_refused_total": self._refused,
                "blackbox_access_log_sessions_open": len(self._sessions),
            }

    def close(self) -> None:
        """End every auditor's session and stop."""
        if not self._started:
            return
        self._started = False
        try:
            self._run(self._end_all())
        except Exception as exc:  # stopping anyway: the worker's idle timeout seals what is left
            logger.warning("access sessions not ended cleanly: %s", exc)
        finally:
            self._stop_loop()

    async def _start(self) -> None:
        self._one_at_a_time = asyncio.Lock()
        await self._emitter.start()
        self._quiet_timer = asyncio.create_task(self._end_quiet_sessions(), name="access-log-quiet")

    async def _record(self, caller: Principal, read: ContentRead) -> None:
        assert self._one_at_a_time is not None
        async with self._one_at_a_time:
            try:
                await self._record_alone(caller, read)
            except BaseException:
                # Whether or not the broker got it, the auditor's next read starts a new session,
                # rather than one whose chain shows a gap where this read was refused.
                self._sessions.pop(caller.subject, None)
                raise

    async def _record_alone(self, caller: Principal, read: ContentRead) -> None:
        now = self._clock()
        session = self._sessions.get(caller.subject)
        if session is not None and now - session.last_read >= self._quiet:
            await self._end(caller.subject, "quiet")  # its timer has not come round yet
            session = None
        if session is None:
            builder = SessionBuilder(
                f"access-{uuid.uuid4()}",
                make_identity(
                    caller.subject,
                    "HUMAN",
                    issuer=_claim(caller, "iss"),
                    groups=sorted(caller.roles),
                ),
                make_target(ACCESS_TARGET, "HTTP"),
                self._gateway,
            )
            await self._emitter.emit(
                builder.start(ACCESS_PURPOSE, client=read.user_agent, source_address=read.client)
            )
            session = self._sessions[caller.subject] = _AuditorSession(builder, now)
        exchange = {
            "method": read.method,
            "url": read.url,
            "status_code": 200,
            "request_headers": {},
            "request_body": None,
            "response_headers": {"Content-Length": str(read.response_bytes)},
            "response_body": None,
            "duration_us": None,
        }
        await self._emitter.emit(
            session.builder.event(
                HTTP_EXCHANGE, exchange, attributes={READ_SESSION_ATTRIBUTE: read.session_id}
            )
        )
        await self._emitter.flush()
        session.last_read = now

    async def _end(self, subject: str, reason: str) -> None:
        session = self._sessions.pop(subject)
        await self._emitter.emit(session.builder.end(reason))
        await self._emitter.flush()

    async def _end_quiet_sessions(self) -> None:
        assert self._one_at_a_time is not None
        while True:
            await asyncio.sleep(min(self._quiet / 4, 30.0))
            async with self._one_at_a_time:
                now = self._clock()
                for subject in [s for s, v in self._sessions.items() if now - v.last_read >= self._quiet]:
                    try:
                        await self._end(subject, "quiet")
                    except Exception as exc:  # the worker's idle timeout seals it instead
                        logger.warning("access session of %s not ended: %s", subject, exc)

    async def _end_all(self) -> None:
        if self._quiet_timer is not None:
            self._quiet_timer.cancel()
        assert self._one_at_a_time is not None
        async with self._one_at_a_time:
            for session in self._sessions.values():
                await self._emitter.emit(session.builder.end("api stopped"))
            self._sessions.clear()
            await self._emitter.close()

    def _run(self, work: Coroutine[Any, Any, object]) -> None:
        running = asyncio.run_coroutine_threadsafe(work, self._loop)
        try:
            running.result(self._timeout)
        except TimeoutError:
            running.cancel()
            raise

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()


def _claim(caller: Principal, name: str) -> str | None:
    value = caller.claims.get(name)
    return value if isinstance(value, str) else None


def record_read(request: Request, caller: Principal, session_id: str, response_bytes: int) -> None:
    """Put an auditor's read of ``session_id`` on record before its content is returned (a no-op
    when the app has no access log: reads are then not audited, as configured)."""
    access_log: AccessLog | None = request.app.state.access_log
    if access_log is None:
        return
    url = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    read = ContentRead(
        session_id,
        request.method,
        url,
        response_bytes,
        client=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent"),
    )
    access_log.record(caller, read)
