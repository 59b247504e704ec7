"""Render a session's terminal activity as an asciicast v2 file (what asciinema-player plays).

asciicast v2 is newline-delimited JSON: a header object, then ``[time, code, data]`` events,
time in seconds since the start of the recording. Gateways record raw terminal bytes, and a
multi-byte UTF-8 character may be split across two output events; decoding each event on its
own would turn both halves into U+FFFD. One incremental decoder per stream carries the
incomplete tail into the next event, so for valid UTF-8 output the concatenated "o" texts
equal the recorded output exactly. Invalid bytes become U+FFFD (asciicast holds text only).
"""

from __future__ import annotations

import base64
import codecs
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from schemas.bodies import (
    IDLE_TIMEOUT,
    INPUT_TAIL_ATTRIBUTE,
    OUTPUT_FLUSH,
    OUTPUT_TAIL_ATTRIBUTE,
    SESSION_END,
    SESSION_START,
    TERMINAL_INPUT,
    TERMINAL_OUTPUT,
    TERMINAL_RESIZE,
)

logger = logging.getLogger(__name__)

# Events that may carry the terminal output and keystrokes the masker held back (an unfinished
# token), masked, in the attributes named in schemas.bodies.
_CARRY_HELD = frozenset({SESSION_END, IDLE_TIMEOUT, OUTPUT_FLUSH})

DEFAULT_WIDTH = 80
DEFAULT_HEIGHT = 24
# Record kinds whose event is part of what happened. A FORK carries a conflicting second
# version of an already chained seq: evidence of tampering upstream, not terminal output.
_REPLAYED_KINDS = frozenset({"EVENT", "LATE"})
_HELD_TAILS = ((OUTPUT_TAIL_ATTRIBUTE, TERMINAL_OUTPUT), (INPUT_TAIL_ATTRIBUTE, TERMINAL_INPUT))


@dataclass(frozen=True)
class _Event:
    seq: int
    time_us: int
    body_type: str
    body: Mapping[str, Any]


def render_asciicast(
    records_or_events: Iterable[Any],
    *,
    include_input: bool = False,
    title: str | None = None,
) -> str:
    """An asciicast v2 document from a session's records or events.

    Accepts, mixed freely: archived records (objects with a ``value``), SealedRecord dicts, or
    SessionEvent dicts. Events are replayed in gateway ``seq`` order, so a LATE record fills its
    gap where it happened rather than where it arrived. Input ("i") events are left out unless
    ``include_input``: keystrokes may hold what masking caught only in the echoed output.
    """
    events = sorted(_events(records_or_events), key=lambda event: event.seq)
    width, height, term = _terminal(events)
    start_us = events[0].time_us if events else 0
    header: dict[str, Any] = {"version": 2, "width": width, "height": height}
    if events:
        header["timestamp"] = start_us // 1_000_000
    header["env"] = {"TERM": term} if term else {}
    if title:
        header["title"] = title
    lines = [json.dumps(header, ensure_ascii=True)]

    output = codecs.getincrementaldecoder("utf-8")(errors="replace")
    keystrokes = codecs.getincrementaldecoder("utf-8")(errors="replace")
    elapsed_us = 0
    for event in events:
        # Clocks of a gateway can step backwards; players need non-decreasing times.
        elapsed_us = max(elapsed_us, event.time_us - start_us)
        if event.body_type == TERMINAL_OUTPUT:
            text = output.decode(bytes(event.body["data"]))
            if text:
                lines.append(_line(elapsed_us, "o", text))
        elif event.body_type == TERMINAL_INPUT and include_input:
            text = keystrokes.decode(bytes(event.body["data"]))
            if text:
                lines.append(_line(elapsed_us, "i", text))
        elif event.body_type == TERMINAL_RESIZE:
            lines.append(_line(elapsed_us, "r", f"{event.body['cols']}x{event.body['rows']}"))
    # A character still incomplete at the end of the recording is flushed as U+FFFD.
    tail = output.decode(b"", final=True)
    if tail:
        lines.append(_line(elapsed_us, "o", tail))
    if include_input:
        tail = keystrokes.decode(b"", final=True)
        if tail:
            lines.append(_line(elapsed_us, "i", tail))
    return "\n".join(lines) + "\n"


def _events(items: Iterable[Any]) -> Iterable[_Event]:
    for item in items:
        value = getattr(item, "value", item)
        if not isinstance(value, Mapping):
            raise TypeError(f"expected an archived record, a record or an event dict, not {type(item)!r}")
        if "kind" in value and "prev_hash" in value:  # a SealedRecord
            event = value.get("event")
            if value["kind"] not in _REPLAYED_KINDS or event is None:
                continue
        else:
            event = value
        body_type, body = event["body"]
        if body_type in _CARRY_HELD:
            # Bytes the masker held back (they could have been the start of a secret) until this
            # event: they happened just before it.
            attributes = event.get("attributes") or {}
            for attribute, stream in _HELD_TAILS:
                tail = attributes.get(attribute)
                if tail:
                    data = base64.b64decode(tail)
                    yield _Event(int(event["seq"]), int(event["event_time"]), stream, {"data": data})
        yield _Event(int(event["seq"]), int(event["event_time"]), body_type, body)


def _terminal(events: list[_Event]) -> tuple[int, int, str | None]:
    """Size and TERM from SessionStart, else the size from the first resize, else 80x24."""
    for event in events:
        if event.body_type == SESSION_START:
            size = event.body.get("terminal")
            term = event.body.get("term")
            if size:
                return int(size["cols"]), int(size["rows"]), term
            width, height, _ = _first_resize(events)
            return width, height, term
    return _first_resize(events)


def _first_resize(events: list[_Event]) -> tuple[int, int, None]:
    for event in events:
        if event.body_type == TERMINAL_RESIZE:
            return int(event.body["cols"]), int(event.body["rows"]), None
    return DEFAULT_WIDTH, DEFAULT_HEIGHT, None


def _line(elapsed_us: int, code: str, data: str) -> str:
    # ensure_ascii: U+2028 and friends count as line breaks to some line splitters (Python's
    # str.splitlines among them); escaped, every event is guaranteed to stay on one line.
    return f"[{format_seconds(elapsed_us)}, {json.dumps(code)}, {json.dumps(data, ensure_ascii=True)}]"


def format_seconds(micros: int) -> str:
    """Seconds with at most 6 decimals and no trailing zeros, exact (integer arithmetic)."""
    seconds, fraction = divmod(micros, 1_000_000)
    if fraction == 0:
        return f"{seconds}.0"
    return f"{seconds}.{fraction:06d}".rstrip("0")
