"""C2SP signed notes (https://c2sp.org/signed-note), byte-exact with golang.org/x/mod/sumdb/note.

    <text, ending in a newline>
    <blank line>
    — <key name> <base64(4-byte key ID || signature)>
    ...

The signature covers the text only (with its final newline, without the blank line), so
signature lines may come in any order and signatures by other keys (witnesses, a rotated key)
may be added without touching the text. A note is accepted when at least one signature is by a
known key (name *and* key ID) and every signature by a known key verifies; signatures by
unknown keys are ignored, as the spec requires.

This module knows the format and the Ed25519 key ID rule; keys themselves live in
`ledger.signer`, which builds on it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple, Protocol

SIGNATURE_PREFIX = "— "  # em dash U+2014, then a space
ALG_ED25519 = 0x01
MAX_SIGNATURES = 100  # the spec asks verifiers to accept at least 16; x/mod allows 100


class NoteError(Exception):
    """A note failed to open; ``check`` says which rule it broke."""

    def __init__(self, check: str, detail: str) -> None:
        super().__init__(f"{check}: {detail}")
        self.check = check
        self.detail = detail


class NoteSigner(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> int: ...

    def sign(self, message: bytes) -> bytes: ...


class NoteVerifier(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> int: ...

    def verify(self, message: bytes, signature: bytes) -> bool: ...


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: the key's name and ID, and the signature bytes after the ID."""

    name: str
    key_id: int
    signature: bytes

    def line(self) -> str:
        encoded = base64.b64encode(self.key_id.to_bytes(4, "big") + self.signature).decode("ascii")
        return f"{SIGNATURE_PREFIX}{self.name} {encoded}\n"


class OpenedNote(NamedTuple):
    """What `open_note` returns: the verified text and the names of the keys that signed it."""

    text: str
    signers: tuple[str, ...]


def key_id(name: str, algorithm: int, public_key: bytes) -> int:
    """SHA-256(name || "\\n" || algorithm byte || public key)[:4] as a big-endian uint32."""
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([algorithm]) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


def ed25519_key_id(name: str, public_key: bytes) -> int:
    if len(public_key) != 32:
        raise ValueError(f"an Ed25519 public key is 32 bytes, not {len(public_key)}")
    return key_id(name, ALG_ED25519, public_key)


def is_valid_key_name(name: str) -> bool:
    """Non-empty, with neither Unicode spaces nor "+" (and, being a note line, no control characters)."""
    return bool(name) and "+" not in name and not any(ch.isspace() or ch < " " for ch in name)


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise NoteError("format", "note text must end with a newline")
    bad = next((ch for ch in text if ch < " " and ch != "\n"), None)
    if bad is not None:
        raise NoteError("format", f"note text contains control character {ord(bad):#04x}")


def _decode_base64(text: str) -> bytes:
    """Standard base64, padded, and canonical: one encoding per byte string, so notes are byte-exact."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise NoteError("format", f"bad base64 {text!r}") from exc
    if base64.b64encode(raw).decode("ascii") != text:
        raise NoteError("format", f"non-canonical base64 {text!r}")
    return raw


def sign_note(text: str, *signers: NoteSigner) -> bytes:
    """The signed note: ``text``, a blank line, and one signature line per signer, in order."""
    _check_text(text)
    if not signers:
        raise NoteError("format", "a signed note needs at least one signer")
    message = text.encode("utf-8")
    lines: list[str] = []
    for signer in signers:
        if not is_valid_key_name(signer.name):
            raise NoteError("format", f"invalid key name {signer.name!r}")
        lines.append(NoteSignature(signer.name, signer.key_id, signer.sign(message)).line())
    return message + b"\n" + "".join(lines).encode("utf-8")


def parse_note(data: bytes) -> tuple[str, list[NoteSignature]]:
    """Split a note into its text and signature lines, checking only the format.

    Checks:
      1. the note is UTF-8 with no control characters but newlines;
      2. the last blank line separates the text from a non-empty block of lines ending in a newline;
      3. at most MAX_SIGNATURES lines;
      4. each line is "— <valid name> <canonical base64 of a 4-byte key ID and a signature>".
    """
    try:  # 1
        decoded = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NoteError("format", f"note is not UTF-8 at byte {exc.start}") from exc
    bad = next((ch for ch in decoded if ch < " " and ch != "\n"), None)
    if bad is not None:
        raise NoteError("format", f"note contains control character {ord(bad):#04x}")
    split = decoded.rfind("\n\n")  # 2
    if split < 0:
        raise NoteError("format", "no blank line before the signatures")
    text, block = decoded[: split + 1], decoded[split + 2 :]
    if not block or not block.endswith("\n"):
        raise NoteError("format", "signature block is empty or does not end with a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:  # 3
        raise NoteError("format", f"{len(lines)} signature lines, at most {MAX_SIGNATURES} accepted")
    signatures: list[NoteSignature] = []
    for number, line in enumerate(lines, start=1):  # 4
        if not line.startswith(SIGNATURE_PREFIX):
            raise NoteError("format", f"signature line {number} does not start with an em dash and a space")
        name, space, encoded = line[len(SIGNATURE_PREFIX) :].partition(" ")
        if not space or not is_valid_key_name(name):
            raise NoteError("format", f"signature line {number} has no valid key name")
        raw = _decode_base64(encoded)
        if len(raw) < 5:
            raise NoteError(
                "format", f"signature line {number} is too short to hold a key ID and a signature"
            )
        signatures.append(NoteSignature(name, int.from_bytes(raw[:4], "big"), raw[4:]))
    return text, signatures


def open_note(data: bytes, verifiers: Iterable[NoteVerifier]) -> OpenedNote:
    """Verify a note against trusted keys; return its text and the names of the keys that signed it.

    Checks, after `parse_note`'s 1-4:
      5. a trusted key is listed once for its name and key ID (no ambiguity about which to use);
      6. every signature by a trusted key verifies (one bad signature rejects the whole note);
      7. at least one trusted key signed.
    Signatures by keys not in ``verifiers`` are ignored; repeats of a verified signature count once.
    """
    text, signatures = parse_note(data)
    trusted: dict[tuple[str, int], list[NoteVerifier]] = {}
    for verifier in verifiers:
        trusted.setdefault((verifier.name, verifier.key_id), []).append(verifier)
    message = text.encode("utf-8")
    signed: list[str] = []
    seen: set[tuple[str, int]] = set()
    for signature in signatures:
        key = (signature.name, signature.key_id)
        candidates = trusted.get(key)
        if candidates is None:
            continue
        label = f"{signature.name}+{signature.key_id:08x}"
        if len(candidates) > 1:  # 5
            raise NoteError(
                "ambiguous_key", f"{label} is listed {len(candidates)} times among the trusted keys"
            )
        if not candidates[0].verify(message, signature.signature):  # 6
            raise NoteError("signature", f"invalid signature by {label}")
        if key not in seen:
            seen.add(key)
            signed.append(signature.name)
    if not signed:  # 7
        names = ", ".join(f"{s.name}+{s.key_id:08x}" for s in signatures)
        raise NoteError("unknown_key", f"no signature by a trusted key (signed by: {names})")
    return OpenedNote(text, tuple(signed))
