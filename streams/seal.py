"""The seal step: validate → mask → score → chain, a pure function of (event, session state).

Nothing here knows Kafka, Faust or the stores. Given the same event and the same state it
returns the same records, byte for byte, and the same successor state: that is what makes a
replay after a crash rewrite history identically instead of forking it.

The successor state is itself derived from the records (`advance`), so the state of any
session can be rebuilt from its archived records alone; the worker relies on that to recover.
"""

from __future__ import annotations

import hashlib
import json
import logging
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import PurePath
from typing import Any

from ledger.chain import GENESIS, record_hash
from schemas import EVENT_SCHEMA, SchemaRegistry
from schemas.bodies import IDLE_TIMEOUT, OUTPUT_FLUSH, SESSION_END, WORKER_REQUESTS
from schemas.sealed import SINGLE_DATA_BODIES, BodyWriter, encode_sealed_record
from streams.mask import Masker, NoMasking
from streams.score import AlertThreshold, NoScoring, Scorer
from streams.validate import InvalidEvent, validate_event

logger = logging.getLogger(__name__)


# Seq lookups older than the in-memory window go to the index; see SessionCache.
DigestLookup = Callable[[str, int], bytes | None]


class SessionSealed(InvalidEvent):
    """An event arrived for a session whose chain is already closed by a SEAL record."""


class SealingFailed(InvalidEvent):
    """Masking raised on this event: content no rule foresaw, or a bug it triggers.

    The event is refused like an invalid one (to the DLQ, its original bytes kept, the chain
    showing a gap) instead of stopping the worker, which would take the same message again on
    restart and stop again. The masker is left as before the event (`streams.mask.Masker.mask`).
    The text names the error's type and where it was raised, never its message: that may quote
    the event, and a reason reaches the DLQ's headers and the logs.
    """

    @classmethod
    def from_error(cls, error: Exception) -> SealingFailed:
        return cls(f"masking failed on this event: {error_place(error)}")


def error_place(error: BaseException) -> str:
    """An error's type and where it was raised ("KeyError at masking/engine.py:120"), never its
    message: that may quote an event."""
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return type(error).__name__
    path = PurePath(frames[-1].filename)
    return f"{type(error).__name__} at {path.parent.name}/{path.name}:{frames[-1].lineno}"


@dataclass(slots=True)
class SessionState:
    """Everything the chain needs to seal the next event of one session.

    Mutable for speed (a frozen copy per event cost more than the rest of sealing), but never
    mutated in place by this module's public functions: they return a successor.
    """

    session_id: str
    partition: int
    next_index: int = 0
    head_hash: bytes = GENESIS
    last_seq: int = -1
    sealed: bool = False
    seal_reason: str = ""
    # Seq ranges announced by GAP records and not yet filled by LATE records.
    missing: tuple[tuple[int, int], ...] = ()
    gap_count: int = 0
    fork_count: int = 0
    started_at_us: int = 0
    last_event_at_us: int = 0
    max_risk: int = 0
    total_risk: int = 0
    # Envelope of the session's first event: who, where, through which gateway.
    identity: dict[str, Any] = field(default_factory=dict, compare=False)
    target: dict[str, Any] = field(default_factory=dict, compare=False)
    gateway: dict[str, Any] = field(default_factory=dict, compare=False)

    def copy(self) -> SessionState:
        # copy.copy() of a slots dataclass goes through __reduce_ex__ and cost ~10 µs per event.
        return SessionState(*(getattr(self, name) for name in _STATE_FIELDS))


_STATE_FIELDS = tuple(f.name for f in fields(SessionState))


@dataclass(frozen=True)
class SealedRecord:
    """A chained record: its exact Avro bytes (what the hash covers), hash and value."""

    raw: bytes
    hash: bytes
    value: dict[str, Any]


@dataclass(frozen=True)
class BatchSealResult:
    records: list[SealedRecord]
    state: SessionState
    duplicates: int
    refused: list[tuple[int, InvalidEvent]]  # (position in the batch, why)


@dataclass(frozen=True)
class SealResult:
    records: tuple[SealedRecord, ...]
    state: SessionState
    outcome: str  # "sealed", "duplicate", "request_ignored"


def advance(state: SessionState, value: dict[str, Any], digest_of_record: bytes) -> SessionState:
    """The state after ``value`` (a SealedRecord) has been chained onto ``state``."""
    successor = state.copy()
    _apply(successor, value, digest_of_record)
    return successor


