"""The Avro contract with gateways: `.avsc` files, single-object encoding, fingerprints.

Owns the wire format only; imports nothing else of Blackbox.
"""

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
