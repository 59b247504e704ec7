"""`blackbox verify`: offline verification of an archive with nothing but the ledger's public key.

    blackbox verify ARCHIVE_URI --public-key FILE [--session ID | --proof FILE]
                    [--since-checkpoint FILE] [--save-checkpoint FILE] [--jobs N] [--deep]

ARCHIVE_URI is a directory, ``file://DIR`` or ``s3://BUCKET[/PREFIX]`` (credentials from the
usual AWS sources; ``--s3-endpoint`` for MinIO or a local emulator). With ``--proof`` the archive
may be omitted: the proof file alone is checked against the public key.

Progress goes to stderr, the summary to stdout. Exit status: 0 verified, 1 a check failed (the
first failure is printed with its location), 2 the archive, key or a file could not be read.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from storage.objectstore import ObjectStore

# The verifier's own modules are imported when the command runs: building the CLI's parser for
# any other command must not load Avro, boto3 and the ledger.

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_UNREADABLE = 2


class _Unreadable(Exception):
    """Something to verify could not be read at all (not a verification failure)."""


def add_verify_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``verify`` command to the CLI's subparsers (``handler`` is `run_verify`)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "verify",
        help="verify an archive, a session or a proof file offline with the ledger's public key",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("archive", nargs="?", help="DIR, file://DIR or s3://BUCKET[/PREFIX]")
    parser.add_argument("--public-key", type=Path, required=True, help="the ledger's verifier key file")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--session", help="verify one session only")
    which.add_argument("--proof", type=Path, help="verify one .tlog-proof file")
    parser.add_argument(
        "--since-checkpoint",
        type=Path,
        help="a signed checkpoint kept from an earlier run: fail if the log no longer extends it",
    )
    parser.add_argument(
        "--save-checkpoint", type=Path, help="after success, write the latest log-of-logs checkpoint here"
    )
    parser.add_argument("--s3-endpoint", help="S3 endpoint URL (MinIO, a local emulator)")
    parser.add_argument(
        "--deep", action="store_true", help="also decode every record with Avro (slow; whole archive only)"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        help="verify this many shards at once, in processes (default: one per CPU)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.set_defaults(handler=run_verify)
    return parser


def open_archive_uri(uri: str, s3_endpoint: str | None = None) -> ObjectStore:
    """A read-only view of an archive: a local directory or an S3 bucket (prefix)."""
    from storage.objectstore import LocalWormStore, S3ObjectStore  # noqa: PLC0415

    url = urlsplit(uri)
    if url.scheme == "s3":
        if not url.netloc:
            raise _Unreadable(f"no bucket in {uri!r}")
        # Verification only reads: no retention to apply, and Object Lock is not ours to demand.
        return S3ObjectStore(
            url.netloc,
            prefix=url.path.lstrip("/"),
            endpoint_url=s3_endpoint,
            retention=None,
            require_worm=False,
        )
    if url.scheme not in ("", "file"):
        raise _Unreadable(f"archive must be a directory, file://DIR or s3://BUCKET[/PREFIX], not {uri!r}")
    directory = Path(url.netloc + url.path) if url.scheme == "file" else Path(uri)
    if not directory.is_dir():
        raise _Unreadable(f"no archive directory at {directory}")
    return LocalWormStore(directory, retention=None)


class _Progress:
    """One rewritten stderr line, at most a few times a second."""

    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self._stream = stream
        self._enabled = enabled
        self._last = 0.0
        self._width = 0

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if not self._enabled or (now - self._last < 0.25 and done != total):
            return
        self._last = now
        line = f"{stage}: {done}/{total}" if total else stage
        self._stream.write("\r" + line.ljust(self._width))
        self._width = len(line)
        self._stream.flush()

    def done(self) -> None:
        if self._enabled and self._width:
            self._stream.write("\r" + " " * self._width + "\r")
            self._stream.flush()


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise _Unreadable(f"cannot read the {what} {path}: {exc}") from exc


def run_verify(
    args: argparse.Namespace, *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """The command: 0 verified, 1 a check failed, 2 something could not be read."""
    from ledger.signer import InvalidKey, Verifier  # noqa: PLC0415
    from replay.audit import audit_archive, audit_proof, audit_session  # noqa: PLC0415
    from replay.proofs import VerificationFailed  # noqa: PLC0415
    from storage.objectstore import ObjectStoreError  # noqa: PLC0415

    out = stdout or sys.stdout
    err = stderr or sys.stderr
    progress = _Progress(err, enabled=not args.quiet)
    try:
        try:
            public_key = Verifier.load(args.public_key)
        except (OSError, InvalidKey) as exc:
            raise _Unreadable(f"cannot load the public key {args.public_key}: {exc}") from exc
        kept = _read(args.since_checkpoint, "kept checkpoint") if args.since_checkpoint else None
        if args.proof is not None:
            store = open_archive_uri(args.archive, args.s3_endpoint) if args.archive else None
            text = _read(args.proof, "proof file").decode("utf-8", errors="replace")
            print(audit_proof(text, public_key, store=store, kept_checkpoint=kept).summary(), file=out)
            return EXIT_OK
        if not args.archive:
            raise _Unreadable("give the archive to verify (or --proof FILE)")
        store = open_archive_uri(args.archive, args.s3_endpoint)
        if args.session is not None:
            session = audit_session(store, public_key, args.session, kept_checkpoint=kept, progress=progress)
            progress.done()
            print(session.summary(), file=out)
            return EXIT_OK
        report = audit_archive(
            store,
            public_key,
            kept_checkpoint=kept,
            progress=progress,
            deep=args.deep,
            jobs=max(1, args.jobs),
            reopen=lambda: open_archive_uri(args.archive, args.s3_endpoint),  # an S3 client per process
        )
        progress.done()
        print(report.summary(), file=out)
        if args.save_checkpoint is not None and report.root is not None:
            args.save_checkpoint.write_bytes(report.root.note)
            print(f"  kept the log-of-logs checkpoint in {args.save_checkpoint}", file=out)
        return EXIT_OK
    except VerificationFailed as exc:
        progress.done()
        print(f"FAILED {exc.describe()}", file=out)
        return EXIT_FAILED
    except (_Unreadable, ObjectStoreError) as exc:
        progress.done()
        print(f"blackbox verify: {exc}", file=err)
        return EXIT_UNREADABLE
