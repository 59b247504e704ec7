"""Batches for the seal agent, collected while the previous batch is being sealed.

Faust's ``Stream.take`` stops reading while its caller works on a batch, then refills from
empty and waits out its whole timeout unless the batch fills: measured on the pipeline
benchmark, the seal thread sat idle between batches for half a second each time and fetching
never overlapped sealing. Here the agent's stream keeps feeding an intake while the pipeline
seals in its thread; a batch is due once it is full or its oldest message has waited
``linger_seconds``, so under load (messages queued behind a long batch) the next batch starts
at once, and at low load a batch still gathers for up to ``linger_seconds``, which keeps the
archive object count low. The intake holds at most ``2 * max_messages``: beyond that the
stream waits, which stops Faust from fetching (backpressure, not unbounded memory).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class BatchIntake(Generic[T]):
    """A bounded FIFO of items, handed out in batches (single producer, single consumer)."""

    def __init__(
        self,
        max_batch: int,
        linger_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.max_batch = max_batch
        self.capacity = 2 * max_batch
        self.linger_seconds = linger_seconds
        self._clock = clock
        self._items: deque[tuple[float, T]] = deque()
        self._changed = asyncio.Event()  # an item arrived, or items were taken or dropped

    def __len__(self) -> int:
        return len(self._items)

    async def put(self, item: T) -> None:
        """Add ``item``; waits while the intake is at capacity."""
        while len(self._items) >= self.capacity:
            self._changed.clear()
            await self._changed.wait()
        self._items.append((self._clock(), item))
        # take() waits for a first item, then for a full batch (or its linger): wake it then only.
        if len(self._items) == 1 or len(self._items) == self.max_batch:
            self._changed.set()

    async def take(self) -> list[T]:
        """The next batch: waits for a first item, then until the batch is full or that item
        has waited ``linger_seconds``."""
        while (due_in := self._due_in()) is None or due_in > 0:
            self._changed.clear()
            if due_in is None:
                await self._changed.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), due_in)
        return self._batch()

    def take_due(self) -> list[T]:
        """The next batch if it is due now (full, or its first item has waited its linger), else
        nothing; never waits."""
        due_in = self._due_in()
        return self._batch() if due_in is not None and due_in <= 0 else []

    def _due_in(self) -> float | None:
        """Seconds until the next batch is due (0 when full), None while there is nothing."""
        if len(self._items) >= self.max_batch:
            return 0.0
        if not self._items:
            return None
        return self._items[0][0] + self.linger_seconds - self._clock()

    def _batch(self) -> list[T]:
        count = min(self.max_batch, len(self._items))
        batch = [self._items.popleft()[1] for _ in range(count)]
        self._changed.set()  # room for a waiting put()
        return batch

    def drop(self, unwanted: Callable[[T], bool]) -> int:
        """Remove the items ``unwanted`` selects (e.g. messages of partitions this worker lost);
        returns how many were removed."""
        kept = deque(entry for entry in self._items if not unwanted(entry[1]))
        dropped = len(self._items) - len(kept)
        self._items = kept
        if dropped:
            self._changed.set()
        return dropped
