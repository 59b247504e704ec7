"""Signed notes, checkpoints and signing keys: byte-exact against published examples, then tampering.

Vectors: the PeterNeumann / EnochRoot keys and notes of golang.org/x/mod/sumdb/note's tests and
package documentation, the example of https://c2sp.org/signed-note, and two tree heads signed by
sum.golang.org (a production C2SP checkpoint log, with its published verifier key).
"""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ledger.checkpoint import Checkpoint, CheckpointError, open_checkpoint, sign_checkpoint
from ledger.merkle import EMPTY_ROOT, leaf_hash, root
from ledger.note import (
    NoteError,
    NoteSignature,
    ed25519_key_id,
    open_note,
    parse_note,
    sign_note,
)
from ledger.signer import Ed25519FileSigner, InvalidKey, Signer, Verifier

PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
PETER_B64 = "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
PETER_SIG = f"— PeterNeumann {PETER_B64}\n"
ENOCH_B64 = "rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ="
ENOCH_SIG = f"— EnochRoot {ENOCH_B64}\n"

C2SP_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
C2SP_NOTE = (
    "This is an example message.\n\n— example.com/foo "
    "Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
)

SUMDB_VKEY = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"
SUMDB_CHECKPOINTS = [
    (
        65209736,
        "go.sum database tree\n65209736\n5+uGFjx6xBZG8ip1+wi77v+grwbhhukIrxEUS8PXvRo=\n\n— sum.golang.org "
        "Az3grnbssgK7ubgFX36gVETtNv0U23qxyAhAMai2QUfeGa3nB/akvkMdlUErfcZz7l/R3cVtYspg3dxXABkGZZKdsQ8=\n",
    ),
    (
        49189689,
        "go.sum database tree\n49189689\nftjbAOzaupaIvaPo/G+Dk63nxOZ2s1OPOKIaPtXs7S4=\n\n— sum.golang.org "
        "Az3grlKZssqRoMNPpZfKt0TphbbcF+pzXqElURJKRNFKfaUAgqeI5k2AORH0QAhg/ebRwyIqD/OqP4oLtLnNumvOBAM=\n",
    ),
]


@pytest.fixture
def peter() -> Ed25519FileSigner:
    return Ed25519FileSigner.from_skey(PETER_SKEY)


# --- published vectors


def test_sign_is_byte_exact_with_x_mod(peter: Ed25519FileSigner) -> None:
    assert peter.name == "PeterNeumann"
    assert peter.key_id == 0xC74F20A3
    assert peter.vkey == PETER_VKEY
    assert peter.skey() == PETER_SKEY
    assert sign_note(TEXT, peter) == (TEXT + "\n" + PETER_SIG).encode()


def test_open_doubly_signed_note_from_x_mod() -> None:
    note = (TEXT + "\n" + PETER_SIG + ENOCH_SIG).encode()
    peter, enoch = Verifier.from_vkey(PETER_VKEY), Verifier.from_vkey(ENOCH_VKEY)
    assert open_note(note, [peter]) == (TEXT, ("PeterNeumann",))
    assert open_note(note, [peter, enoch]) == (TEXT, ("PeterNeumann", "EnochRoot"))
    assert open_note(note, [enoch]).signers == ("EnochRoot",)
    with pytest.raises(NoteError) as caught:
        open_note(note, [])
    assert caught.value.check == "unknown_key"


def test_open_c2sp_example() -> None:
    verifier = Verifier.from_vkey(C2SP_VKEY)
    assert verifier.key_id == 0x530D903A
    assert verifier.vkey == C2SP_VKEY
    assert open_note(C2SP_NOTE.encode(), [verifier]) == (
        "This is an example message.\n",
        ("example.com/foo",),
    )


@pytest.mark.parametrize(("size", "note"), SUMDB_CHECKPOINTS)
def test_open_real_sum_golang_org_checkpoints(size: int, note: str) -> None:
    verifier = Verifier.from_vkey(SUMDB_VKEY)
    checkpoint, signers = open_checkpoint(note.encode(), [verifier], log_key_name="sum.golang.org")
    assert (checkpoint.origin, checkpoint.size, signers) == (
        "go.sum database tree",
        size,
        ("sum.golang.org",),
    )
    assert checkpoint.text == note[: note.index("\n\n") + 1]
    # The origin has spaces, so it cannot be a key name: without naming the log's key, it is refused.
    with pytest.raises(CheckpointError) as caught:
        open_checkpoint(note.encode(), [verifier])
    assert caught.value.check == "log_signature"


# --- note format and tampering


