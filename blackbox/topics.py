"""Topic names and creation. Partition counts are fixed at creation: the key (session id)
decides the partition, and a session's chain lives in exactly one partition."""

from __future__ import annotations

import contextlib
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

logger = logging.getLogger(__name__)

EVENTS = "blackbox.events"
SEALED = "blackbox.sealed"
DLQ = "blackbox.dlq"
ALERTS = "blackbox.alerts"


async def ensure_topics(
    bootstrap: str, partitions: int, names: tuple[str, ...] = (EVENTS, SEALED, DLQ)
) -> None:
    """Create the topics that do not exist yet; existing ones are left as they are."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [NewTopic(name, partitions, 1) for name in names if name not in existing]
        if wanted:
            # Another process may create them between our listing and our request.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(wanted)
            logger.info("created topics %s", ", ".join(t.name for t in wanted))
    finally:
        await admin.close()
