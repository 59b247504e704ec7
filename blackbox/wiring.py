"""The one place that turns settings into concrete stores, clients and processors."""

from __future__ import annotations

import importlib.metadata
import logging
import os
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

import faust

from api.access_log import AccessNotRecorded, KafkaAccessLog
from api.auth import TokenVerifier
from blackbox.settings import ConfigurationError, Settings, seals_in_a_process
from ledger.signer import InvalidKey, Signer, Verifier
from masking.engine import MaskingEngine
from masking.event_masker import EventMasker
from masking.policy import PolicyError, load_default_policy, load_policy
from replay.proofs import ProofService
from risk.policy import default_policy
from risk.scorer import RiskScorer, StatefulScorer
from schemas import SchemaRegistry, default_registry
from storage.index import Index, open_index
from storage.objectstore import LocalWormStore, ObjectStore, Retention, S3ObjectStore
from streams.app import WorkerConfig, WorkerMetrics, build_app
from streams.behaviour_store import PersistentScorerState
from streams.ledger_agent import (
    LedgerHandle,
    LedgerProcess,
    LedgerService,
    drive_ledger,
    ledger_signer,
    public_key_file,
)
from streams.pipeline import PipelineConfig, SealPipeline
from streams.score import AlertThreshold, NoScoring
from streams.seal import SealStep
from streams.sealer import Sealer, SealParts, SealProcess

logger = logging.getLogger(__name__)


def open_archive(settings: Settings) -> ObjectStore:
    """The WORM store named by ``archive_url``: ``file://DIR`` or ``s3://BUCKET[/PREFIX]``."""
    retention = Retention(settings.retention_mode, settings.retention_days)
    url = urlsplit(settings.archive_url)
    if url.scheme == "file":
        return LocalWormStore(Path(url.netloc + url.path), retention=retention)
    if url.scheme == "s3":
        secret = settings.s3_secret_access_key
        return S3ObjectStore(
            url.netloc,
            prefix=url.path.lstrip("/"),
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=secret.get_secret_value() if secret else None,
            retention=retention,
            require_worm=settings.require_worm,
        )
    raise ConfigurationError(
        f"archive_url must be file://DIR or s3://BUCKET[/PREFIX], not {settings.archive_url!r}"
    )


def build_token_verifier(settings: Settings) -> TokenVerifier:
    """How the API checks bearer tokens: a public key file or a JWKS URL, issuer and audience."""
    key = settings.jwt_public_key_file.read_bytes() if settings.jwt_public_key_file else None
    return TokenVerifier(
        public_key_pem=key,
        jwks_url=settings.jwt_jwks_url,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
    )


def open_migrated_index(settings: Settings) -> Index:
    index = open_index(settings.index_url)
    applied = index.migrate()
    if applied:
        logger.info("index migrations applied: %s", applied)
    return index


def blind_index_key(settings: Settings) -> bytes:
    """The configured key, or (dev only) one generated once and kept in the data directory."""
    if settings.blind_index_key is not None:
        return settings.blind_index_key.get_secret_value().encode()
    if settings.environment != "dev":
        raise ConfigurationError("BLACKBOX_BLIND_INDEX_KEY is required outside dev")
    path = settings.data_dir / "keys" / "blind-index.key"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(descriptor, "wb") as out:
        out.write(secrets.token_hex(32).encode())
    return path.read_bytes().strip()


def build_masker(settings: Settings) -> EventMasker:
    try:
        policy = (
            load_policy(settings.masking_policy_file)
            if settings.masking_policy_file
            else load_default_policy()
        )
    except PolicyError as exc:
        raise ConfigurationError(f"BLACKBOX_MASKING_POLICY_FILE: {exc}") from None
    return EventMasker(MaskingEngine(policy, blind_index_key(settings)))


