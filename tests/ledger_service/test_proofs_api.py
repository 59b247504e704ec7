"""Inclusion proofs through the index (`ProofService`), the proof file and its offline verifier,
and the ledger routes over the real app, index (chdb) and WORM directory."""

from __future__ import annotations

import base64
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api import TokenVerifier, create_app, generate_ed25519_keypair, mint_token
from api.ledger_routes import session_proofs, with_ledger
from api.models import VerdictOut
from ledger.log import ShardLedger
from ledger.merkle import leaf_hash
from ledger.signer import Ed25519FileSigner, Verifier
from replay import SessionReader
from replay.audit import audit_proof
from replay.proofs import (
    PROOF_HEADER,
    ProofService,
    RecordProof,
    VerificationFailed,
    leaf_entries,
    verify_record_proof,
)
from storage.index import ChdbIndex
from tests.access import RecordingAccessLog
from tests.ledger_service.archives import EPOCH, LOG_NAME, copy_tree, open_store, remove

pytestmark = pytest.mark.clickhouse

SESSION = "sess-p1-1"


@pytest.fixture
def index(archive: Path) -> Iterator[ChdbIndex]:
    with ChdbIndex(archive.parent / "index") as opened:
        yield opened


@pytest.fixture
def proofs(index: ChdbIndex, archive: Path, signer: Ed25519FileSigner) -> ProofService:
    return ProofService(index, open_store(archive), signer.verifier())


def test_every_record_of_a_session_has_a_verified_inclusion_proof(proofs: ProofService) -> None:
    result = proofs.session_proofs(SESSION)
    assert result.valid
    assert result.checks == ("ledger.checkpoint", "ledger.marker", "ledger.inclusion")
    assert result.included == len(result.records) == 152  # 150 events, the end event, the SEAL
    assert [record.index for record in result.records] == list(range(152))
    assert len({record.leaf_index for record in result.records}) == 152
    (checkpoint,) = result.checkpoints.values()
    for record in result.records:
        assert record.tree_size == checkpoint.size
        assert record.proof


def test_a_proof_file_verifies_with_the_public_key_alone(
    proofs: ProofService, signer: Ed25519FileSigner
) -> None:
    proof = proofs.record_proof(SESSION, 42)
    assert proof is not None
    text = proof.text()
    assert text.startswith(f"{PROOF_HEADER}\nextra ")
    assert f"\nindex {proof.leaf_index}\n" in text
    parsed = RecordProof.parse(text)
    assert parsed == proof
    proven = verify_record_proof(parsed, signer.verifier())
    assert (proven.entry.session_id, proven.entry.index) == (SESSION, 42)
    report = audit_proof(text, signer.verifier(), store=proofs.view.store)
    assert report.current is not None
    assert "still includes it" in report.summary()


def test_one_records_proof_reads_only_the_archive_block_that_holds_it(
    index: ChdbIndex, archive: Path, signer: Ed25519FileSigner
) -> None:
    store = open_store(archive)
    archive_reads: list[str] = []
    read_range, read_whole = store.get_range, store.get

    def ranged(key: str, start: int, length: int) -> bytes:
        archive_reads.append(key)
        return read_range(key, start, length)

    def whole(key: str) -> bytes:
        if not key.startswith("ledger/"):
            archive_reads.append(key)
        return read_whole(key)

    store.get_range = ranged  # type: ignore[method-assign]
    store.get = whole  # type: ignore[method-assign]
    proofs = ProofService(index, store, signer.verifier())
    objects_of_the_session = {
        row["object_key"]
        for row in index.query(
            "SELECT object_key FROM segments WHERE session_id = {s:String}", {"s": SESSION}
        ).to_pylist()
    }
    assert len(objects_of_the_session) > 2
    proof = proofs.record_proof(SESSION, 120)
    assert proof is not None
    assert verify_record_proof(proof, signer.verifier()).entry.index == 120
    assert len(archive_reads) == 2  # one object's header and the block, not the session's objects
    assert set(archive_reads) < objects_of_the_session


def test_an_edited_record_in_a_proof_file_fails(proofs: ProofService, signer: Ed25519FileSigner) -> None:
    proof = proofs.record_proof(SESSION, 7)
    assert proof is not None
    record = bytearray(proof.record)
    record[-3] ^= 0x20
    forged = RecordProof(bytes(record), proof.leaf_index, proof.hashes, proof.checkpoint_note)
    with pytest.raises(VerificationFailed) as caught:
        verify_record_proof(forged, signer.verifier())
    failure = caught.value
    assert failure.check == "proof.inclusion.root"
    assert (failure.session_id, failure.record_index, failure.leaf) == (SESSION, 7, proof.leaf_index)