def test_round_trip_with_generated_key_and_blank_lines_in_text(tmp_path: Path) -> None:
    signer = Ed25519FileSigner.generate(tmp_path / "k", "example.org/log")
    text = "first\n\nthird, after an empty line\n"
    note = sign_note(text, signer)
    assert open_note(note, [signer.verifier()]) == (text, ("example.org/log",))
    parsed_text, signatures = parse_note(note)
    assert parsed_text == text
    assert [(s.name, s.key_id) for s in signatures] == [("example.org/log", signer.key_id)]


def test_signature_lines_in_any_order_and_unknown_keys_ignored(
    peter: Ed25519FileSigner, tmp_path: Path
) -> None:
    # Signatures cover the text only, so reordering lines is not tampering; the spec requires
    # ignoring signatures by unknown keys (witnesses, a rotated key).
    other = Ed25519FileSigner.generate(tmp_path / "other", "witness.example")
    note = sign_note(TEXT, peter, other).decode()
    body, lines = note.split("\n\n", 1)
    first, second = lines.splitlines(keepends=True)
    swapped = (body + "\n\n" + second + first).encode()
    assert open_note(swapped, [other.verifier(), Verifier.from_vkey(PETER_VKEY)]).signers == (
        "witness.example",
        "PeterNeumann",
    )
    assert open_note(swapped, [Verifier.from_vkey(PETER_VKEY)]).signers == ("PeterNeumann",)


def test_tampered_text_is_rejected(peter: Ed25519FileSigner) -> None:
    note = sign_note(TEXT, peter)
    verifier = Verifier.from_vkey(PETER_VKEY)
    for position in (0, 10, len(TEXT) - 2):
        changed = bytearray(note)
        changed[position] ^= 0x01
        with pytest.raises(NoteError) as caught:
            open_note(bytes(changed), [verifier])
        assert caught.value.check == "signature"