def _apply(state: SessionState, value: dict[str, Any], digest_of_record: bytes) -> None:
    kind = value["kind"]
    event = value.get("event")
    if event is not None:
        if not state.identity:
            state.identity = event["identity"]
            state.target = event["target"]
            state.gateway = event["gateway"]
            state.started_at_us = event["event_time"]
        state.last_event_at_us = max(state.last_event_at_us, event["event_time"])
    risk = value.get("risk")
    if risk is not None:
        state.max_risk = max(state.max_risk, risk["score"])
        state.total_risk += risk["score"]
    if kind == "EVENT":
        state.last_seq = value["source_seq"]
    elif kind == "GAP":
        gap = value["gap"]
        state.missing = (*state.missing, (gap["first_seq"], gap["last_seq"]))
        state.gap_count += 1
        state.last_seq = gap["last_seq"]
    elif kind == "LATE":
        state.missing = _fill(state.missing, value["source_seq"])
    elif kind == "FORK":
        state.fork_count += 1
    elif kind == "SEAL":
        state.sealed = True
        state.seal_reason = value["seal"]["reason"]
    state.next_index += 1
    state.head_hash = digest_of_record


_GATEWAY_KINDS = frozenset({"EVENT", "LATE"})


def is_worker_request(value: Mapping[str, Any]) -> bool:
    """Whether a sealed record carries one of the worker's own requests (IdleTimeout, OutputFlush)."""
    event = value.get("event")
    return event is not None and event["body"][0] in WORKER_REQUESTS


def carries_gateway_event(value: Mapping[str, Any]) -> bool:
    """Whether a sealed record holds a gateway's event under its ``source_seq``: what a
    duplicate is compared with. The worker's requests reuse the seq of the session's last
    event, so they are not."""
    kind = value["kind"]
    return kind in _GATEWAY_KINDS and value["event"]["body"][0] not in WORKER_REQUESTS


def is_alert_record(threshold: AlertThreshold, record: Mapping[str, Any]) -> bool:
    """Whether a sealed record's risk reaches its identity kind's alert threshold (a policy's
    number: no identity state is read)."""
    event = record.get("event")
    return event is not None and threshold.is_alert(event, record.get("risk"))


def _fill(missing: tuple[tuple[int, int], ...], seq: int) -> tuple[tuple[int, int], ...]:
    remaining: list[tuple[int, int]] = []
    for first, last in missing:
        if first <= seq <= last:
            if first < seq:
                remaining.append((first, seq - 1))
            if seq < last:
                remaining.append((seq + 1, last))
        else:
            remaining.append((first, last))
    return tuple(remaining)


def _is_missing(missing: tuple[tuple[int, int], ...], seq: int) -> bool:
    return any(first <= seq <= last for first, last in missing)


