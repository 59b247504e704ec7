"""The seal agent's intake: batches are due when full or lingered, order is kept, memory is bounded."""

from __future__ import annotations

import asyncio
import time

import pytest

from streams.intake import BatchIntake


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_full_batch_is_due_at_once_and_order_is_kept() -> None:
    intake: BatchIntake[int] = BatchIntake(3, linger_seconds=60)
    for item in range(5):
        await intake.put(item)
    assert await asyncio.wait_for(intake.take(), 1) == [0, 1, 2]
    assert len(intake) == 2
    await intake.put(5)
    assert await asyncio.wait_for(intake.take(), 1) == [3, 4, 5]
    assert len(intake) == 0


async def test_a_partial_batch_waits_for_its_linger_then_goes() -> None:
    intake: BatchIntake[str] = BatchIntake(100, linger_seconds=0.2)
    await intake.put("a")
    started = time.monotonic()
    taking = asyncio.ensure_future(intake.take())
    await asyncio.sleep(0.05)
    await intake.put("b")  # arrives within the linger of "a": same batch
    assert await asyncio.wait_for(taking, 2) == ["a", "b"]
    assert time.monotonic() - started >= 0.15


async def test_items_that_waited_behind_a_long_batch_go_without_lingering() -> None:
    clock = Clock()
    intake: BatchIntake[int] = BatchIntake(100, linger_seconds=5, clock=clock)
    await intake.put(1)
    await intake.put(2)
    clock.now += 6  # the previous batch took longer than the linger
    assert await asyncio.wait_for(intake.take(), 0.5) == [1, 2]


async def test_take_waits_for_a_first_item() -> None:
    intake: BatchIntake[int] = BatchIntake(2, linger_seconds=60)
    taking = asyncio.ensure_future(intake.take())
    await asyncio.sleep(0.05)
    assert not taking.done()
    await intake.put(7)
    await intake.put(8)
    assert await asyncio.wait_for(taking, 1) == [7, 8]


async def test_put_waits_at_capacity_until_a_batch_is_taken() -> None:
    intake: BatchIntake[int] = BatchIntake(2, linger_seconds=60)
    for item in range(4):
        await intake.put(item)
    blocked = asyncio.ensure_future(intake.put(4))
    await asyncio.sleep(0.05)
    assert not blocked.done()
    assert len(intake) == 4
    assert await intake.take() == [0, 1]
    await asyncio.wait_for(blocked, 1)
    assert len(intake) == 3


async def test_dropping_a_lost_partition_keeps_the_rest_in_order_and_frees_room() -> None:
    intake: BatchIntake[tuple[int, int]] = BatchIntake(2, linger_seconds=60)
    for item in [(0, 1), (1, 1), (0, 2), (1, 2)]:
        await intake.put(item)
    blocked = asyncio.ensure_future(intake.put((0, 3)))
    await asyncio.sleep(0.01)
    assert intake.drop(lambda item: item[0] == 1) == 2
    await asyncio.wait_for(blocked, 1)
    assert await intake.take() == [(0, 1), (0, 2)]
    assert len(intake) == 1  # (0, 3), for the next batch


def test_a_batch_holds_at_least_one_item() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        BatchIntake(0, linger_seconds=1)


async def test_take_due_hands_out_only_a_batch_that_is_due_and_never_waits() -> None:
    clock = Clock()
    intake: BatchIntake[int] = BatchIntake(3, linger_seconds=5, clock=clock)
    assert intake.take_due() == []  # empty
    await intake.put(1)
    await intake.put(2)
    assert intake.take_due() == []  # neither full nor lingered
    clock.now += 5
    assert intake.take_due() == [1, 2]  # lingered
    for item in range(3, 8):
        await intake.put(item)
    assert intake.take_due() == [3, 4, 5]  # full, whatever the clock
    assert len(intake) == 2