def test_flipped_signature_bit_is_rejected(peter: Ed25519FileSigner) -> None:
    _, [signature] = parse_note(sign_note(TEXT, peter))
    for bit in (0, 200, 511):
        raw = bytearray(signature.signature)
        raw[bit // 8] ^= 1 << (bit % 8)
        note = (TEXT + "\n" + NoteSignature("PeterNeumann", peter.key_id, bytes(raw)).line()).encode()
        with pytest.raises(NoteError) as caught:
            open_note(note, [Verifier.from_vkey(PETER_VKEY)])
        assert caught.value.check == "signature"


def test_wrong_key_with_the_same_name_is_not_trusted(peter: Ed25519FileSigner, tmp_path: Path) -> None:
    impostor = Ed25519FileSigner.generate(tmp_path / "impostor", "PeterNeumann")
    note = sign_note(TEXT, impostor)
    with pytest.raises(NoteError) as caught:
        open_note(note, [Verifier.from_vkey(PETER_VKEY)])
    assert caught.value.check == "unknown_key"
    # Claiming Peter's key ID too: now the trusted key must verify it, and it does not.
    _, [signature] = parse_note(note)
    forged = (TEXT + "\n" + NoteSignature("PeterNeumann", peter.key_id, signature.signature).line()).encode()
    with pytest.raises(NoteError) as caught:
        open_note(forged, [Verifier.from_vkey(PETER_VKEY)])
    assert caught.value.check == "signature"


def test_one_bad_signature_by_a_trusted_key_rejects_the_note(peter: Ed25519FileSigner) -> None:
    bad = PETER_SIG[:60] + "ABCD" + PETER_SIG[60:]
    with pytest.raises(NoteError) as caught:
        open_note((TEXT + "\n" + PETER_SIG + bad).encode(), [Verifier.from_vkey(PETER_VKEY)])
    assert caught.value.check == "signature"


def test_ambiguous_trusted_keys_are_refused() -> None:
    enoch = Verifier.from_vkey(ENOCH_VKEY)
    with pytest.raises(NoteError) as caught:
        open_note((TEXT + "\n" + ENOCH_SIG).encode(), [enoch, Verifier.from_vkey(PETER_VKEY), enoch])
    assert caught.value.check == "ambiguous_key"


@pytest.mark.parametrize(
    "message",
    [
        TEXT,
        TEXT + "\n",
        TEXT + "\n" + PETER_SIG[:-1],
        "\x01" + TEXT + "\n" + PETER_SIG,
        TEXT + "\n" + f"— Bad Name {PETER_B64}\n",
        TEXT + "\n" + PETER_SIG + "Unexpected line.\n",
        TEXT + "\n" + PETER_SIG.replace("— ", "- "),
        TEXT + "\n" + PETER_SIG.replace("AM=", "AM"),  # unpadded base64
        TEXT + "\n" + PETER_SIG.replace("AM=", "AN="),  # non-canonical base64 (stray low bits)
        TEXT + "\n" + "— PeterNeumann AAAAAA==\n",  # a key ID but no signature
        TEXT + "\n" + "— PeterNeumann\n",
        TEXT + "\n" + PETER_SIG * 101,
        TEXT.replace("\n", "\r\n") + "\n" + PETER_SIG,
    ],
)
def test_malformed_notes_are_rejected(message: str) -> None:
    with pytest.raises(NoteError) as caught:
        open_note(message.encode(), [Verifier.from_vkey(PETER_VKEY)])
    assert caught.value.check == "format"


def test_invalid_utf8_is_rejected() -> None:
    with pytest.raises(NoteError) as caught:
        open_note(b"\xff" + (TEXT + "\n" + PETER_SIG).encode(), [Verifier.from_vkey(PETER_VKEY)])
    assert caught.value.check == "format"


def test_sign_refuses_what_open_would_refuse(peter: Ed25519FileSigner) -> None:
    for text in ("no final newline", "tab\there\n", ""):
        with pytest.raises(NoteError):
            sign_note(text, peter)
    with pytest.raises(NoteError):
        sign_note(TEXT)


# --- keys


def test_verifier_key_manglings_are_rejected() -> None:
    assert Verifier.from_vkey(PETER_VKEY).vkey == PETER_VKEY
    bad = [
        PETER_VKEY[:-1],
        PETER_VKEY.replace("c74f20a3", "c74f20a4"),
        PETER_VKEY.replace("+ARpc", "+AhQc"),
        "PeterNeumann+c74f20a3",
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ]
    for vkey in bad:
        with pytest.raises(InvalidKey):
            Verifier.from_vkey(vkey)
    for i in range(len(PETER_VKEY)):  # every single-character change, as x/mod's tests do
        changed = PETER_VKEY[:i] + chr(ord(PETER_VKEY[i]) + 1) + PETER_VKEY[i + 1 :]
        with pytest.raises(InvalidKey):
            Verifier.from_vkey(changed)


def test_signer_key_manglings_are_rejected() -> None:
    for i in range(len(PETER_SKEY)):
        changed = PETER_SKEY[:i] + chr(ord(PETER_SKEY[i]) + 1) + PETER_SKEY[i + 1 :]
        with pytest.raises(InvalidKey):
            Ed25519FileSigner.from_skey(changed)


def test_key_id_rule() -> None:
    public = Verifier.from_vkey(PETER_VKEY).public_key
    assert ed25519_key_id("PeterNeumann", public) == 0xC74F20A3
    with pytest.raises(ValueError, match="32 bytes"):
        ed25519_key_id("PeterNeumann", public[:31])


def test_generate_writes_a_0600_note_key_and_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "log.key"
    signer = Ed25519FileSigner.generate(path, "blackbox.example/shard-0")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().startswith("PRIVATE+KEY+blackbox.example/shard-0+")
    loaded = Ed25519FileSigner.load(path)
    assert (loaded.name, loaded.key_id, loaded.public_key) == (signer.name, signer.key_id, signer.public_key)
    assert "PRIVATE" not in repr(loaded)
    with pytest.raises(FileExistsError):
        Ed25519FileSigner.generate(path, "blackbox.example/shard-0")
    with pytest.raises(InvalidKey, match="expected"):
        Ed25519FileSigner.load(path, name="someone.else")


def test_pem_keys_load_with_a_name(tmp_path: Path) -> None:
    path = tmp_path / "log.pem"
    signer = Ed25519FileSigner.generate(path, "blackbox.example/pem", pem=True)
    assert path.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    with pytest.raises(InvalidKey, match="no name"):
        Ed25519FileSigner.load(path)
    loaded = Ed25519FileSigner.load(path, name="blackbox.example/pem")
    assert loaded.vkey == signer.vkey

    public_pem = Ed25519PublicKey.from_public_bytes(signer.public_key).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "log.pub.pem").write_bytes(public_pem)
    (tmp_path / "log.vkey").write_text(signer.vkey + "\n")
    assert Verifier.load(tmp_path / "log.pub.pem", name="blackbox.example/pem") == signer.verifier()
    assert Verifier.load(tmp_path / "log.vkey") == signer.verifier()
    with pytest.raises(InvalidKey, match="no name"):
        Verifier.load(tmp_path / "log.pub.pem")


def test_loading_an_open_key_file_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "open.key"
    path.write_text(PETER_SKEY + "\n")
    os.chmod(path, 0o644)
    assert Ed25519FileSigner.load(path).name == "PeterNeumann"
    assert "readable by others" in caplog.text


