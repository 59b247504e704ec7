"""The Avro contract with gateways: `.avsc` files, single-object encoding, fingerprints.

Owns the wire format only; imports nothing else of Blackbox.
"""

# First: importing it refuses a build older than these sources (blackbox/compiled.py, which
# imports only the standard library).
import blackbox.compiled  # noqa: F401
from schemas.codec import (
    BATCH_SCHEMA,
    EVENT_SCHEMA,
    SEALED_BATCH_SCHEMA,
    SEALED_SCHEMA,
    Decoded,
    EventsMessage,
    NotSingleObject,
    SchemaError,
    SchemaRegistry,
    UnknownFingerprint,
    default_registry,
)

__all__ = [
    "BATCH_SCHEMA",
    "EVENT_SCHEMA",
    "SEALED_BATCH_SCHEMA",
    "SEALED_SCHEMA",
    "Decoded",
    "EventsMessage",
    "NotSingleObject",
    "SchemaError",
    "SchemaRegistry",
    "UnknownFingerprint",
    "default_registry",
]