def test_a_proof_file_checked_against_another_key_fails(proofs: ProofService, tmp_path: Path) -> None:
    proof = proofs.record_proof(SESSION, 0)
    assert proof is not None
    stranger = Ed25519FileSigner.generate(tmp_path / "other.key", LOG_NAME).verifier()
    with pytest.raises(VerificationFailed) as caught:
        verify_record_proof(proof, stranger)
    assert caught.value.check == "checkpoint.origin"  # another key's logs have other origins


@pytest.mark.parametrize(
    "mangle",
    [
        lambda text: text.replace(PROOF_HEADER, "c2sp.org/tlog-proof@v2"),
        lambda text: text.replace("\nindex ", "\nindex 0"),
        lambda text: text.replace("extra ", "extra !"),
        lambda text: text.split("\n\n")[0] + "\n",
    ],
)
def test_malformed_proof_files_are_refused(proofs: ProofService, mangle: object) -> None:
    proof = proofs.record_proof(SESSION, 3)
    assert proof is not None
    with pytest.raises(VerificationFailed) as caught:
        RecordProof.parse(mangle(proof.text()))  # type: ignore[operator]
    assert caught.value.check == "proof.format"


def test_records_not_yet_checkpointed_are_pending(
    ledgered_template: Path, tmp_path: Path, signer: Ed25519FileSigner
) -> None:
    work = copy_tree(ledgered_template / "final", tmp_path / "partial")  # chdb's symlinks kept
    shutil.rmtree(work / "archive" / "ledger")
    store = open_store(work / "archive")
    shard = ShardLedger(store, signer, epoch=EPOCH, partition=1)
    shard.catch_up(max_objects=2)
    shard.checkpoint()
    with ChdbIndex(work / "index") as index:
        result = ProofService(index, store, signer.verifier()).session_proofs(SESSION)
        assert result.valid
        statuses = [record.status for record in result.records]
        assert statuses == ["included"] * 50 + ["pending"] * 102
        assert ProofService(index, store, signer.verifier()).record_proof(SESSION, 120) is None


def test_the_ledger_verdict_extends_the_chain_verdict(
    proofs: ProofService, index: ChdbIndex, archive: Path
) -> None:
    chain = VerdictOut.of(SessionReader(index, open_store(archive)).verify(SESSION))
    combined = with_ledger(chain, session_proofs(proofs, SESSION))
    assert combined.valid
    assert combined.ledger is not None
    assert combined.ledger.included == combined.record_count == 152
    assert combined.model_dump()["checks"] == chain.checks
    without = with_ledger(chain, None)  # an API without a ledger configured
    assert without.valid == chain.valid
    assert without.ledger is None


def test_leaf_entries_match_the_inclusion_proofs(proofs: ProofService) -> None:
    result = proofs.session_proofs(SESSION)
    raws = [record.raw for record in SessionReader(proofs._index, proofs.view.store).records(SESSION)]
    (checkpoint,) = result.checkpoints.values()
    for raw_entry, record in zip(leaf_entries(raws), result.records, strict=True):
        assert record.leaf_index is not None
        proofs.view.inclusion_proof(record.origin, record.leaf_index, checkpoint.size).verify(
            leaf_hash(raw_entry), checkpoint.checkpoint.root_hash
        )


# -- the routes -----------------------------------------------------------------------------------


@pytest.fixture
def access_log() -> RecordingAccessLog:
    return RecordingAccessLog()


@pytest.fixture
def client(
    index: ChdbIndex, archive: Path, proofs: ProofService, access_log: RecordingAccessLog
) -> Iterator[tuple[TestClient, dict[str, str]]]:
    private, public = generate_ed25519_keypair()
    app = create_app(
        SessionReader(index, open_store(archive)),
        TokenVerifier(public_key_pem=public, issuer="blackbox-dev", audience="blackbox"),
        proofs=proofs,
        access_log=access_log,
    )
    token = mint_token(private, role="auditor", subject="auditor-1", ttl_seconds=300)
    with TestClient(app) as test_client:
        yield test_client, {"Authorization": f"Bearer {token}"}


def test_latest_checkpoints_are_the_signed_notes(
    client: tuple[TestClient, dict[str, str]], signer: Ed25519FileSigner
) -> None:
    http, auth = client
    assert http.get("/api/v1/checkpoints/latest").status_code == 401
    body = http.get("/api/v1/checkpoints/latest", headers=auth).json()
    assert body["root"]["origin"].endswith("/root")
    assert [shard["origin"].rsplit("/", 1)[-1] for shard in body["shards"]] == ["p00000", "p00001"]
    for note in [body["root"], *body["shards"]]:
        verifier = Verifier(note["origin"], signer.public_key)
        from ledger.checkpoint import open_checkpoint  # noqa: PLC0415

        checkpoint, _ = open_checkpoint(note["note"].encode(), [verifier])
        assert (checkpoint.size, checkpoint.root_hash.hex()) == (note["size"], note["root_hash"])