def test_file_signer_satisfies_the_signer_protocol(peter: Ed25519FileSigner) -> None:
    signer: Signer = peter
    assert Verifier(signer.name, signer.public_key).verify(b"m", signer.sign(b"m"))


# --- checkpoints


def _checkpoint(size: int = 3, extensions: tuple[str, ...] = ()) -> Checkpoint:
    return Checkpoint(
        "blackbox.example/shard-0", size, root([leaf_hash(b"%d" % i) for i in range(size)]), extensions
    )


def test_checkpoint_text_is_byte_exact() -> None:
    checkpoint = Checkpoint(
        "example.com/behind-the-sofa",
        20852163,
        base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="),
    )
    assert (
        checkpoint.text
        == "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    )
    assert Checkpoint.parse(checkpoint.text) == checkpoint
    with_ext = Checkpoint("o", 0, EMPTY_ROOT, ("ext one", "ext two"))
    assert with_ext.text == "o\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\next one\next two\n"
    assert Checkpoint.parse(with_ext.text) == with_ext


def test_checkpoint_sign_and_open(tmp_path: Path) -> None:
    signer = Ed25519FileSigner.generate(tmp_path / "k", "blackbox.example/shard-0")
    checkpoint = _checkpoint(5, ("extension",))
    note = sign_checkpoint(checkpoint, signer)
    assert open_checkpoint(note, [signer.verifier()], origin="blackbox.example/shard-0") == (
        checkpoint,
        ("blackbox.example/shard-0",),
    )
    with pytest.raises(CheckpointError) as caught:
        open_checkpoint(note, [signer.verifier()], origin="blackbox.example/shard-1")
    assert caught.value.check == "origin"


def test_checkpoint_tampering(tmp_path: Path) -> None:
    signer = Ed25519FileSigner.generate(tmp_path / "k", "blackbox.example/shard-0")
    other = Ed25519FileSigner.generate(tmp_path / "other", "blackbox.example/shard-0")
    note = sign_checkpoint(_checkpoint(5), signer)
    trusted = [signer.verifier()]
    text = _checkpoint(5).text

    cases = {
        "note_signature": [
            note.replace(b"\n5\n", b"\n6\n"),  # size changed
            note.replace(text.encode(), text.encode() + b"added extension\n"),  # extension line added
            note.replace(text.encode(), _checkpoint(4).text.encode()),  # different root and size
        ],
        "note_unknown_key": [sign_checkpoint(_checkpoint(5), other)],  # re-signed with another key
    }
    for check, notes in cases.items():
        for tampered in notes:
            with pytest.raises(CheckpointError) as caught:
                open_checkpoint(tampered, trusted)
            assert caught.value.check == check

    # A witness alone cannot vouch for the log.
    witness = Ed25519FileSigner.generate(tmp_path / "w", "witness.example")
    with pytest.raises(CheckpointError) as caught:
        open_checkpoint(sign_checkpoint(_checkpoint(5), witness), [*trusted, witness.verifier()])
    assert caught.value.check == "log_signature"


@pytest.mark.parametrize(
    ("text", "check"),
    [
        ("origin\n5\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=", "format"),
        ("origin\n5\n", "format"),
        ("\n5\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n", "origin"),
        ("origin\n05\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n", "size"),
        ("origin\n-5\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n", "size"),
        ("origin\n+5\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n", "size"),
        ("origin\n٥\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n", "size"),  # Arabic-Indic five
        ("origin\n18446744073709551616\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n", "size"),
        ("origin\n5\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU\n", "root_hash"),
        ("origin\n5\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFV=\n", "root_hash"),
        ("origin\n5\nAAAA\n", "root_hash"),
        ("origin\n5\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n\n", "extension"),
    ],
)
def test_malformed_checkpoints(text: str, check: str) -> None:
    with pytest.raises(CheckpointError) as caught:
        Checkpoint.parse(text)
    assert caught.value.check == check


def test_checkpoint_constructor_validates() -> None:
    with pytest.raises(CheckpointError):
        Checkpoint("two\nlines", 1, EMPTY_ROOT)
    with pytest.raises(CheckpointError):
        Checkpoint("o", -1, EMPTY_ROOT)
    with pytest.raises(CheckpointError):
        Checkpoint("o", 1, EMPTY_ROOT[:31])
    with pytest.raises(CheckpointError):
        Checkpoint("o", 1, EMPTY_ROOT, ("",))
    assert Checkpoint("18446744073709551615 is fine", (1 << 64) - 1, EMPTY_ROOT).size == (1 << 64) - 1
