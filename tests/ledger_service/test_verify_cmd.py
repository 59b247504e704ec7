"""`blackbox verify` as a command: exit status, summary on stdout, progress and problems on stderr."""

from __future__ import annotations

import argparse
import io
import shutil
from pathlib import Path

import pytest

from blackbox.verify_cmd import EXIT_FAILED, EXIT_OK, EXIT_UNREADABLE, add_verify_parser, run_verify
from replay.proofs import ProofService
from storage.index import ChdbIndex
from tests.ledger_service.archives import EPOCH, archive_keys, object_records, open_store, rewrite_object

pytestmark = pytest.mark.clickhouse


def verify(*argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="blackbox")
    add_verify_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["verify", *argv])
    out, err = io.StringIO(), io.StringIO()
    code = args.handler(args, stdout=out, stderr=err)
    assert args.handler is run_verify
    return code, out.getvalue(), err.getvalue()


def test_a_sound_archive_verifies(archive: Path, public_key_file: Path) -> None:
    code, out, err = verify(f"file://{archive}", "--public-key", str(public_key_file))
    assert code == EXIT_OK, out + err
    assert out.startswith("OK: 1212 records of 8 sessions (6 sealed) in 2 shard(s)")
    assert f"/{EPOCH}/p00000: 606 leaves" in out
    assert "records" in err  # progress went to stderr
    code, deep, _ = verify(str(archive), "--public-key", str(public_key_file), "--deep", "--quiet")
    assert code == EXIT_OK
    assert deep.splitlines()[1:] == out.splitlines()[1:]


def test_a_tampered_archive_fails_with_the_location(archive: Path, public_key_file: Path) -> None:
    store = open_store(archive)
    key = archive_keys(store, 0)[0]
    blocks = object_records(store, key)
    edited = bytearray(blocks[0][3])
    edited[-5] ^= 1
    blocks[0][3] = bytes(edited)
    rewrite_object(store, key, blocks)
    code, out, _ = verify(str(archive), "--public-key", str(public_key_file), "--quiet")
    assert code == EXIT_FAILED
    assert out.startswith("FAILED archive.record_hash: ")
    assert f"leaf 3, session sess-p0-0 record 3 (seq 3), object {key}" in out


def test_a_rollback_is_caught_with_the_checkpoint_kept_last_time(
    ledgered_template: Path, public_key_file: Path, tmp_path: Path
) -> None:
    kept = tmp_path / "kept.checkpoint"
    final = ledgered_template / "final" / "archive"
    code, out, _ = verify(str(final), "--public-key", str(public_key_file), "--save-checkpoint", str(kept))
    assert code == EXIT_OK, out
    assert kept.read_bytes().startswith(b"blackbox.test/")

    older = shutil.copytree(ledgered_template / "stage1" / "archive", tmp_path / "older")
    assert verify(str(older), "--public-key", str(public_key_file))[0] == EXIT_OK
    code, out, _ = verify(str(older), "--public-key", str(public_key_file), "--since-checkpoint", str(kept))
    assert code == EXIT_FAILED
    assert out.startswith("FAILED consistency.rollback: ")

    code, out, _ = verify(str(final), "--public-key", str(public_key_file), "--since-checkpoint", str(kept))
    assert code == EXIT_OK
    assert "consistent with the kept checkpoint" in out


def test_one_session(archive: Path, public_key_file: Path) -> None:
    code, out, err = verify(str(archive), "--public-key", str(public_key_file), "--session", "sess-p1-3")
    assert code == EXIT_OK, out + err
    assert out.startswith("OK: session sess-p1-3: 150 records (open)")
    code, out, _ = verify(str(archive), "--public-key", str(public_key_file), "--session", "nobody")
    assert code == EXIT_FAILED
    assert out.startswith("FAILED ledger.session")


def test_a_session_with_a_deleted_record(archive: Path, public_key_file: Path) -> None:
    store = open_store(archive)
    key = archive_keys(store, 1)[4]
    blocks = object_records(store, key)
    target = next(number for number, block in enumerate(blocks) if b"sess-p1-2" in block[0][:20])
    del blocks[target][10]
    rewrite_object(store, key, blocks)
    code, out, _ = verify(str(archive), "--public-key", str(public_key_file), "--session", "sess-p1-2")
    assert code == EXIT_FAILED
    assert out.startswith("FAILED archive.record_identity")
    assert "session sess-p1-2 record 110" in out
    assert "the archive has session sess-p1-2 record 111" in out


def test_a_proof_file(archive: Path, public_key_file: Path, signer: object, tmp_path: Path) -> None:
    with ChdbIndex(archive.parent / "index") as index:
        proof = ProofService(index, open_store(archive), signer.verifier()).record_proof("sess-p0-2", 9)  # type: ignore[attr-defined]
    assert proof is not None
    path = tmp_path / "record.tlog-proof"
    path.write_text(proof.text())
    code, out, _ = verify("--public-key", str(public_key_file), "--proof", str(path))
    assert code == EXIT_OK
    assert out.startswith("OK: session sess-p0-2 record 9 (EVENT")
    code, out, _ = verify(str(archive), "--public-key", str(public_key_file), "--proof", str(path))
    assert code == EXIT_OK
    assert "the log still includes it" in out
    path.write_text(proof.text().replace("index ", "index 1"))
    code, out, _ = verify("--public-key", str(public_key_file), "--proof", str(path))
    assert code == EXIT_FAILED
    assert out.startswith("FAILED proof.inclusion")


def test_unreadable_inputs_exit_2(archive: Path, public_key_file: Path, tmp_path: Path) -> None:
    code, _, err = verify(str(tmp_path / "nowhere"), "--public-key", str(public_key_file))
    assert (code, "no archive directory") == (EXIT_UNREADABLE, err.split(" at ")[0].split(": ", 1)[1])
    code, _, err = verify(str(archive), "--public-key", str(tmp_path / "missing.pub"))
    assert code == EXIT_UNREADABLE
    assert "cannot load the public key" in err
    code, _, err = verify("ftp://somewhere", "--public-key", str(public_key_file))
    assert code == EXIT_UNREADABLE
