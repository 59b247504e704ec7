"""`blackbox score`: score session events read as JSON lines, one result line per event.

Input is the Avro JSON form of dev.blackbox.v1.SessionEvent, one event per line (unions as
``{"type": value}``, bytes as ISO-8859-1 strings). State carries across the stream as in the
worker, so behaviour signals see every earlier event of the same identity. A line that is not
such an event gets a message on stderr naming its line number and is skipped; the exit code
is then 1. This is the one module of the package that uses `schemas`.
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol, TextIO

import fastavro
import fastavro.validation

from risk.policy import Policy
from risk.scorer import StatefulScorer
from schemas import EVENT_SCHEMA, default_registry

# Error details quote the decoder's message; a long one is cut so one bad line cannot flood stderr.
MAX_DETAIL = 200
DEFAULT_BATCH = 256
# Unions of records come back as (record name, value), as everywhere else in Blackbox.
_READ_OPTIONS = {"return_record_name": True, "return_record_name_override": True}


class Masker(Protocol):
    def mask(self, event: dict[str, Any]) -> tuple[dict[str, Any], Sequence[Mapping[str, Any]]]: ...


class InvalidLine(ValueError):
    """A line that is not a SessionEvent in Avro JSON."""


def main(
    stdin: TextIO,
    stdout: TextIO,
    *,
    stderr: TextIO | None = None,
    policy: Policy | None = None,
    masker: Masker | None = None,
    batch: int | None = None,
) -> int:
    """Score every event on ``stdin``; 0 when every line was an event, else 1.

    With a ``masker`` (the stream's masking step), events are masked first and the masking
    findings feed the bulk-sensitive-data signal, exactly as in the worker. Lines are decoded
    ``batch`` at a time (fastavro builds its JSON grammar once per reader, which costs more than
    decoding a line); the default is 1 on a terminal, so each event answers at once, and
    DEFAULT_BATCH otherwise.
    """
    errors = stderr if stderr is not None else sys.stderr
    size = batch if batch is not None else (1 if stdin.isatty() else DEFAULT_BATCH)
    schema = default_registry().schema(EVENT_SCHEMA)
    scorer = StatefulScorer(policy)
    bad = 0
    for number, decoded in decode_lines(stdin, schema, max(1, size)):
        if isinstance(decoded, InvalidLine):
            errors.write(f"line {number}: skipped, not a SessionEvent in Avro JSON: {decoded}\n")
            bad += 1
            continue
        event = decoded
        findings: list[dict[str, Any]] = []
        try:
            if masker is not None:
                event, masked_findings = masker.mask(event)
                findings = [dict(finding) for finding in masked_findings]
            risk = scorer.score(event, findings)
        # Content no rule foresaw costs this line, not the rest of the stream (nothing is stored
        # here). The error's message may quote the event: not shown.
        except Exception as exc:
            errors.write(f"line {number}: skipped, scoring it failed ({type(exc).__name__})\n")
            bad += 1
            continue
        result = {
            "event_id": event["event_id"],
            "session_id": event["session_id"],
            "seq": event["seq"],
            "score": risk["score"] if risk is not None else None,
            "reasons": risk["reasons"] if risk is not None else [],
        }
        stdout.write(json.dumps(result, ensure_ascii=False) + "\n")
        if size == 1:
            stdout.flush()
    stdout.flush()
    return 1 if bad else 0


def decode_lines(
    lines: Iterable[str], schema: Any, batch: int = 1
) -> Iterator[tuple[int, dict[str, Any] | InvalidLine]]:
    """(line number, event or the reason it is not one) for each non-blank line, in order."""
    pending: list[tuple[int, str]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            json.loads(line)  # fastavro's own message for broken JSON does not say what is wrong
        except ValueError as exc:
            yield from _decode_batch(pending, schema)
            pending = []
            yield number, InvalidLine(f"invalid JSON: {exc}")
            continue
        pending.append((number, line if line.endswith("\n") else line + "\n"))
        if len(pending) >= batch:
            yield from _decode_batch(pending, schema)
            pending = []
    yield from _decode_batch(pending, schema)


def _decode_batch(
    pending: list[tuple[int, str]], schema: Any
) -> Iterator[tuple[int, dict[str, Any] | InvalidLine]]:
    start = 0
    while start < len(pending):
        index = start
        try:
            reader = fastavro.json_reader(io.StringIO("".join(line for _, line in pending[start:])), schema)
            # json_reader has no parameter for these; its reader reads them lazily from .options.
            reader.options.update(_READ_OPTIONS)
            for event in reader:
                yield pending[index][0], _checked(event, schema)
                index += 1
            return
        # fastavro reports a value of the wrong shape as KeyError, TypeError, ValueError,
        # AttributeError or worse, depending on where it trips; any of them means "not an event".
        except Exception as exc:
            detail = f"{type(exc).__name__}: {exc}"
            yield pending[index][0], InvalidLine(detail[:MAX_DETAIL])
            start = index + 1


def _checked(event: Any, schema: Any) -> dict[str, Any] | InvalidLine:
    """The event, if every value has its schema's type: fastavro's JSON reader does not check
    primitives (a null or a number where a string belongs passes)."""
    if not isinstance(event, dict):
        return InvalidLine("not a record")
    try:
        fastavro.validation.validate(event, schema, raise_errors=True)
    except fastavro.validation.ValidationError as exc:
        # Named by field and expected type; the value itself is not repeated.
        wrong = ", ".join(f"{error.field} is not a valid {error.schema}" for error in exc.errors[:3])
        return InvalidLine(wrong[:MAX_DETAIL])
    return event


def run() -> int:
    """Entry point for a console script: stdin to stdout."""
    return main(sys.stdin, sys.stdout)
