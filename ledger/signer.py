"""Checkpoint signing keys: the `Signer` interface, an Ed25519 key file, and `Verifier`.

The ledger signs through `Signer` only, so a KMS- or HSM-backed signer can replace the key file
without touching the ledger. Key files use the golang.org/x/mod/sumdb/note encodings, which
carry the key's name:

    private: PRIVATE+KEY+<name>+<hex key ID>+<base64(0x01 || 32-byte seed)>
    public:  <name>+<hex key ID>+<base64(0x01 || 32-byte public key)>

PKCS#8 / SubjectPublicKeyInfo PEM files are accepted too (the name is then given separately), so
keys made with `openssl genpkey -algorithm ed25519` work. This is the one module in `ledger`
that touches files.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import stat
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ledger.note import ALG_ED25519, ed25519_key_id, is_valid_key_name

logger = logging.getLogger(__name__)

PRIVATE_KEY_PREFIX = "PRIVATE+KEY+"


class InvalidKey(ValueError):
    """A key string or key file that cannot be used; says what is wrong (never the key itself)."""


class Signer(Protocol):
    """Signs checkpoints. ``name`` and ``key_id`` go on the note's signature line."""

    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> int: ...

    @property
    def public_key(self) -> bytes: ...

    def sign(self, message: bytes) -> bytes: ...


