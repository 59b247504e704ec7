"""The ClickHouse index: tables and the migrations that create them.

The index is derived data: everything in it can be rebuilt from the archive. It exists to find
sessions and to locate a session's records in the archive without reading whole partitions.
Binary values (hashes, digests) are stored as raw bytes in String columns; they cross the
client boundary as Arrow binary.
"""

from __future__ import annotations

from dataclasses import dataclass


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