class SealStep:
    """validate → mask → score → chain. Configuration in, no I/O, no clock, no randomness."""

    def __init__(
        self, registry: SchemaRegistry, masker: Masker | None = None, scorer: Scorer | None = None
    ) -> None:
        self._registry = registry
        self._bodies = BodyWriter.for_event_schema(registry.schema(EVENT_SCHEMA))
        self._masker = masker or NoMasking()
        self._scorer = scorer or NoScoring()

    def __call__(
        self,
        event: dict[str, Any],
        event_bytes: bytes,
        state: SessionState,
        known_digest: DigestLookup,
        *,
        message_key: bytes | None = None,
    ) -> SealResult:
        """Seal one event. ``event_bytes`` is its canonical Avro encoding (current schema)."""
        current = state.copy()
        records: list[SealedRecord] = []
        outcome = self._seal_into(current, event, event_bytes, known_digest, records, message_key=message_key)
        return SealResult(tuple(records), current if records else state, outcome)

    def prepare(self, events: Iterable[Mapping[str, Any]]) -> None:
        """Events about to be sealed: the scorer loads the identity states they need at once."""
        self._scorer.prepare(events)

    def seal_batch(
        self,
        events: Sequence[tuple[dict[str, Any], bytes]],
        state: SessionState,
        known_digest: DigestLookup,
        *,
        message_key: bytes | None = None,
    ) -> BatchSealResult:
        """Seal several events of one session in order: the same records as sealing them one
        by one, with one state copy for the whole batch instead of one per event."""
        current = state.copy()
        records: list[SealedRecord] = []
        refused: list[tuple[int, InvalidEvent]] = []
        duplicates = 0
        seen: dict[int, bytes] = {}

        def known(session_id: str, seq: int) -> bytes | None:
            return seen.get(seq) or known_digest(session_id, seq)

        for position, (event, event_bytes) in enumerate(events):
            before = len(records)
            try:
                outcome = self._seal_into(
                    current, event, event_bytes, known, records, message_key=message_key
                )
            except InvalidEvent as exc:
                refused.append((position, exc))
                continue
            duplicates += outcome == "duplicate"
            for record in records[before:]:
                if carries_gateway_event(record.value):
                    seen[record.value["source_seq"]] = record.value["event_digest"]
        return BatchSealResult(records, current, duplicates, refused)

    def _seal_into(
        self,
        current: SessionState,
        event: dict[str, Any],
        event_bytes: bytes,
        known_digest: DigestLookup,
        records: list[SealedRecord],
        *,
        message_key: bytes | None,
    ) -> str:
        """Chain one event onto ``current`` (mutated) and append its records; the outcome.

        Everything that can refuse the event happens before the first mutation, so a refused
        event leaves ``current`` as it was.
        """
        validate_event(event, message_key)
        body_type = event["body"][0]
        if body_type in WORKER_REQUESTS:
            # The worker asked to seal an idle session, or to put on record the bytes the masker
            # has held back too long; anything the session did since makes the request stale.
            last_seq = event["body"][1]["last_seq"]
            # A request is at the session's last seq (`streams.app`); one that is not (forged by
            # a gateway) would move the chain's seq on and turn the next honest event into a FORK.
            if (
                current.sealed
                or current.next_index == 0
                or current.last_seq != last_seq
                or event["seq"] != max(last_seq, 0)
            ):
                return "request_ignored"
            masked, findings = self._mask(event, alone=False)
            if masked is not event:
                # What the masker held (an unfinished token) rides on the request, as on a
                # SessionEnd, instead of being dropped with the session or held without end.
                self._chain_event(current, "EVENT", event, event_bytes, masked, findings, None, records)
            if body_type == IDLE_TIMEOUT:
                self._seal(current, "idle_timeout", records)
            return "sealed" if records else "request_ignored"
        seq = event["seq"]
        digest = hashlib.sha256(event_bytes).digest()
        kind = "EVENT"
        if seq <= current.last_seq:
            if _is_missing(current.missing, seq):
                kind = "LATE"
            else:
                if known_digest(current.session_id, seq) == digest:
                    return "duplicate"
                kind = "FORK"
                logger.error(
                    "fork: session %s seq %d arrived again with different content", current.session_id, seq
                )
        if current.sealed:
            raise SessionSealed(f"session is sealed ({current.seal_reason}); event seq {seq} refused")

        # Only an event the chain takes in order continues its session's terminal stream: what
        # goes into the stream then follows from the chain, not from a worker's memory. Masking
        # may still refuse the event, so it comes before the chain's first change.
        masked, findings = self._mask(event, alone=kind != "EVENT")
        risk = self._scorer.score(masked, findings)
        if kind == "EVENT" and seq > current.last_seq + 1:
            gap = {"first_seq": current.last_seq + 1, "last_seq": seq - 1}
            self._chain(current, {"kind": "GAP", "gap": gap}, None, records)
        self._chain_event(current, kind, event, event_bytes, masked, findings, risk, records, digest=digest)
        if kind == "EVENT" and body_type == SESSION_END:
            self._seal(current, event["body"][1]["reason"] or "closed", records)
        return "sealed"

    def _mask(
        self, event: dict[str, Any], *, alone: bool
    ) -> tuple[dict[str, Any], Sequence[Mapping[str, Any]]]:
        try:
            return self._masker.mask(event, alone=alone)
        except MemoryError:
            raise  # not the event's fault: stop, and the message comes again
        except Exception as exc:
            raise SealingFailed.from_error(exc) from exc

    def _chain_event(  # noqa: PLR0917  (the parts of one record, named)
        self,
        current: SessionState,
        kind: str,
        event: dict[str, Any],
        event_bytes: bytes,
        masked: dict[str, Any],
        findings: Sequence[Mapping[str, Any]],
        risk: dict[str, Any] | None,
        records: list[SealedRecord],
        *,
        digest: bytes | None = None,
    ) -> None:
        """Chain a record carrying ``event`` as masked. Unmasked events keep the bytes they
        arrived with; only a changed event is re-encoded."""
        fields = {
            "kind": kind,
            "source_seq": event["seq"],
            "event_digest": digest or hashlib.sha256(event_bytes).digest(),
            "event": masked,
            "findings": findings,
            "risk": risk,
        }
        masked_bytes = event_bytes if masked is event else self._encode_masked(event, event_bytes, masked)
        self._chain(current, fields, masked_bytes, records)

    def _encode_masked(self, event: dict[str, Any], event_bytes: bytes, masked: dict[str, Any]) -> bytes:
        """The masked event's encoding: the original's bytes up to the body, then the masked
        body, when only the body changed (masking changes nothing else); else the generic writer."""
        if (
            self._bodies is not None
            and len(masked) == len(event)
            and all(masked[name] is event[name] for name in event if name != "body")
        ):
            spliced = self._bodies.with_body(event_bytes, event["body"], masked["body"])
            if spliced is not None:
                return spliced
        return self._registry.encode_body(EVENT_SCHEMA, masked)

    def prompt_open(self, session_id: str) -> bool:
        """Whether the masker has a password prompt of this session open (see `output_flush_event`):
        the message that printed it must be delivered again after a crash (see `rewarm`)."""
        return self._masker.prompt_open(session_id)

    def holds_bytes(self, session_id: str) -> bool:
        """Whether the masker holds bytes of this session back for its next event (an open prompt
        aside): the message they came in must be delivered again after a crash (see `rewarm`)."""
        return self._masker.holds_bytes(session_id)

    def rewarm(self, event: dict[str, Any], message_key: bytes | None, *, refused: bool = False) -> bool:
        """Feed an already-sealed event that the chain took in order (or a flush of what was
        held, which the caller knows was put on record) to the masker again, output discarded:
        after a crash the redelivered events rebuild what the masker held, so it is not lost.
        Returns False for an event sealing refused: an invalid one never reached the masker, nor
        does it here. ``refused``: the caller knows sealing refused the event (the chain has no
        in-order record of it); the masker is then left as the refusal left it, whether or not
        masking raises again."""
        try:
            validate_event(event, message_key)
        except InvalidEvent:
            return False
        if event["body"][0] not in SINGLE_DATA_BODIES and event["body"][0] != OUTPUT_FLUSH:
            return not refused
        if refused:
            self._masker.replay_refused(event)
            return False
        try:
            self._masker.mask(event)
        except MemoryError:
            raise
        except Exception:  # refused by sealing too; the masker is put back
            return False
        return True

    def forget_stream(self, session_id: str) -> None:
        """Drop the masker's state of a session this worker no longer owns."""
        self._masker.end_session(session_id)

    def is_alert(self, record: Mapping[str, Any]) -> bool:
        """Whether a sealed record's risk reaches its identity kind's alert threshold."""
        return is_alert_record(self._scorer, record)

    def _seal(self, state: SessionState, reason: str, records: list[SealedRecord]) -> None:
        self._masker.end_session(state.session_id)
        seal = {
            "reason": reason,
            "record_count": state.next_index,
            "last_seq": state.last_seq,
            "head_hash": state.head_hash,
        }
        self._chain(state, {"kind": "SEAL", "seal": seal}, None, records)

    @staticmethod
    def _chain(
        state: SessionState, fields: dict[str, Any], event_bytes: bytes | None, records: list[SealedRecord]
    ) -> None:
        """Append one record to ``state``'s chain (mutating the successor being built)."""
        value: dict[str, Any] = {
            "session_id": state.session_id,
            "index": state.next_index,
            "kind": fields["kind"],
            "prev_hash": state.head_hash,
            "source_seq": fields.get("source_seq"),
            "event_digest": fields.get("event_digest"),
            "event": fields.get("event"),
            "gap": fields.get("gap"),
            "seal": fields.get("seal"),
            "findings": fields.get("findings") or [],
            "risk": fields.get("risk"),
        }
        raw = encode_sealed_record(value, event_bytes)
        digest = record_hash(raw)
        records.append(SealedRecord(raw, digest, value))
        _apply(state, value, digest)


