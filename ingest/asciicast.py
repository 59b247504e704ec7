"""Import asciinema recordings (asciicast v1, v2 and v3) as Blackbox sessions.

Parsing is a pure function from the file's bytes to a `Recording`; `recording_events` turns a
recording into session events; `import_asciicast` sends them through the emitter. Malformed
input raises one error type, `AsciicastError`, naming the line and the reason.

Times: v2 event times are offsets from the start, v1 and v3 times are intervals since the
previous event. Both become microseconds since the epoch: the header's timestamp plus the
offset, summed in integer microseconds so that long v3 recordings do not drift.
"""

from __future__ import annotations

import json
import logging
import math
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest.emitter import DEFAULT_TOPIC, emit_events
from ingest.events import (
    Gateway,
    Identity,
    IdentityKind,
    SessionBuilder,
    SessionEvent,
    Target,
    TargetKind,
    make_gateway,
    make_identity,
    make_target,
    new_event_id,
    now_us,
)

logger = logging.getLogger(__name__)

_RESIZE = re.compile(r"(\d+)x(\d+)")
_EXIT = re.compile(r"-?\d+")
_KNOWN_CODES = frozenset({"o", "i", "r", "m", "x"})


class AsciicastError(ValueError):
    """A recording that is not valid asciicast; says where (line, or v1 frame) and why."""

    def __init__(self, reason: str, line: int | None = None, source: str | None = None) -> None:
        self.reason = reason
        self.line = line
        self.source = source
        where = source or "asciicast"
        if line is not None:
            where = f"{where}:{line}"
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True)
class CastHeader:
    version: int
    cols: int
    rows: int
    timestamp: float | None = None  # seconds since the epoch
    term: str | None = None
    command: str | None = None
    title: str | None = None
    duration: float | None = None
    env: Mapping[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class CastEvent:
    offset_us: int  # microseconds since the start of the recording
    code: str  # o, i, r, m, x
    data: str
    line: int | None  # line in the file (None for v1, whose frames share lines)


@dataclass(frozen=True)
class Recording:
    header: CastHeader
    events: tuple[CastEvent, ...]

    @property
    def output(self) -> str:
        """Everything written to the terminal, in order."""
        return "".join(e.data for e in self.events if e.code == "o")

    @property
    def exit_code(self) -> int | None:
        codes = [int(e.data) for e in self.events if e.code == "x"]
        return codes[-1] if codes else None

    @property
    def duration_us(self) -> int:
        last = self.events[-1].offset_us if self.events else 0
        declared = _to_us(self.header.duration) if self.header.duration is not None else 0
        return max(last, declared)


def read_asciicast(path: str | Path) -> Recording:
    path = Path(path)
    return parse_asciicast(path.read_bytes(), source=str(path))


def parse_asciicast(data: bytes | str, *, source: str | None = None) -> Recording:
    """Parse a whole recording; raises `AsciicastError` on anything malformed."""
    text = _decode(data, source)
    lines = text.split("\n")
    first = lines[0].strip()
    if not first:
        raise AsciicastError("empty file, or the header is not on the first line", 1, source)
    try:
        header = json.loads(first)
    except json.JSONDecodeError:
        header = None  # a v1 recording is one (usually pretty-printed) JSON document
    if isinstance(header, dict) and header.get("version") in (2, 3):
        return _parse_ndjson(header, lines, source)
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AsciicastError(f"the header is not valid JSON: {exc.msg}", exc.lineno, source) from None
    if not isinstance(document, dict):
        raise AsciicastError("the header must be a JSON object", 1, source)
    if document.get("version") != 1:
        raise AsciicastError(
            f"unsupported asciicast version {document.get('version')!r} (supported: 1, 2, 3)", 1, source
        )
    return _parse_v1(document, source)


def _decode(data: bytes | str, source: str | None) -> str:
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise AsciicastError(f"not UTF-8 (byte {exc.start})", line, source) from None


def _parse_ndjson(raw: dict[str, Any], lines: list[str], source: str | None) -> Recording:
    version = int(raw["version"])
    header = _header_v3(raw, source) if version == 3 else _header_v2(raw, source)
    events: list[CastEvent] = []
    offset_us = 0
    for number, line in enumerate(lines[1:], start=2):
        stripped = line.strip()
        if not stripped:
            continue  # the trailing newline, or blank lines a hand edit left
        if version == 3 and stripped.startswith("#"):
            continue  # v3 comment lines
        try:
            item = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise AsciicastError(f"event is not valid JSON: {exc.msg}", number, source) from None
        if not (isinstance(item, list) and len(item) == 3):
            raise AsciicastError("an event must be a 3-element array [time, code, data]", number, source)
        time_s, code, data = item
        time_us = _time_us(time_s, number, source)
        if version == 3:
            offset_us += time_us  # v3: interval since the previous event
        else:
            if time_us < offset_us:
                previous = f"{offset_us / 1e6:.6f}s"
                raise AsciicastError(
                    f"time {time_s} goes backwards (previous event at {previous})", number, source
                )
            offset_us = time_us
        if not isinstance(code, str) or not isinstance(data, str):
            raise AsciicastError("event code and data must be strings", number, source)
        if code not in _KNOWN_CODES:
            logger.warning("%s:%d: skipping unknown event code %r", source or "asciicast", number, code)
            continue
        _check_data(code, data, number, source)
        events.append(CastEvent(offset_us, code, data, number))
    return Recording(header, tuple(events))


def _parse_v1(raw: dict[str, Any], source: str | None) -> Recording:
    header = CastHeader(
        version=1,
        cols=_dimension(raw, "width", 1, source),
        rows=_dimension(raw, "height", 1, source),
        timestamp=None,
        term=_env_term(raw.get("env")),
        command=_opt_str(raw.get("command")),
        title=_opt_str(raw.get("title")),
        duration=_opt_number(raw.get("duration")),
        env=_env(raw.get("env"), 1, source),
    )
    frames = raw.get("stdout")
    if not isinstance(frames, list):
        raise AsciicastError("v1 recording has no stdout array", 1, source)
    events: list[CastEvent] = []
    offset_us = 0
    for index, frame in enumerate(frames):
        where = f"stdout[{index}]"
        if not (isinstance(frame, list) and len(frame) == 2 and isinstance(frame[1], str)):
            raise AsciicastError(f"{where}: a frame must be [delay, data]", None, source)
        try:
            offset_us += _time_us(frame[0], None, source)
        except AsciicastError as exc:
            raise AsciicastError(f"{where}: {exc.reason}", None, source) from None
        events.append(CastEvent(offset_us, "o", frame[1], None))
    return Recording(header, tuple(events))


def _header_v2(raw: dict[str, Any], source: str | None) -> CastHeader:
    env = _env(raw.get("env"), 1, source)
    return CastHeader(
        version=2,
        cols=_dimension(raw, "width", 1, source),
        rows=_dimension(raw, "height", 1, source),
        timestamp=_timestamp(raw, source),
        term=env.get("TERM"),
        command=_opt_str(raw.get("command")),
        title=_opt_str(raw.get("title")),
        duration=_opt_number(raw.get("duration")),
        env=env,
    )


def _header_v3(raw: dict[str, Any], source: str | None) -> CastHeader:
    term = raw.get("term")
    if not isinstance(term, dict):
        raise AsciicastError('v3 header needs a "term" object with cols and rows', 1, source)
    env = _env(raw.get("env"), 1, source)
    return CastHeader(
        version=3,
        cols=_dimension(term, "cols", 1, source),
        rows=_dimension(term, "rows", 1, source),
        timestamp=_timestamp(raw, source),
        term=_opt_str(term.get("type")) or env.get("TERM"),
        command=_opt_str(raw.get("command")),
        title=_opt_str(raw.get("title")),
        duration=_opt_number(raw.get("duration")),
        env=env,
    )


def _dimension(raw: Mapping[str, Any], key: str, line: int, source: str | None) -> int:
    value = raw.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise AsciicastError(f"header {key} must be a positive integer, not {value!r}", line, source)
    return value


def _timestamp(raw: Mapping[str, Any], source: str | None) -> float | None:
    value = raw.get("timestamp")
    if value is None:
        return None
    if not _is_number(value) or value < 0:
        raise AsciicastError(f"header timestamp must be a Unix time in seconds, not {value!r}", 1, source)
    return float(value)


def _env(value: Any, line: int, source: str | None) -> dict[str, str | None]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(v is None or isinstance(v, str) for v in value.values()):
        raise AsciicastError("header env must map names to strings", line, source)
    return {str(k): v for k, v in value.items()}


def _env_term(value: Any) -> str | None:
    return _opt_str(value.get("TERM")) if isinstance(value, dict) else None


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _opt_number(value: Any) -> float | None:
    return float(value) if _is_number(value) else None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _time_us(value: Any, line: int | None, source: str | None) -> int:
    if not _is_number(value) or value < 0:
        raise AsciicastError(f"event time must be a non-negative number, not {value!r}", line, source)
    return _to_us(value)


def _to_us(seconds: float) -> int:
    return round(seconds * 1_000_000)


def _check_data(code: str, data: str, line: int, source: str | None) -> None:
    if code == "r":
        _parse_resize(data, line, source)
    elif code == "x" and _EXIT.fullmatch(data) is None:
        raise AsciicastError(f"exit event data must be an exit status, not {data!r}", line, source)


def _parse_resize(data: str, line: int | None, source: str | None) -> tuple[int, int]:
    match = _RESIZE.fullmatch(data)
    if match is None or int(match[1]) == 0 or int(match[2]) == 0:
        raise AsciicastError(f"resize event data must be COLSxROWS, not {data!r}", line, source)
    return int(match[1]), int(match[2])


def _utf8(text: str) -> bytes:
    # surrogatepass: a lone surrogate (from a recorder that split a character) keeps its bytes
    # instead of failing the import; everything valid encodes exactly as recorded.
    return text.encode("utf-8", "surrogatepass")


def recording_events(
    recording: Recording,
    builder: SessionBuilder,
    *,
    clock: Callable[[], int] = now_us,
) -> list[SessionEvent]:
    """The session events of one recording: start, terminal I/O and resizes, end.

    Markers ("m") have no body type and are skipped. Without a header timestamp the session
    is placed at ``clock()``.
    """
    header = recording.header
    start_us = _to_us(header.timestamp) if header.timestamp is not None else clock()
    attributes = {"source": f"asciicast-v{header.version}"}
    if header.command:
        attributes["command"] = header.command
    if header.title:
        attributes["title"] = header.title
    events = [
        builder.start(
            purpose=header.title,
            client=f"asciinema (asciicast v{header.version})",
            cols=header.cols,
            rows=header.rows,
            term=header.term,
            at_us=start_us,
            attributes=attributes,
        )
    ]
    exit_code: int | None = None
    for item in recording.events:
        at_us = start_us + item.offset_us
        if item.code == "o":
            events.append(builder.output(_utf8(item.data), at_us=at_us))
        elif item.code == "i":
            events.append(builder.input(_utf8(item.data), at_us=at_us))
        elif item.code == "r":
            cols, rows = _parse_resize(item.data, item.line, None)
            events.append(builder.resize(cols, rows, at_us=at_us))
        elif item.code == "x":
            exit_code = int(item.data)
    end_reason = "exit" if exit_code is not None else "closed"
    events.append(builder.end(end_reason, exit_code, at_us=start_us + recording.duration_us))
    return events


def session_events(
    recording: Recording,
    *,
    identity: Identity,
    target: Target,
    gateway: Gateway | None = None,
    session_id: str | None = None,
    clock: Callable[[], int] = now_us,
    event_ids: Callable[[], str] = new_event_id,
) -> list[SessionEvent]:
    """`recording_events` with a fresh builder; ``session_id`` defaults to a new UUID."""
    builder = SessionBuilder(
        session_id if session_id is not None else str(uuid.uuid4()),
        identity,
        target,
        gateway or make_gateway("asciicast-import", "blackbox-import"),
        clock,
        event_ids=event_ids,
    )
    return recording_events(recording, builder, clock=clock)


def import_asciicast(
    path: str | Path,
    *,
    identity: str,
    identity_kind: IdentityKind | str = "UNKNOWN",
    target: str,
    target_kind: TargetKind | str = "OTHER",
    bootstrap: str,
    session_id: str | None = None,
    topic: str = DEFAULT_TOPIC,
    **emitter_options: Any,
) -> str:
    """Parse a recording and emit it as one session; returns the session id.

    Synchronous (runs its own event loop), for the CLI; parse errors are raised before
    anything is sent.
    """
    recording = read_asciicast(path)
    events = session_events(
        recording,
        identity=make_identity(identity, identity_kind),
        target=make_target(target, target_kind),
        session_id=session_id,
    )
    stats = emit_events(bootstrap, events, topic=topic, **emitter_options)
    logger.info(
        "imported %s as session %s: %d events in %d messages",
        path,
        events[0]["session_id"],
        stats.events_delivered,
        stats.messages_sent,
    )
    return events[0]["session_id"]