def seal_parts(settings: Settings, registry: SchemaRegistry | None = None) -> SealParts:
    """The seal step as settings say (masking, scoring), with what keeps its state; ``registry``:
    the caller's, or one of its own (in a seal process)."""
    registry = registry or default_registry()
    scorer = StatefulScorer(default_policy()) if settings.scoring_enabled else None
    masker = build_masker(settings) if settings.masking_enabled else None
    return SealParts(registry, SealStep(registry, masker=masker, scorer=scorer), scorer)


def build_pipeline(
    settings: Settings, store: ObjectStore, index: Index, registry: SchemaRegistry, seal: SealStep | Sealer
) -> SealPipeline:
    """The seal pipeline, sealing with ``seal``: the step itself, or a seal process."""
    config = PipelineConfig(
        epoch=settings.source_epoch,
        max_message_bytes=settings.max_message_bytes,
        dlq_limit=settings.dlq_limit,
        dlq_window_seconds=settings.dlq_window_seconds,
        decode_processes=settings.decode_processes,
        decode_ahead_limit=settings.batch_max_messages,
    )
    return SealPipeline(registry, seal, store, index, config)


@dataclass
class Worker:
    """A seal worker ready to run: its Faust app, the pipeline to close, its gauges."""

    app: faust.App
    pipeline: SealPipeline
    metrics: WorkerMetrics
    ledger: LedgerHandle | None

    def gauges(self) -> dict[str, float]:
        return {**self.metrics.gauges(), **(self.ledger.gauges() if self.ledger else {})}

    def close(self) -> None:
        self.pipeline.close()
        if isinstance(self.ledger, LedgerProcess):
            self.ledger.close()


def build_worker(
    settings: Settings,
    store: ObjectStore,
    index: Index,
    *,
    data_dir: Path | None = None,
    on_started: Callable[[], Awaitable[None]] | None = None,
) -> Worker:
    """The seal agent (with the behaviour store) and the ledger agent on one app, as settings say."""
    registry = default_registry()
    scorer: PersistentScorerState | None
    seal: SealStep | Sealer
    if seals_in_a_process(settings):
        # Masking and scoring are most of the CPU per event: beside the worker, not in its GIL.
        # Which records alert is the policy's threshold (the one `seal_parts` gives the child's
        # scorer): the worker decides it without the child.
        alerts: AlertThreshold = RiskScorer(default_policy()) if settings.scoring_enabled else NoScoring()
        process = SealProcess(partial(seal_parts, settings), alerts=alerts)
        seal, scorer = process, process if settings.scoring_enabled else None
    else:
        parts = seal_parts(settings, registry)
        seal, scorer = parts.step, parts.scorer
    pipeline = build_pipeline(settings, store, index, registry, seal)
    metrics = WorkerMetrics()
    app = build_app(
        worker_config(settings, data_dir or settings.data_dir),
        pipeline,
        registry,
        metrics=metrics,
        on_started=on_started,
        behaviour=scorer if settings.persist_behaviour else None,
    )
    return Worker(app, pipeline, metrics, attach_ledger_from_settings(app, settings, store))


def worker_config(settings: Settings, data_dir: Path) -> WorkerConfig:
    return WorkerConfig(
        bootstrap=settings.kafka_bootstrap,
        data_dir=data_dir,
        app_id=settings.consumer_group,
        events_topic=settings.events_topic,
        sealed_topic=settings.sealed_topic,
        dlq_topic=settings.dlq_topic,
        alerts_topic=settings.alerts_topic,
        partitions=settings.topic_partitions,
        batch_max_messages=settings.batch_max_messages,
        batch_within_seconds=settings.batch_within_seconds,
        max_message_bytes=settings.max_message_bytes,
        session_timeout_seconds=settings.kafka_session_timeout_seconds,
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        idle_timeout_seconds=settings.idle_timeout_seconds,
        idle_check_seconds=settings.idle_check_seconds,
        hold_flush_seconds=settings.hold_flush_seconds,
    )


def ledger_key_path(settings: Settings) -> Path:
    """The ledger's signing key: the configured file, or (dev only) one kept in the data dir."""
    if settings.ledger_key_file is not None:
        return settings.ledger_key_file
    if settings.environment != "dev":
        raise ConfigurationError("BLACKBOX_LEDGER_KEY_FILE is required outside dev")
    return settings.data_dir / "keys" / "ledger.key"