def replay_state(state: SessionState, records: Sequence[tuple[bytes, dict[str, Any]]]) -> SessionState:
    """Fold archived records (exact bytes, value) onto a state: recovery's view of the chain."""
    successor = state.copy()
    for raw, value in records:
        _apply(successor, value, record_hash(raw))
    return successor


# -- what the worker keeps of a record -----------------------------------------------------------

_SUMMARY_LIMIT = 240

# A sealed record as the worker needs it after sealing: its exact bytes for the archive, and the
# values of its index row (`streams.sealer.RecordRow` names them). A plain tuple: a seal process
# pickles it at half a named tuple's cost, which calls a Python method for every row.
RecordFields = tuple[
    bytes,  # raw
    bytes,  # hash
    int,  # record_index
    str,  # kind
    int | None,  # source_seq (None: a gap or a seal)
    bytes,  # prev_hash
    bytes | None,  # event_digest
    str,  # event_id
    int | None,  # event_time (None: a record without an event, a gap or a seal)
    str,  # body_type
    str,  # summary
    int,  # risk_score
    int,  # finding_count
    bool,  # gateway_event (see `carries_gateway_event`)
    bool,  # worker_request (see `is_worker_request`)
]


def summarize(event: Mapping[str, Any] | None) -> tuple[str, str]:
    """(short body type, one-line masked summary) of an event, for listings and search."""
    if event is None:
        return "", ""
    full_name, body = event["body"]
    body_type: str = full_name.rsplit(".", 1)[-1]
    text: str
    if body_type == "Query":
        text = body["statement"]
    elif body_type == "Command":
        text = " ".join(body["argv"])
    elif body_type == "KubernetesApiCall":
        where = "/".join(part for part in (body["namespace"], body["name"]) if part)
        text = f"{body['verb']} {body['resource']} {where} → {body['status_code']}"
    elif body_type == "HttpExchange":
        text = f"{body['method']} {body['url']} → {body['status_code']}"
    elif body_type == "QueryResult":
        text = f"{body['row_count']} rows" + (f", error: {body['error']}" if body["error"] else "")
    elif body_type == "SessionStart":
        text = body["purpose"] or ""
    elif body_type == "SessionEnd":
        text = body["reason"]
    elif body_type == "PolicyDecision":
        text = f"{body['policy']}: {body['decision']}"
    else:
        text = ""
    return body_type, text[:_SUMMARY_LIMIT]


