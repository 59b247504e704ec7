"""Response models of the HTTP API: the stable JSON contract, built from replay's data classes.

Times are ISO 8601 strings in UTC with microseconds (``2024-05-01T12:00:00.000250Z``); events
also carry ``event_time_us`` (integer microseconds since the epoch) for clients that compute
with times and would otherwise parse the string back. Hashes are lower-case hex.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from replay import SessionSummary, Verdict, iso_utc


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ErrorOut(_Model):
    """Every error response: a stable machine-readable code and a sentence for people."""

    error: str = Field(examples=["session_not_found"])
    message: str
    details: list[dict[str, Any]] | None = None


class IdentityOut(_Model):
    principal: str
    kind: str
    issuer: str | None
    groups: list[str]


class TargetOut(_Model):
    name: str
    kind: str
    host: str | None
    database: str | None


class GatewayOut(_Model):
    id: str
    product: str


class SessionOut(_Model):
    session_id: str
    identity: IdentityOut
    target: TargetOut
    gateway: GatewayOut
    started_at: str
    last_event_at: str
    record_count: int
    last_seq: int
    sealed: bool
    seal_reason: str
    gap_count: int
    fork_count: int
    head_hash: str
    max_risk: int

    @classmethod
    def of(cls, summary: SessionSummary) -> SessionOut:
        return cls(
            session_id=summary.session_id,
            identity=IdentityOut(
                principal=summary.identity.principal,
                kind=summary.identity.kind,
                issuer=summary.identity.issuer,
                groups=list(summary.identity.groups),
            ),
            target=TargetOut(
                name=summary.target.name,
                kind=summary.target.kind,
                host=summary.target.host,
                database=summary.target.database,
            ),
            gateway=GatewayOut(id=summary.gateway.id, product=summary.gateway.product),
            started_at=iso_utc(summary.started_at_us),
            last_event_at=iso_utc(summary.last_event_at_us),
            record_count=summary.record_count,
            last_seq=summary.last_seq,
            sealed=summary.sealed,
            seal_reason=summary.seal_reason,
            gap_count=summary.gap_count,
            fork_count=summary.fork_count,
            head_hash=summary.head_hash,
            max_risk=summary.max_risk,
        )


class SessionPageOut(_Model):
    items: list[SessionOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")


class GapOut(_Model):
    first_seq: int
    last_seq: int


class SealOut(_Model):
    reason: str
    record_count: int
    last_seq: int
    head_hash: str


class FindingOut(_Model):
    entity_type: str
    field: str
    start: int
    end: int
    blind_index: str


class RiskReasonOut(_Model):
    rule_id: str
    message: str


class RiskOut(_Model):
    score: int
    reasons: list[RiskReasonOut]


class EventOut(_Model):
    index: int
    kind: str
    source_seq: int | None
    event_id: str | None
    event_time: str | None
    event_time_us: int | None
    body_type: str | None = Field(description="Short record name of the body, e.g. TerminalOutput.")
    body: dict[str, Any] | None = Field(
        description=(
            "The body's fields. Bytes fields are UTF-8 text (invalid sequences as U+FFFD) plus "
            "`<field>_base64` with the exact bytes when they are not valid UTF-8 on their own."
        )
    )
    attributes: dict[str, str]
    gap: GapOut | None
    seal: SealOut | None
    record_hash: str
    prev_hash: str
    findings: list[FindingOut]
    risk: RiskOut | None


class EventsOut(_Model):
    session_id: str
    events: list[EventOut]
    next_after_index: int | None = Field(
        description="Pass as `after_index` for the next page; null when this page was not full."
    )


class VerifyFailureOut(_Model):
    check: str
    detail: str
    index: int | None


class VerdictOut(_Model):
    session_id: str
    valid: bool
    record_count: int
    head_hash: str | None
    sealed: bool
    gap_count: int
    fork_count: int
    checks: list[str] = Field(description="Checks that passed, in the order they ran.")
    failure: VerifyFailureOut | None

    @classmethod
    def of(cls, verdict: Verdict) -> VerdictOut:
        failure = verdict.failure
        return cls(
            session_id=verdict.session_id,
            valid=verdict.valid,
            record_count=verdict.record_count,
            head_hash=verdict.head_hash,
            sealed=verdict.sealed,
            gap_count=verdict.gap_count,
            fork_count=verdict.fork_count,
            checks=list(verdict.checks),
            failure=(
                VerifyFailureOut(check=failure.check, detail=failure.detail, index=failure.index)
                if failure
                else None
            ),
        )


class HealthOut(_Model):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str]