def ledger_public_key_path(settings: Settings) -> Path:
    """What the API and auditors verify with: the configured public key, else the signer's."""
    if settings.ledger_public_key_file is not None:
        return settings.ledger_public_key_file
    return public_key_file(ledger_key_path(settings))


def attach_ledger_from_settings(
    app: faust.App, settings: Settings, store: ObjectStore
) -> LedgerHandle | None:
    """The ledger agent on the worker's app, or None when the ledger is switched off."""
    if not settings.ledger_enabled:
        logger.warning("the ledger is disabled: archived records are not covered by signed checkpoints")
        return None
    # Here, not in a ledger process: dev makes its key now, before the API looks for the public half.
    signer = _ledger_signer(settings, create=settings.environment == "dev")
    ledger: LedgerHandle
    if settings.ledger_process:
        ledger = LedgerProcess(partial(open_ledger_service, settings), log_level=logging.getLogger().level)
    else:
        ledger = _ledger_service(settings, store, signer)
    drive_ledger(
        app,
        ledger,
        sealed_topic=settings.sealed_topic,
        tick_seconds=settings.ledger_checkpoint_interval_seconds,
    )
    return ledger


def open_ledger_service(settings: Settings) -> LedgerService:
    """The ledger with a store client of its own (what a ledger process runs)."""
    return _ledger_service(settings, open_archive(settings), _ledger_signer(settings, create=False))


def _ledger_service(settings: Settings, store: ObjectStore, signer: Signer) -> LedgerService:
    return LedgerService(
        store,
        signer,
        settings.source_epoch,
        checkpoint_interval_seconds=settings.ledger_checkpoint_interval_seconds,
        idle_checkpoint_seconds=settings.ledger_idle_checkpoint_seconds,
    )


def _ledger_signer(settings: Settings, *, create: bool) -> Signer:
    try:
        return ledger_signer(ledger_key_path(settings), settings.ledger_log_name, create=create)
    except InvalidKey as exc:
        raise ConfigurationError(f"ledger key: {exc}") from exc


def open_proofs(settings: Settings, index: Index, store: ObjectStore) -> ProofService | None:
    """Inclusion proofs for the API, or None when the ledger is off. The API holds only the
    public key: it proves what the worker signed and can sign nothing itself."""
    if not settings.ledger_enabled:
        return None
    path = ledger_public_key_path(settings)
    if not path.exists():
        raise ConfigurationError(
            f"no ledger public key at {path}: start the worker first or set BLACKBOX_LEDGER_PUBLIC_KEY_FILE"
        )
    try:
        public_key = Verifier.load(path, settings.ledger_log_name)
    except InvalidKey as exc:
        raise ConfigurationError(f"ledger public key: {exc}") from exc
    return ProofService(index, store, public_key)


def open_access_log(settings: Settings, bootstrap: str | None = None) -> KafkaAccessLog | None:
    """The API's record of auditors' reads, started; None when ``audit_reads`` is off."""
    if not settings.audit_reads:
        logger.warning("BLACKBOX_AUDIT_READS is off: reads of session content are not put on record")
        return None
    access_log = KafkaAccessLog(
        bootstrap or settings.kafka_bootstrap,
        settings.events_topic,
        version=_package_version(),
        # Well before the worker's idle timeout seals the session (and refuses reads after).
        quiet_seconds=settings.idle_timeout_seconds / 2,
    )
    try:
        return access_log.start()
    except AccessNotRecorded as exc:
        raise ConfigurationError(
            f"cannot record auditors' reads: {exc}. The API serves session content only once each "
            "read is on record; start Kafka, or set BLACKBOX_AUDIT_READS=false to serve reads unaudited"
        ) from exc


def _package_version() -> str:
    try:
        return importlib.metadata.version("blackbox-audit")
    except importlib.metadata.PackageNotFoundError:
        return ""
