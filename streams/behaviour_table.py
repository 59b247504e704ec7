"""Per-identity behaviour state in a Faust table, so baselines survive restarts and rebalances.

The scorer keeps identity states in memory as a cache; this module gives it a durable home:

- a **global** table keyed by identity (`risk.scorer.identity_key`): sessions of one identity
  arrive on every partition of the events topic, so every worker needs every identity's state,
  not just the keys of the partitions it holds. Writes go to the changelog's partition chosen by
  the key (``use_partitioner``) and every worker reads all of it, at start (recovery) and live;
- after each batch the agent stores the states the batch changed, before it acknowledges the
  batch, so an acknowledged event's contribution is in the changelog;
- an identity missing from the scorer's memory is read from the table (`load`);
- another worker's write of an identity this worker has in memory replaces the cached state
  (`adopt`); concurrent sessions of one identity on two workers therefore resolve as last writer
  wins: a baseline may miss a few events, never an event's record or score.

What is stored is derived from masked events and masking findings only (counts, sizes, hours,
target names, masked keystrokes of an unfinished line), never a plaintext value.

The changelog wants log compaction (Kafka's ``cleanup.policy=compact``, which Faust asks for
when it creates the topic): without it (Tansu) every write is kept and read again at start.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import faust

logger = logging.getLogger(__name__)

TABLE_NAME = "identity-behaviour"
TABLE_FORMAT = 1


class PersistentScorerState(Protocol):
    """What the table needs from the scorer (implemented by `risk.scorer.StatefulScorer`)."""

    def use_loader(self, loader: Callable[[str], Mapping[str, Any] | None]) -> None:
        """Read identities missing from memory through ``loader``."""
        ...

    def take_changes(self) -> dict[str, dict[str, Any]]:
        """States changed since the last call, by identity key, in JSON-compatible form."""
        ...

    def adopt(self, key: str, stored: Mapping[str, Any]) -> None:
        """Another worker's state of ``key``; thread-safe."""
        ...


class BehaviourTable:
    """The table, bound to one scorer. `save` is called by the seal agent after each batch."""

    def __init__(self, app: faust.App, scorer: PersistentScorerState, *, name: str = TABLE_NAME) -> None:
        self.scorer = scorer
        # Tells this process's writes from other workers' when they come back from the changelog.
        self.writer = uuid.uuid4().hex
        self.writes = 0
        # As app.GlobalTable() builds one, but of the class below.
        self.table = _OnePartitionGlobalTable(
            app,
            name=name,
            beacon=app.tables.beacon,
            is_global=True,
            partitions=1,  # Faust's advice for global tables shared by several workers
            recovery_buffer_size=1,
            standby_buffer_size=1,  # other workers' writes are applied as they come
            use_partitioner=True,  # every worker reads every partition, live
            schema=faust.Schema(key_type=str, key_serializer="json", value_serializer="json"),
            on_changelog_event=self._on_changelog_event,
            help="per-identity behaviour state of the risk scorer",
        )
        app.tables.add(self.table)
        scorer.use_loader(self.load)

    def load(self, key: str) -> Mapping[str, Any] | None:
        """The stored state of ``key``, or None. Called from the scoring thread: a dict read."""
        return _state_of(self.table.get(key))

    def save(self, changes: Mapping[str, Mapping[str, Any]]) -> None:
        """Store changed states (the changelog write is buffered by Faust's producer)."""
        for key, state in changes.items():
            self.table[key] = {"format": TABLE_FORMAT, "writer": self.writer, "state": dict(state)}
        self.writes += len(changes)

    async def _on_changelog_event(self, event: Any) -> None:
        value = event.value
        if isinstance(value, Mapping) and value.get("writer") != self.writer:
            state = _state_of(value)
            if state is not None and isinstance(event.key, str):
                self.scorer.adopt(event.key, state)


class _OnePartitionGlobalTable(faust.GlobalTable):
    """A global table whose changelog has one partition, always written by number.

    With ``use_partitioner`` Faust asks the producer to pick the partition from the key at once,
    which fails until the producer happens to hold the changelog topic's metadata (the first
    write of a fresh worker crashed the agent). One partition needs no choosing.
    """

    def partition_for_key(self, key: Any) -> int:
        return 0


def _state_of(value: Any) -> Mapping[str, Any] | None:
    if not isinstance(value, Mapping) or value.get("format") != TABLE_FORMAT:
        return None
    state = value.get("state")
    return state if isinstance(state, Mapping) else None
