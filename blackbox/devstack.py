"""The embedded stack behind `blackbox dev`: broker, seal worker and API in one foreground process.

The broker runs as a child process, and on two cores or more so does the seal step (only the
worker talks to it). chdb lets one process own an index directory, so the worker and the API
share this process;
production runs `blackbox worker` and `blackbox api` apart, against Kafka, S3 and a ClickHouse
server. Everything lives under one data directory; `stack.json` in it tells other commands
(`blackbox demo`, `import`, `token`) how to reach the running stack.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from pydantic import SecretStr

from api.app import create_app
from api.auth import load_or_create_dev_keys, mint_token
from blackbox.broker import TansuBroker, free_port, wait_for_port
from blackbox.settings import Settings
from blackbox.topics import ensure_topics
from blackbox.wiring import (
    build_token_verifier,
    build_worker,
    ledger_public_key_path,
    open_access_log,
    open_archive,
    open_migrated_index,
    open_proofs,
)
from replay.reader import SessionReader
from storage.index import Index
from storage.objectstore import ObjectStore
from streams.app import run_worker

logger = logging.getLogger(__name__)

STACK_FILE = "stack.json"
DEV_BUCKET = "blackbox-archive"
# Credentials a local S3 emulator (moto, MinIO in dev mode) accepts; never real ones.
DEV_S3_KEY_ID = "blackbox-dev"
DEV_S3_SECRET = "blackbox-dev"  # noqa: S105


class StackNotRunning(RuntimeError):
    """No dev stack runs with this data directory."""


@dataclass(frozen=True)
class StackInfo:
    bootstrap: str
    api_url: str
    pid: int


def read_stack(data_dir: Path) -> StackInfo:
    path = data_dir / STACK_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise StackNotRunning(
            f"no dev stack runs with data dir {data_dir} (start one with `blackbox dev`)"
        ) from None
    return StackInfo(raw["bootstrap"], raw["api_url"], int(raw["pid"]))


def dev_token(
    data_dir: Path, role: str = "auditor", subject: str = "dev-auditor", ttl_seconds: int = 12 * 3600
) -> str:
    private_path, _ = load_or_create_dev_keys(data_dir / "keys")
    return mint_token(private_path.read_bytes(), role=role, subject=subject, ttl_seconds=ttl_seconds)


def _s3_archive_url(endpoint: str) -> str:
    """Create the dev bucket (Object Lock on) at ``endpoint`` and name it as an archive URL."""
    import boto3  # noqa: PLC0415  (only the --s3-endpoint path needs it)

    from storage.objectstore import create_worm_bucket  # noqa: PLC0415

    client = boto3.session.Session(
        aws_access_key_id=DEV_S3_KEY_ID, aws_secret_access_key=DEV_S3_SECRET, region_name="us-east-1"
    ).client("s3", endpoint_url=endpoint)
    existing = {bucket["Name"] for bucket in client.list_buckets().get("Buckets", [])}
    if DEV_BUCKET not in existing:
        create_worm_bucket(client, DEV_BUCKET)
    return f"s3://{DEV_BUCKET}/archive"


class _ApiServer:
    """uvicorn in a thread of its own: the main thread belongs to the Faust worker's loop."""

    def __init__(self, app: Any, host: str, port: int) -> None:
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="api", daemon=True)

    def start(self, port: int) -> None:
        self._thread.start()
        wait_for_port(port, timeout=20)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


def run_dev_stack(
    data_dir: Path,
    *,
    api_port: int = 8080,
    broker_port: int | None = None,
    demo: bool = True,
    s3_endpoint: str | None = None,
    partitions: int = 4,
) -> None:
    """Start everything, print how to reach it, and run until Ctrl-C."""
    data_dir = data_dir.absolute()
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "logs").mkdir(exist_ok=True)
    broker = TansuBroker(broker_port or free_port(), log_file=data_dir / "logs" / "tansu.log")
    broker.start()
    try:
        _run_with_broker(
            data_dir, broker, api_port=api_port, demo=demo, s3_endpoint=s3_endpoint, partitions=partitions
        )
    finally:
        broker.stop()
        (data_dir / STACK_FILE).unlink(missing_ok=True)


