"""Ledger routes: the latest signed checkpoints, and each session record's inclusion proof.

The `ProofService` is put on ``app.state.proofs`` by the wiring; routes only call it. Hashes are
lower-case hex except inclusion proof hashes, which are base64 as in the C2SP proof format.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Sequence
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from api.access_log import record_read
from api.deps import PrincipalDep, get_principal
from api.errors import ERROR_RESPONSES, SESSION_RESPONSES
from api.models import VerdictOut
from ledger.log import SignedCheckpoint
from replay import ArchivedRecord, VerifyFailure
from replay.errors import EvidenceCorrupt
from replay.proofs import PROOF_SUFFIX, ProofService, SessionProofs, VerificationFailed

logger = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
PROOF_MEDIA_TYPE = "text/plain; charset=utf-8"
_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]")

SessionId = Annotated[str, Path(min_length=1, max_length=256, description="The session's id.")]
RecordIndex = Annotated[int, Path(ge=0, description="The record's index in the session's chain.")]


_LEDGER_OFF = "the ledger is not enabled on this API (BLACKBOX_LEDGER_ENABLED=false)"


def get_proofs(request: Request) -> ProofService:
    """The app's proof service; an API started without the ledger answers its routes with a 404
    that says so, rather than the bare "Not Found" of a mistyped path."""
    proofs: ProofService | None = getattr(request.app.state, "proofs", None)
    if proofs is None:
        raise HTTPException(status_code=404, detail=_LEDGER_OFF)
    return proofs


ProofsDep = Annotated[ProofService, Depends(get_proofs)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CheckpointOut(_Model):
    origin: str
    size: int
    root_hash: str
    note: str = Field(description="The signed note (C2SP tlog-checkpoint), verbatim.")

    @classmethod
    def of(cls, signed: SignedCheckpoint) -> CheckpointOut:
        checkpoint = signed.checkpoint
        return cls(
            origin=checkpoint.origin,
            size=checkpoint.size,
            root_hash=checkpoint.root_hash.hex(),
            note=signed.note.decode("utf-8"),
        )


class LatestCheckpointsOut(_Model):
    root: CheckpointOut | None = Field(description="The log of logs: it commits to every shard's checkpoint.")
    shards: list[CheckpointOut]


class RecordInclusionOut(_Model):
    index: int
    record_hash: str
    status: Literal["included", "pending"] = Field(
        description="pending: archived, not yet covered by a signed checkpoint (a few seconds)."
    )
    origin: str
    leaf_index: int | None
    tree_size: int | None
    proof: list[str] = Field(
        description="RFC 6962 inclusion proof, base64 hashes from the leaf's sibling up."
    )


class LedgerFailureOut(_Model):
    check: str
    detail: str
    index: int | None


class LedgerVerdictOut(_Model):
    valid: bool
    checks: list[str]
    failure: LedgerFailureOut | None
    included: int
    pending: int
    checkpoints: list[CheckpointOut]
    records: list[RecordInclusionOut]

    @classmethod
    def of(cls, proofs: SessionProofs) -> LedgerVerdictOut:
        failure = proofs.failure
        return cls(
            valid=proofs.valid,
            checks=list(proofs.checks),
            failure=LedgerFailureOut(check=failure.check, detail=failure.detail, index=failure.index)
            if failure
            else None,
            included=proofs.included,
            pending=len(proofs.records) - proofs.included,
            checkpoints=[CheckpointOut.of(signed) for signed in proofs.checkpoints.values()],
            records=[
                RecordInclusionOut(
                    index=record.index,
                    record_hash=record.record_hash.hex(),
                    status=record.status,
                    origin=record.origin,
                    leaf_index=record.leaf_index,
                    tree_size=record.tree_size,
                    proof=[base64.b64encode(item).decode("ascii") for item in record.proof],
                )
                for record in proofs.records
            ],
        )


class LedgerSessionVerdictOut(VerdictOut):
    """The chain verdict of /sessions/{id}/verify with the ledger's (null when the API has no
    ledger configured): ``valid`` holds only when both do."""

    ledger: LedgerVerdictOut | None = None


def session_proofs(
    proofs: ProofService, session_id: str, records: Sequence[ArchivedRecord] | None = None
) -> LedgerVerdictOut:
    """The ledger's verdict and per-record inclusion proofs for one session (``records``: the
    session's records if the caller has read them already)."""
    return LedgerVerdictOut.of(proofs.session_proofs(session_id, records))


