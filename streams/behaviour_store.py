"""Per-identity behaviour state kept in the index, so baselines survive restarts and are shared.

The risk scorer caches identity states in memory; this gives them a durable home in the
ClickHouse table ``identity_behaviour`` (newest row per identity wins):

- after each batch the worker stores the states the batch changed, before it acknowledges the
  batch, so an acknowledged event's contribution to its identity's history is kept;
- an identity missing from the scorer's memory (a restarted worker, an identity last seen on
  another worker, one evicted from the cache) is read back from the table;
- the table unreadable (the index down), an identity is scored on a fresh state for the batch,
  which is not stored: stored, as the newest row, it would replace the identity's history.

Sessions of one identity arrive on every partition, so every worker may score it: each works on
its cached state and the last write wins. A baseline may then miss a few events; no record or
score is ever lost, and scores are evidence as recorded, never recomputed.

What is stored is derived from masked events and masking findings only (counts, sizes, hours,
target names, masked keystrokes of an unfinished line), never a plaintext value.

Why not a Faust table: a global table (every worker needs every identity) stalled the seal
agent after a worker was killed and restarted in our tests (the consumer stopped delivering
events; Faust documents global tables as fragile with several workers). The index is already a
dependency the worker waits on, and it is shared by all workers in production.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import pyarrow as pa

from risk.scorer import StateUnavailable
from storage.index import Index, IndexStoreError

logger = logging.getLogger(__name__)

TABLE = "identity_behaviour"
# The sort key is identity_key: one identity's rows are read, not the table.
_LOAD = (
    "SELECT argMax(state, updated_at) AS state, count() AS stored FROM identity_behaviour"
    " WHERE identity_key = {key:String}"
)
_LOAD_MANY = (
    "SELECT identity_key, argMax(state, updated_at) AS state FROM identity_behaviour"
    " WHERE identity_key IN {keys:Array(String)} GROUP BY identity_key"
)


class PersistentScorerState(Protocol):
    """What the store needs from the scorer (implemented by `risk.scorer.StatefulScorer`)."""

    def use_loader(
        self,
        loader: Callable[[str], Mapping[str, Any] | None],
        bulk_loader: Callable[[list[str]], Mapping[str, Mapping[str, Any]]] | None = None,
    ) -> None:
        """Read identities missing from memory through ``loader``, or ``bulk_loader`` for several
        at once (the seal step asks for a batch's identities before scoring it)."""
        ...

    def take_changes(self) -> dict[str, dict[str, Any]]:
        """States changed since the last call, by identity key, in JSON-compatible form."""
        ...


class BehaviourStore:
    """The table, bound to one scorer. `save` is called by the seal agent after each batch, in
    the pipeline's thread."""

    def __init__(self, index: Index, scorer: PersistentScorerState) -> None:
        self.index = index
        self.scorer = scorer
        self.writer = uuid.uuid4().hex  # which worker process wrote a row, for operators
        self.saved = 0
        scorer.use_loader(self.load, self.load_many)

    def load(self, key: str) -> Mapping[str, Any] | None:
        """The newest stored state of ``key``, or None for a new identity. The index down raises
        `StateUnavailable`: the identity is scored afresh for the batch rather than holding up
        sealing, and its stored history is left as it is."""
        try:
            rows = self.index.query(_LOAD, {"key": key}).to_pylist()
        except IndexStoreError as exc:
            logger.warning("identity %s: behaviour state unavailable (%s); scored afresh", key, exc)
            raise StateUnavailable(key) from exc
        if not rows or not rows[0]["stored"]:
            return None
        return _parsed(key, rows[0]["state"])

    def load_many(self, keys: list[str]) -> dict[str, Mapping[str, Any]]:
        """The newest stored states of ``keys`` that have one, in one query (the index down:
        `StateUnavailable`, as for `load`)."""
        try:
            rows = self.index.query(_LOAD_MANY, {"keys": keys}).to_pylist()
        except IndexStoreError as exc:
            logger.warning("behaviour state of %d identities unavailable (%s); scored afresh", len(keys), exc)
            raise StateUnavailable(f"{len(keys)} identities") from exc
        states = {row["identity_key"]: _parsed(row["identity_key"], row["state"]) for row in rows}
        return {key: state for key, state in states.items() if state is not None}

    def save(self, changes: Mapping[str, Mapping[str, Any]]) -> None:
        """Store changed states in one insert. A failure costs those identities a batch of
        history, never the batch itself: it is logged, not raised."""
        if not changes:
            return
        now_us = time.time_ns() // 1000
        rows = pa.table(
            {
                "identity_key": pa.array(list(changes), pa.string()),
                "state": pa.array([json.dumps(state, separators=(",", ":")) for state in changes.values()]),
                "updated_at": pa.array([now_us] * len(changes), pa.timestamp("us", tz="UTC")),
                "writer": pa.array([self.writer] * len(changes), pa.string()),
            }
        )
        try:
            self.index.insert(TABLE, rows)
        except IndexStoreError as exc:
            logger.warning("behaviour state of %d identities not stored: %s", len(changes), exc)
            return
        self.saved += len(changes)


def _parsed(key: str, text: str) -> Mapping[str, Any] | None:
    try:
        state = json.loads(text)
    except ValueError:
        logger.warning("identity %s: stored behaviour state is not JSON; starting afresh", key)
        return None
    return state if isinstance(state, dict) else None