def _run_with_broker(
    data_dir: Path,
    broker: TansuBroker,
    *,
    api_port: int,
    demo: bool,
    s3_endpoint: str | None,
    partitions: int,
) -> None:
    archive_url = _s3_archive_url(s3_endpoint) if s3_endpoint else f"file://{data_dir / 'archive'}"
    _, public_key = load_or_create_dev_keys(data_dir / "keys")
    settings = Settings(
        environment="dev",
        kafka_bootstrap=broker.bootstrap,
        topic_partitions=partitions,
        # Tansu keeps messages in memory: each start is a new topic, offsets from zero again.
        source_epoch=time.strftime("dev%Y%m%dT%H%M%S", time.gmtime()),
        archive_url=archive_url,
        s3_endpoint_url=s3_endpoint,
        s3_access_key_id=DEV_S3_KEY_ID if s3_endpoint else None,
        s3_secret_access_key=SecretStr(DEV_S3_SECRET) if s3_endpoint else None,
        index_url=f"chdb://{data_dir / 'index'}",
        kafka_session_timeout_seconds=6.0,
        idle_timeout_seconds=300.0,
        jwt_public_key_file=public_key,
        data_dir=data_dir,
    )
    asyncio.run(
        ensure_topics(
            broker.bootstrap,
            partitions,
            (settings.events_topic, settings.sealed_topic, settings.dlq_topic, settings.alerts_topic),
        )
    )
    store = open_archive(settings)
    index = open_migrated_index(settings)
    try:
        _serve(settings, data_dir, broker, store, index, api_port=api_port, demo=demo)
    finally:
        index.close()


def _serve(
    settings: Settings,
    data_dir: Path,
    broker: TansuBroker,
    store: ObjectStore,
    index: Index,
    *,
    api_port: int,
    demo: bool,
) -> None:
    api_url = f"http://{settings.api_host}:{api_port}"
    public_ledger_key = ledger_public_key_path(settings) if settings.ledger_enabled else None

    async def announce() -> None:
        if demo:
            from ingest.demo import emit_demo  # noqa: PLC0415  (keeps the worker free of ingest)

            sessions = await emit_demo(broker.bootstrap, topic=settings.events_topic)
            logger.info("emitted %d demo sessions", len(sessions))
        verify = (
            f"Verify offline: blackbox verify {settings.archive_url} --public-key {public_ledger_key}\n"
            if public_ledger_key and settings.archive_url.startswith("file://")
            else ""
        )
        print(
            f"\nBlackbox dev stack is up.\n"
            f"  API:     {api_url}/api/v1/sessions\n"
            f"  Broker:  {broker.bootstrap}\n"
            f"  Archive: {store.describe()}\n"
            f"  Ledger:  {public_ledger_key or 'disabled'}\n"
            f"  Token:   {dev_token(data_dir)}\n\n"
            f'Try: curl -H "Authorization: Bearer $(blackbox token --data-dir {data_dir})" '
            f"{api_url}/api/v1/sessions\n{verify}Stop with Ctrl-C.\n",
            flush=True,
        )

    access_log = open_access_log(settings, broker.bootstrap)
    worker = api = None
    try:
        # The worker before the API: its ledger makes the dev signing key the API proves with.
        worker = build_worker(settings, store, index, data_dir=data_dir, on_started=announce)
        api_app = create_app(
            SessionReader(index, store),
            build_token_verifier(settings),
            metrics_source=worker.gauges,
            proofs=open_proofs(settings, index, store),
            access_log=access_log,
        )
        api = _ApiServer(api_app, settings.api_host, api_port)
        api.start(api_port)
        (data_dir / STACK_FILE).write_text(
            json.dumps({"bootstrap": broker.bootstrap, "api_url": api_url, "pid": os.getpid()})
        )
        run_worker(worker.app, loglevel=settings.log_level)
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            raise
    finally:
        if worker is not None:
            worker.close()
        if api is not None:
            api.stop()
        if access_log is not None:
            access_log.close()