def record_fields(raw: bytes, digest: bytes, value: Mapping[str, Any]) -> RecordFields:
    event = value["event"]
    body_type, summary = summarize(event)
    risk = value["risk"]
    return (
        raw,
        digest,
        value["index"],
        value["kind"],
        value["source_seq"],
        value["prev_hash"],
        value["event_digest"],
        event["event_id"] if event else "",
        event["event_time"] if event else None,
        body_type,
        summary,
        risk["score"] if risk else 0,
        len(value["findings"]),
        carries_gateway_event(value),
        is_worker_request(value),
    )


def alert_json(digest: bytes, value: Mapping[str, Any]) -> bytes:
    """An alert as JSON: what, who, where, and how to find the evidence (never masked values:
    the record's event is already masked, and only its summary travels)."""
    event = value["event"]
    body_type, summary = summarize(event)
    return json.dumps(
        {
            "session_id": value["session_id"],
            "index": value["index"],
            "record_hash": digest.hex(),
            "event_id": event["event_id"],
            "event_time_us": event["event_time"],
            "principal": event["identity"]["principal"],
            "identity_kind": event["identity"]["kind"],
            "target": event["target"]["name"],
            "body_type": body_type,
            "summary": summary,
            "score": value["risk"]["score"],
            "reasons": value["risk"]["reasons"],
        },
        sort_keys=True,
    ).encode()


def kept_of(
    step: SealStep, records: Sequence[SealedRecord], recent: dict[tuple[str, int], bytes]
) -> tuple[list[RecordFields], list[bytes]]:
    """What the worker keeps of a message's records: their fields, and the alerts among them.
    The event digest of each gateway event goes into ``recent`` (duplicates of it may come in a
    later message of the same call)."""
    kept: list[RecordFields] = []
    alerts: list[bytes] = []
    for record in records:
        value = record.value
        fields = record_fields(record.raw, record.hash, value)
        kept.append(fields)
        digest = value["event_digest"]
        if digest is not None and carries_gateway_event(value):
            recent[(value["session_id"], value["source_seq"])] = digest
        if value["risk"] is not None and step.is_alert(value):
            alerts.append(alert_json(record.hash, value))
    return kept, alerts