def _decode_key_material(encoded: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidKey(f"{what}: key material is not base64") from exc
    if len(raw) != 33 or raw[0] != ALG_ED25519:
        raise InvalidKey(f"{what}: expected an Ed25519 key (algorithm 1, 32 bytes)")
    return raw[1:]


def _parse_key_id(text: str, what: str) -> int:
    if len(text) != 8 or any(ch not in "0123456789abcdefABCDEF" for ch in text):
        raise InvalidKey(f"{what}: key ID must be 8 hex digits")
    return int(text, 16)


def _check_name(name: str, what: str) -> None:
    if not is_valid_key_name(name):
        raise InvalidKey(f"{what}: invalid key name {name!r} (empty, or has spaces or '+')")


def _raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass(frozen=True)
class Verifier:
    """A trusted Ed25519 public key with its note name; satisfies `ledger.note.NoteVerifier`."""

    name: str
    public_key: bytes

    def __post_init__(self) -> None:
        _check_name(self.name, "verifier")
        if len(self.public_key) != 32:
            raise InvalidKey(f"verifier {self.name}: an Ed25519 public key is 32 bytes")

    @property
    def key_id(self) -> int:
        return ed25519_key_id(self.name, self.public_key)

    @property
    def vkey(self) -> str:
        """The note verifier key string: <name>+<hex key ID>+<base64(0x01 || public key)>."""
        material = base64.b64encode(bytes([ALG_ED25519]) + self.public_key).decode("ascii")
        return f"{self.name}+{self.key_id:08x}+{material}"

    @cached_property
    def _key(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(self.public_key)

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            self._key.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    @classmethod
    def from_vkey(cls, vkey: str) -> Verifier:
        """Parse a note verifier key, checking that its key ID matches its name and key."""
        name, _, rest = vkey.strip().partition("+")
        id_text, _, material = rest.partition("+")
        _check_name(name, "verifier key")
        expected = _parse_key_id(id_text, f"verifier key {name}")
        verifier = cls(name, _decode_key_material(material, f"verifier key {name}"))
        if verifier.key_id != expected:
            raise InvalidKey(f"verifier key {name}: key ID {id_text} does not match the key")
        return verifier

    @classmethod
    def load(cls, path: str | os.PathLike[str], name: str | None = None) -> Verifier:
        """From a file holding a verifier key string, or an Ed25519 public key PEM plus ``name``."""
        text = Path(path).read_text(encoding="ascii").strip()
        if not text.startswith("-----BEGIN"):
            verifier = cls.from_vkey(text)
            if name is not None and verifier.name != name:
                raise InvalidKey(f"{path}: key is named {verifier.name!r}, expected {name!r}")
            return verifier
        if name is None:
            raise InvalidKey(f"{path}: a PEM public key carries no name; give one")
        key = serialization.load_pem_public_key(text.encode("ascii"))
        if not isinstance(key, Ed25519PublicKey):
            raise InvalidKey(f"{path}: not an Ed25519 public key")
        return cls(name, key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


class Ed25519FileSigner:
    """An Ed25519 signing key held in memory, loaded from or generated into a 0600 key file."""

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        _check_name(name, "signer")
        self._name = name
        self._key = private_key
        self._public = _raw_public(private_key)
        self._key_id = ed25519_key_id(name, self._public)

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_id(self) -> int:
        return self._key_id

    @property
    def public_key(self) -> bytes:
        return self._public

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def verifier(self) -> Verifier:
        return Verifier(self._name, self._public)

    @property
    def vkey(self) -> str:
        return self.verifier().vkey

    def skey(self) -> str:
        """The note signer key string (secret): PRIVATE+KEY+<name>+<hex key ID>+<base64(0x01 || seed)>."""
        seed = self._key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        material = base64.b64encode(bytes([ALG_ED25519]) + seed).decode("ascii")
        return f"{PRIVATE_KEY_PREFIX}{self._name}+{self._key_id:08x}+{material}"

    def __repr__(self) -> str:  # never the key
        return f"Ed25519FileSigner({self._name}+{self._key_id:08x})"

    @classmethod
    def from_skey(cls, skey: str) -> Ed25519FileSigner:
        """Parse a note signer key; its key ID must match the public key derived from the seed."""
        text = skey.strip()
        if not text.startswith(PRIVATE_KEY_PREFIX):
            raise InvalidKey(f"signer key must start with {PRIVATE_KEY_PREFIX!r}")
        name, _, rest = text[len(PRIVATE_KEY_PREFIX) :].partition("+")
        id_text, _, material = rest.partition("+")
        _check_name(name, "signer key")
        expected = _parse_key_id(id_text, f"signer key {name}")
        seed = _decode_key_material(material, f"signer key {name}")
        signer = cls(name, Ed25519PrivateKey.from_private_bytes(seed))
        if signer.key_id != expected:
            raise InvalidKey(f"signer key {name}: key ID {id_text} does not match the key")
        return signer

    @classmethod
    def load(cls, path: str | os.PathLike[str], name: str | None = None) -> Ed25519FileSigner:
        """From a note signer key file, or a PKCS#8 PEM (unencrypted) plus ``name``."""
        key_path = Path(path)
        mode = stat.S_IMODE(key_path.stat().st_mode)
        if mode & 0o077:
            # Mounted secrets are often 0644 in containers; say so loudly rather than refuse.
            logger.warning("signing key %s is readable by others (mode %04o); expected 0600", key_path, mode)
        text = key_path.read_text(encoding="ascii").strip()
        if not text.startswith("-----BEGIN"):
            signer = cls.from_skey(text)
            if name is not None and signer.name != name:
                raise InvalidKey(f"{key_path}: key is named {signer.name!r}, expected {name!r}")
            return signer
        if name is None:
            raise InvalidKey(f"{key_path}: a PEM private key carries no name; give one")
        key = serialization.load_pem_private_key(text.encode("ascii"), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise InvalidKey(f"{key_path}: not an Ed25519 private key")
        return cls(name, key)

    @classmethod
    def generate(cls, path: str | os.PathLike[str], name: str, *, pem: bool = False) -> Ed25519FileSigner:
        """Create a new key and write it to ``path`` (mode 0600, never overwriting a file)."""
        signer = cls(name, Ed25519PrivateKey.generate())
        if pem:
            text = signer._key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ).decode("ascii")
        else:
            text = signer.skey() + "\n"
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="ascii") as handle:
            os.fchmod(handle.fileno(), 0o600)  # the umask may not have left it at 0600
            handle.write(text)
        logger.info("generated signing key %s+%08x at %s", signer.name, signer.key_id, path)
        return signer
