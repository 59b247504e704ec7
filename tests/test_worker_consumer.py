"""The seal worker's Kafka consumer: its fetch wait is ours, not Faust's fixed 1.5 s."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, cast

from aiokafka import AIOKafkaProducer, ConsumerRecord

from blackbox.settings import Settings
from blackbox.wiring import worker_config
from streams.app import _FetchWaitApp, _FetchWaitConsumer, _FetchWaitTransport
from tests.stack import Topics


def test_the_setting_reaches_the_workers_app_config(tmp_path: Path) -> None:
    settings = Settings(environment="dev", kafka_fetch_max_wait_ms=250)
    assert worker_config(settings, tmp_path).fetch_max_wait_ms == 250


def test_the_workers_consumer_fetches_with_the_configured_wait(kafka_bootstrap: str) -> None:
    topics = Topics.fresh(kafka_bootstrap, partitions=1)
    asyncio.run(_consume_one(kafka_bootstrap, topics.events))


async def _consume_one(kafka_bootstrap: str, topic: str) -> None:
    app = _FetchWaitApp(
        200,
        "fetch-wait-test",
        broker=f"kafka://{kafka_bootstrap}",
        web_enabled=False,
        autodiscover=False,
        # Tansu's first join of a new group waits about half the session timeout.
        broker_session_timeout=3.0,
        broker_heartbeat_interval=1.0,
    )
    thread = cast(_FetchWaitConsumer, app.consumer)._new_consumer_thread()
    consumer = thread._create_worker_consumer(cast(_FetchWaitTransport, app.transport))
    consumer.subscribe([topic])
    await consumer.start()
    try:
        # The started fetcher is what waits: the setting must have reached it.
        assert consumer._fetcher._fetch_max_wait_ms == 200
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"x")
        finally:
            await producer.stop()
        received: dict[Any, list[ConsumerRecord[Any, bytes]]] = {}
        deadline = time.monotonic() + 30
        while not received and time.monotonic() < deadline:
            received = await consumer.getmany(timeout_ms=200)
        assert [record.value for records in received.values() for record in records] == [b"x"]
    finally:
        await consumer.stop()