def with_ledger(verdict: VerdictOut, ledger: LedgerVerdictOut | None) -> LedgerSessionVerdictOut:
    """A chain verdict extended with the ledger's (for /sessions/{id}/verify)."""
    fields = verdict.model_dump()
    fields["valid"] = verdict.valid and (ledger is None or ledger.valid)
    return LedgerSessionVerdictOut(**fields, ledger=ledger)


def ledger_verdict(
    request: Request, session_id: str, records: Sequence[ArchivedRecord] | None
) -> LedgerVerdictOut | None:
    """The ledger's verdict of a session from the records the chain check read, or None when the
    app has no `ProofService`. ``records`` None: the archive could not be read as the index says
    (the chain verdict names why); the ledger cannot vouch for what cannot be read."""
    proofs: ProofService | None = getattr(request.app.state, "proofs", None)
    if proofs is None:
        return None
    if records is None:
        unread = VerifyFailure("archive", "the session's records could not be read; see the chain verdict")
        return LedgerVerdictOut.of(SessionProofs(session_id, {}, [], False, (), unread))
    return session_proofs(proofs, session_id, records)


router = APIRouter(prefix=API_PREFIX, dependencies=[Depends(get_principal)], responses=ERROR_RESPONSES)


@router.get(
    "/checkpoints/latest", response_model=LatestCheckpointsOut, summary="The latest signed checkpoints"
)
def latest_checkpoints(proofs: ProofsDep, caller: PrincipalDep) -> LatestCheckpointsOut:
    latest = proofs.latest_checkpoints()
    return LatestCheckpointsOut(
        root=CheckpointOut.of(latest.root) if latest.root else None,
        shards=[CheckpointOut.of(signed) for signed in latest.shards],
    )


@router.get("/sessions/{session_id}/proofs", response_model=LedgerVerdictOut, responses=SESSION_RESPONSES)
def get_session_proofs(session_id: SessionId, proofs: ProofsDep, caller: PrincipalDep) -> LedgerVerdictOut:
    logger.info("%s reads the ledger proofs of session %s", caller.subject, session_id)
    return session_proofs(proofs, session_id)


@router.get(
    "/sessions/{session_id}/records/{index}/proof",
    response_class=Response,
    responses={
        **SESSION_RESPONSES,
        200: {"content": {PROOF_MEDIA_TYPE: {}}, "description": "c2sp.org/tlog-proof@v1 file"},
        202: {"description": "Archived but not yet covered by a signed checkpoint; retry in seconds."},
    },
)
def get_record_proof(
    session_id: SessionId, index: RecordIndex, request: Request, proofs: ProofsDep, caller: PrincipalDep
) -> Response:
    logger.info("%s downloads the proof of session %s record %d", caller.subject, session_id, index)
    try:
        proof = proofs.record_proof(session_id, index)
    except VerificationFailed as exc:  # the ledger does not vouch for this record: an incident
        raise EvidenceCorrupt(session_id, exc.describe()) from exc
    if proof is None:
        return Response(status_code=202, headers={"Retry-After": "2"})
    text = proof.text().encode()  # it carries the record: session content
    record_read(request, caller, session_id, len(text))
    filename = f"{_UNSAFE_FILENAME.sub('_', session_id)}-{index}{PROOF_SUFFIX}"
    return Response(
        text,
        media_type=PROOF_MEDIA_TYPE,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
