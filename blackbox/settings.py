"""One validated settings object per process, read from BLACKBOX_* environment variables.

Nothing else reads os.environ. Unsafe production choices (no WORM, no token key, archive
without retention) are refused at start, not discovered during an audit.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConfigurationError(ValueError):
    """What the settings name is missing or unusable (a key file, a URL); the message says what to
    set. Raised while wiring a process, reported by the CLI without a traceback."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BLACKBOX_", extra="ignore")

    environment: Literal["dev", "production"] = "production"

    # Kafka
    kafka_bootstrap: str = "127.0.0.1:9092"
    topic_partitions: int = Field(4, ge=1, le=1024)
    consumer_group: str = "blackbox-seal"
    events_topic: str = "blackbox.events"
    sealed_topic: str = "blackbox.sealed"
    dlq_topic: str = "blackbox.dlq"
    alerts_topic: str = "blackbox.alerts"
    kafka_session_timeout_seconds: float = Field(30.0, gt=0)
    # The longest a fetch waits for data (Faust's own is 1.5 s). Kafka answers as soon as data is
    # there; Tansu holds each fetch for about half of this, so it bounds the worker's latency.
    kafka_fetch_max_wait_ms: int = Field(100, ge=0, le=30_000)
    # Partition of the archive key space: a recreated events topic restarts its offsets at 0,
    # so it must get a new epoch or its objects would collide with the old topic's.
    source_epoch: str = Field("e1", pattern=r"^[A-Za-z0-9_.-]{1,64}$")

    # Archive (the evidence)
    archive_url: str = "file://./.blackbox/archive"
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    require_worm: bool = True
    retention_mode: Literal["COMPLIANCE", "GOVERNANCE"] = "COMPLIANCE"
    retention_days: int = Field(2555, ge=1)  # seven years: the usual HIPAA documentation horizon

    # Index
    index_url: str = "chdb://./.blackbox/index"

    # Seal worker
    batch_max_messages: int = Field(1000, ge=1)
    batch_within_seconds: float = Field(0.5, gt=0)
    max_message_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    # Seal (decode, mask, score, chain) in a process of its own when masking or scoring is on,
    # beside the worker's archiving, indexing and ledger (streams/sealer.py); false: in the worker.
    # Unset: a process of its own when this process may run on two cores or more.
    seal_process: bool | None = None
    # Child processes that decode (0: in the worker). They pay off only with idle cores: on a
    # saturated 2-core machine the hand-off costs more than it saves.
    decode_processes: int = Field(0, ge=0, le=64)
    idle_timeout_seconds: float = Field(1800.0, gt=0)
    idle_check_seconds: float = Field(5.0, gt=0)
    # Terminal bytes the masker holds back (an unfinished token) keep their message, and every
    # later message of its partition, uncommitted; after this long they are put on record.
    hold_flush_seconds: float = Field(15.0, gt=0)
    dlq_limit: int = Field(1000, ge=1, description="dead letters allowed per dlq_window_seconds")
    dlq_window_seconds: float = Field(60.0, gt=0)
    # Keep the risk scorer's per-identity behaviour state in the index (else memory only,
    # and every identity's baseline warms up again after a restart).
    persist_behaviour: bool = True

    # API
    api_host: str = "127.0.0.1"
    api_port: int = Field(8080, ge=0, le=65535)
    # Put every auditor's read of session content on record (an HttpExchange in a session of
    # their own, on events_topic) before answering it; invariant 7. Off: reads are not audited.
    audit_reads: bool = True
    jwt_public_key_file: Path | None = None
    jwt_jwks_url: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = "blackbox"

    data_dir: Path = Path(".blackbox")
    # Masking: HMAC key of the blind index (findings searchable without storing values), and an
    # optional policy file replacing the shipped default.
    blind_index_key: SecretStr | None = None
    masking_policy_file: Path | None = None
    # Off only to measure the bare seal path (`blackbox bench pipeline --seal-only`); production
    # refuses to run without masking.
    masking_enabled: bool = True
    scoring_enabled: bool = True

    # Ledger: every sealed record a leaf of its shard's Merkle log, signed checkpoints in the
    # archive. The key is provisioned by operators (dev creates one); rotating it means a new
    # log name, so that the new key starts a new origin.
    ledger_enabled: bool = True
    ledger_log_name: str = Field(
        "blackbox.local", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$"
    )
    ledger_key_file: Path | None = None
    ledger_public_key_file: Path | None = None
    ledger_checkpoint_interval_seconds: float = Field(1.0, gt=0)
    ledger_idle_checkpoint_seconds: float = Field(60.0, gt=0)
    # Run the ledger in a child process of the worker. It pays off only with idle cores: on the
    # saturated 2-core bench machine the worker sealed 12-13k events/s with the ledger in its own
    # process and 11.6k with it in a child (same runs).
    ledger_process: bool = False

    log_level: str = "INFO"

    @field_validator("source_epoch")
    @classmethod
    def _epoch_is_not_a_ledger_name(cls, epoch: str) -> str:
        # Archive keys start with the epoch; these two would collide with the ledger's own keys.
        if epoch in ("root", "ledger") or set(epoch) == {"."}:
            raise ValueError(f"source_epoch {epoch!r} is reserved")
        return epoch

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if self.environment != "production":
            return self
        problems = []
        if not self.require_worm:
            problems.append("BLACKBOX_REQUIRE_WORM=false: evidence could be deleted")
        if self.archive_url.startswith("file://") and self.retention_mode != "COMPLIANCE":
            problems.append("a local archive supports COMPLIANCE retention only")
        if self.blind_index_key is None or len(self.blind_index_key.get_secret_value()) < 32:
            problems.append("set BLACKBOX_BLIND_INDEX_KEY (at least 32 characters, e.g. 64 hex digits)")
        if self.jwt_public_key_file is None and self.jwt_jwks_url is None:
            problems.append("set BLACKBOX_JWT_PUBLIC_KEY_FILE or BLACKBOX_JWT_JWKS_URL")
        if not self.masking_enabled:
            problems.append(
                "BLACKBOX_MASKING_ENABLED=false: personal and secret data would be stored in clear"
            )
        if self.ledger_enabled and self.ledger_key_file is None and self.ledger_public_key_file is None:
            problems.append(
                "set BLACKBOX_LEDGER_KEY_FILE (worker) or BLACKBOX_LEDGER_PUBLIC_KEY_FILE (API),"
                " or BLACKBOX_LEDGER_ENABLED=false"
            )
        if problems:
            raise ValueError("unsafe production settings: " + "; ".join(problems))
        return self


def cores_available() -> int:
    """The cores this process may run on (its CPU affinity, where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def seals_in_a_process(settings: Settings) -> bool:
    """Whether the worker seals in a process of its own (``seal_process``, or by the cores)."""
    wanted = settings.seal_process if settings.seal_process is not None else cores_available() >= 2
    return wanted and (settings.masking_enabled or settings.scoring_enabled)
