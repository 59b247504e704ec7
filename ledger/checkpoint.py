"""C2SP tlog checkpoints (https://c2sp.org/tlog-checkpoint): a log's signed tree head.

The note text is, byte for byte:

    <origin>\\n
    <tree size, decimal, no leading zeros>\\n
    <base64 root hash>\\n
    <extension line>\\n ...   (optional, opaque, non-empty)

Parsing accepts exactly what `Checkpoint.text` produces, so a checkpoint has one encoding and
re-serialising a parsed checkpoint gives back the signed bytes.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from dataclasses import dataclass

from ledger.merkle import HASH_SIZE
from ledger.note import NoteError, NoteSigner, NoteVerifier, open_note, sign_note

MAX_TREE_SIZE = (1 << 64) - 1  # sizes are uint64 everywhere else (Go, the C2SP tools)
_SIZE = re.compile(r"0|[1-9][0-9]*")


class CheckpointError(Exception):
    """A checkpoint failed to parse or verify; ``check`` says which rule it broke."""

    def __init__(self, check: str, detail: str) -> None:
        super().__init__(f"{check}: {detail}")
        self.check = check
        self.detail = detail


def _check_line(check: str, value: str) -> None:
    if not value:
        raise CheckpointError(check, "line must not be empty")
    bad = next((ch for ch in value if ch < " "), None)
    if bad is not None:
        raise CheckpointError(check, f"line contains control character {ord(bad):#04x}")


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_line("origin", self.origin)
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise CheckpointError("size", f"tree size {self.size} is not a uint64")
        if len(self.root_hash) != HASH_SIZE:
            raise CheckpointError("root_hash", f"root hash is {len(self.root_hash)} bytes, not {HASH_SIZE}")
        if not isinstance(self.extensions, tuple):  # a list would make the dataclass unhashable
            object.__setattr__(self, "extensions", tuple(self.extensions))
        for extension in self.extensions:
            _check_line("extension", extension)

    @property
    def text(self) -> str:
        """The note text, exactly as signed."""
        root_b64 = base64.b64encode(self.root_hash).decode("ascii")
        lines = [self.origin, str(self.size), root_b64, *self.extensions]
        return "".join(line + "\n" for line in lines)

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Parse a checkpoint's note text.

        Checks:
          1. the text ends with a newline and has at least three lines, none empty;
          2. the origin has no control characters;
          3. the size is ASCII decimal with no leading zeros, within uint64;
          4. the root hash is canonical base64 of 32 bytes;
          5. extension lines have no control characters.
        """
        if not text.endswith("\n"):  # 1
            raise CheckpointError("format", "checkpoint text must end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise CheckpointError("format", f"{len(lines)} lines, a checkpoint has at least 3")
        origin, size_text, root_text, *extensions = lines
        _check_line("origin", origin)  # 2
        if not _SIZE.fullmatch(size_text):  # 3
            raise CheckpointError("size", f"tree size {size_text!r} is not a decimal without leading zeros")
        size = int(size_text)
        if size > MAX_TREE_SIZE:
            raise CheckpointError("size", f"tree size {size_text} is not a uint64")
        try:  # 4
            root_hash = base64.b64decode(root_text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise CheckpointError("root_hash", f"root hash {root_text!r} is not base64") from exc
        if base64.b64encode(root_hash).decode("ascii") != root_text:
            raise CheckpointError("root_hash", f"root hash {root_text!r} is not canonical base64")
        return cls(origin, size, root_hash, tuple(extensions))  # 5 (and 2, 4 again) in __post_init__


def sign_checkpoint(checkpoint: Checkpoint, *signers: NoteSigner) -> bytes:
    """The signed note for ``checkpoint``."""
    return sign_note(checkpoint.text, *signers)


def open_checkpoint(
    data: bytes,
    verifiers: Iterable[NoteVerifier],
    *,
    origin: str | None = None,
    log_key_name: str | None = None,
) -> tuple[Checkpoint, tuple[str, ...]]:
    """Verify a signed checkpoint; return it and the names of the trusted keys that signed it.

    Checks:
      1. the note is well formed and signed by at least one trusted key, every trusted key's
         signature verifying (`ledger.note.open_note`);
      2. the text is a well-formed checkpoint (`Checkpoint.parse`);
      3. the origin is the one expected, when ``origin`` is given;
      4. the log's own key signed it: a trusted key named ``log_key_name`` (default: the origin),
         so that another log's key, or a witness's alone, cannot vouch for this log.
    """
    try:  # 1
        text, signers = open_note(data, verifiers)
    except NoteError as exc:
        raise CheckpointError(f"note_{exc.check}", exc.detail) from exc
    checkpoint = Checkpoint.parse(text)  # 2
    if origin is not None and checkpoint.origin != origin:  # 3
        raise CheckpointError("origin", f"checkpoint is for {checkpoint.origin!r}, expected {origin!r}")
    required = checkpoint.origin if log_key_name is None else log_key_name  # 4
    if required not in signers:
        raise CheckpointError(
            "log_signature", f"not signed by the log's key {required!r} (signed by {signers})"
        )
    return checkpoint, signers