def test_session_proofs_route(client: tuple[TestClient, dict[str, str]]) -> None:
    http, auth = client
    body = http.get(f"/api/v1/sessions/{SESSION}/proofs", headers=auth).json()
    assert body["valid"]
    assert (body["included"], body["pending"]) == (152, 0)
    first = body["records"][0]
    assert first["status"] == "included"
    assert all(len(base64.b64decode(item)) == 32 for item in first["proof"])
    assert http.get("/api/v1/sessions/nope/proofs", headers=auth).status_code == 404


def test_record_proof_route_serves_a_verifiable_file(
    client: tuple[TestClient, dict[str, str]], signer: Ed25519FileSigner, access_log: RecordingAccessLog
) -> None:
    http, auth = client
    response = http.get(f"/api/v1/sessions/{SESSION}/records/5/proof", headers=auth)
    assert response.status_code == 200
    assert response.headers["content-disposition"].endswith('.tlog-proof"')
    proven = verify_record_proof(RecordProof.parse(response.text), signer.verifier())
    assert (proven.entry.session_id, proven.entry.index) == (SESSION, 5)
    # The file carries the record: a read of session content, on record before it was served.
    [(who, read)] = access_log.reads
    assert (who, read.session_id, read.response_bytes) == ("auditor-1", SESSION, len(response.content))
    assert http.get(f"/api/v1/sessions/{SESSION}/records/999/proof", headers=auth).status_code == 400


def test_the_verify_route_reads_each_archive_block_once(
    index: ChdbIndex, archive: Path, signer: Ed25519FileSigner
) -> None:
    store = open_store(archive)
    block_reads: list[tuple[str, int]] = []
    read_range = store.get_range

    def ranged(key: str, start: int, length: int) -> bytes:
        block_reads.append((key, start))
        return read_range(key, start, length)

    store.get_range = ranged  # type: ignore[method-assign]
    private, public = generate_ed25519_keypair()
    app = create_app(
        SessionReader(index, store),
        TokenVerifier(public_key_pem=public, issuer="blackbox-dev", audience="blackbox"),
        proofs=ProofService(index, store, signer.verifier()),
    )
    token = mint_token(private, role="auditor", subject="auditor-1", ttl_seconds=300)
    with TestClient(app) as http:
        body = http.get(
            f"/api/v1/sessions/{SESSION}/verify", headers={"Authorization": f"Bearer {token}"}
        ).json()
    assert body["valid"]
    assert body["ledger"]["valid"]
    assert block_reads
    assert len(block_reads) == len(set(block_reads))  # the chain and the ledger checks share one read


def test_a_slow_tile_read_does_not_hold_up_proofs_of_another_log(
    index: ChdbIndex, archive: Path, signer: Ed25519FileSigner
) -> None:
    store = open_store(archive)
    view = ProofService(index, store, signer.verifier()).view
    slow, fast = sorted(view.shard_origins())
    entered, release = threading.Event(), threading.Event()
    read_whole = store.get

    def stalling(key: str) -> bytes:
        if key.startswith(f"ledger/{slow}/tile/"):
            entered.set()
            release.wait(10)
        return read_whole(key)

    store.get = stalling  # type: ignore[method-assign]
    slow_size = view.latest(slow).size  # type: ignore[union-attr]
    fast_checkpoint = view.latest(fast)
    assert fast_checkpoint is not None
    waiting = threading.Thread(target=view.inclusion_proof, args=(slow, 0, slow_size))
    waiting.start()
    try:
        assert entered.wait(10)
        done: list[object] = []
        other = threading.Thread(
            target=lambda: done.append(view.inclusion_proof(fast, 0, fast_checkpoint.size))
        )
        other.start()
        other.join(5)
        assert done, "a proof of another log waited for the stalled tile read"
    finally:
        release.set()
        waiting.join(10)


def test_verifying_a_session_whose_archive_is_gone_is_a_failed_verdict_not_an_error(
    client: tuple[TestClient, dict[str, str]], index: ChdbIndex, archive: Path
) -> None:
    http, auth = client
    (key,) = {
        row["object_key"]
        for row in index.query(
            "SELECT object_key FROM segments WHERE session_id = {s:String} AND first_index = 0",
            {"s": SESSION},
        ).to_pylist()
    }
    remove(archive / key)
    response = http.get(f"/api/v1/sessions/{SESSION}/verify", headers=auth)
    assert response.status_code == 200
    body = response.json()
    assert body["valid"] is False
    assert body["failure"]["check"] == "archive"
    assert body["ledger"]["valid"] is False
    assert body["ledger"]["failure"]["check"] == "archive"
