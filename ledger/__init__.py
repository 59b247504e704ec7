"""Tamper-evidence maths shared by the writer (streams) and the verifier (replay): the per-session
hash chain, the RFC 6962 Merkle log and proofs, C2SP signed notes, checkpoints and tiles, and the
checkpoint signer. Pure functions, except that `signer` reads and writes key files and `tiles` calls
the read function it is given, and `log` (the shard and root logs) reads the archive through
`storage`; imports only the standard library, `cryptography`, `schemas` and `storage`."""

# First: importing it refuses a build older than these sources (blackbox/compiled.py, which
# imports only the standard library).
import blackbox.compiled  # noqa: F401
