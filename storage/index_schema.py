"""The ClickHouse index: tables and the migrations that create them.

The index is derived data: everything in it can be rebuilt from the archive. It exists to find
sessions and to locate a session's records in the archive without reading whole partitions.
Binary values (hashes, digests) are stored as raw bytes in String columns; they cross the
client boundary as Arrow binary.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


# Inserts carry a deduplication token made from the archive object they index, so replaying a
# batch after a crash cannot index the same records twice; non-replicated MergeTree tables need
# a deduplication window for that.
_DEDUP = "SETTINGS non_replicated_deduplication_window = 10000"

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "events, sessions, segments, archive objects",
        (
            f"""
            CREATE TABLE IF NOT EXISTS events (
                session_id String,
                record_index UInt64,
                kind LowCardinality(String),
                source_seq Nullable(Int64),
                event_id String,
                event_time DateTime64(6, 'UTC'),
                body_type LowCardinality(String),
                principal String,
                identity_kind LowCardinality(String),
                target_name String,
                target_kind LowCardinality(String),
                summary String,
                record_hash String,
                prev_hash String,
                event_digest String,
                risk_score UInt8,
                finding_count UInt32,
                object_key String,
                kafka_partition UInt32,
                kafka_offset UInt64
            ) ENGINE = MergeTree ORDER BY (session_id, record_index) {_DEDUP}
            """,
            f"""
            CREATE TABLE IF NOT EXISTS sessions (
                session_id String,
                kafka_partition UInt32,
                principal String,
                identity_kind LowCardinality(String),
                issuer String,
                groups Array(String),
                target_name String,
                target_kind LowCardinality(String),
                target_host String,
                target_database String,
                gateway_id String,
                gateway_product String,
                gateway_version String,
                started_at DateTime64(6, 'UTC'),
                last_event_at DateTime64(6, 'UTC'),
                record_count UInt64,
                last_seq Int64,
                head_hash String,
                sealed UInt8,
                seal_reason String,
                missing_first Array(Int64),
                missing_last Array(Int64),
                gap_count UInt32,
                fork_count UInt32,
                max_risk UInt8,
                total_risk UInt64,
                version UInt64
            ) ENGINE = ReplacingMergeTree(version) ORDER BY session_id {_DEDUP}
            """,
            f"""
            CREATE TABLE IF NOT EXISTS segments (
                session_id String,
                first_index UInt64,
                last_index UInt64,
                record_count UInt32,
                object_key String,
                header_length UInt32,
                block_offset UInt64,
                block_length UInt64
            ) ENGINE = MergeTree ORDER BY (session_id, first_index) {_DEDUP}
            """,
            f"""
            CREATE TABLE IF NOT EXISTS archive_objects (
                kafka_partition UInt32,
                first_offset UInt64,
                last_offset UInt64,
                object_key String,
                record_count UInt32,
                byte_size UInt64,
                header_length UInt32
            ) ENGINE = MergeTree ORDER BY (kafka_partition, first_offset) {_DEDUP}
            """,
        ),
    ),
    Migration(
        2,
        "identity behaviour state of the risk scorer",
        (
            # The newest state of each identity wins; older rows are merged away in the
            # background. Unlike the tables above this is not derived from the archive: it is the
            # scorer's memory of each identity's habits, shared by every worker.
            """
            CREATE TABLE IF NOT EXISTS identity_behaviour (
                identity_key String,
                state String,
                updated_at DateTime64(6, 'UTC'),
                writer String
            ) ENGINE = ReplacingMergeTree(updated_at) ORDER BY identity_key
            """,
        ),
    ),
)

SCHEMA_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version UInt32,
    description String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = MergeTree ORDER BY version
"""


# The rows the seal pipeline inserts, as Arrow schemas: one per table above, column for column.
EVENTS_ARROW = pa.schema(
    [
        ("session_id", pa.string()),
        ("record_index", pa.uint64()),
        ("kind", pa.string()),
        ("source_seq", pa.int64()),
        ("event_id", pa.string()),
        ("event_time", pa.timestamp("us", tz="UTC")),
        ("body_type", pa.string()),
        ("principal", pa.string()),
        ("identity_kind", pa.string()),
        ("target_name", pa.string()),
        ("target_kind", pa.string()),
        ("summary", pa.string()),
        ("record_hash", pa.binary()),
        ("prev_hash", pa.binary()),
        ("event_digest", pa.binary()),
        ("risk_score", pa.uint8()),
        ("finding_count", pa.uint32()),
        ("object_key", pa.string()),
        ("kafka_partition", pa.uint32()),
        ("kafka_offset", pa.uint64()),
    ]
)

SESSIONS_ARROW = pa.schema(
    [
        ("session_id", pa.string()),
        ("kafka_partition", pa.uint32()),
        ("principal", pa.string()),
        ("identity_kind", pa.string()),
        ("issuer", pa.string()),
        ("groups", pa.list_(pa.string())),
        ("target_name", pa.string()),
        ("target_kind", pa.string()),
        ("target_host", pa.string()),
        ("target_database", pa.string()),
        ("gateway_id", pa.string()),
        ("gateway_product", pa.string()),
        ("gateway_version", pa.string()),
        ("started_at", pa.timestamp("us", tz="UTC")),
        ("last_event_at", pa.timestamp("us", tz="UTC")),
        ("record_count", pa.uint64()),
        ("last_seq", pa.int64()),
        ("head_hash", pa.binary()),
        ("sealed", pa.uint8()),
        ("seal_reason", pa.string()),
        ("missing_first", pa.list_(pa.int64())),
        ("missing_last", pa.list_(pa.int64())),
        ("gap_count", pa.uint32()),
        ("fork_count", pa.uint32()),
        ("max_risk", pa.uint8()),
        ("total_risk", pa.uint64()),
        ("version", pa.uint64()),
    ]
)

SEGMENTS_ARROW = pa.schema(
    [
        ("session_id", pa.string()),
        ("first_index", pa.uint64()),
        ("last_index", pa.uint64()),
        ("record_count", pa.uint32()),
        ("object_key", pa.string()),
        ("header_length", pa.uint32()),
        ("block_offset", pa.uint64()),
        ("block_length", pa.uint64()),
    ]
)

ARCHIVE_OBJECTS_ARROW = pa.schema(
    [
        ("kafka_partition", pa.uint32()),
        ("first_offset", pa.uint64()),
        ("last_offset", pa.uint64()),
        ("object_key", pa.string()),
        ("record_count", pa.uint32()),
        ("byte_size", pa.uint64()),
        ("header_length", pa.uint32()),
    ]
)
