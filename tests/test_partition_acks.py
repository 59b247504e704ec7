"""The agent's acknowledgements: in offset order per partition, never past a held message."""

from __future__ import annotations

from typing import Any, cast

from faust.events import Event
from faust.types import Message

from streams.app import PartitionAcks, without_payload


def test_nothing_after_a_held_message_is_acknowledged_until_it_is_let_go() -> None:
    acks = PartitionAcks()
    for offset in range(5):
        acks.add(0, offset, f"p0@{offset}", 0)
    acks.add(1, 0, "p1@0", 0)
    # Offset 2 of partition 0 is held: Faust would commit past it if 3 and 4 were acknowledged.
    assert acks.ready(frozenset({(0, 2)})) == ["p0@0", "p0@1", "p1@0"]
    assert len(acks) == 3
    acks.add(0, 5, "p0@5", 0)
    assert acks.ready(frozenset({(0, 2)})) == []
    assert acks.ready(frozenset()) == ["p0@2", "p0@3", "p0@4", "p0@5"]
    assert len(acks) == 0


def test_a_revoked_partition_is_forgotten_and_others_go_on() -> None:
    acks = PartitionAcks()
    acks.add(0, 7, "p0@7", 0)
    acks.add(0, 8, "p0@8", 0)
    acks.add(1, 3, "p1@3", 0)
    assert acks.ready(frozenset({(0, 7), (1, 3)})) == []
    acks.drop({0})  # its next owner reads again from offset 7
    assert len(acks) == 1
    assert acks.ready(frozenset()) == ["p1@3"]


def test_a_batch_sealed_across_a_revocation_acknowledges_nothing_of_that_partition() -> None:
    """The batch was taken before partition 0 was revoked and finishes after: its messages of
    partition 0 belong to the next owner, and acknowledging them here would break the order of
    the partition's acknowledgements should it come back."""
    acks = PartitionAcks()
    taken = {0: acks.generation(0), 1: acks.generation(1)}
    acks.drop({0})  # the rebalance, while the batch is sealed
    acks.add(0, 10, "p0@10", taken[0])
    acks.add(1, 4, "p1@4", taken[1])
    assert acks.ready(frozenset()) == ["p1@4"]
    acks.add(0, 10, "p0@10 again", acks.generation(0))  # partition 0 back, read again
    assert acks.ready(frozenset()) == ["p0@10 again"]


def test_a_waiting_event_keeps_its_place_but_not_its_bytes() -> None:
    """Events wait here behind a held message, a flush interval or longer: their bytes were
    sealed already and need not stay in memory meanwhile."""
    payload = b"x" * 100_000
    message = Message(
        topic="events",
        partition=2,
        offset=41,
        timestamp=0.0,
        timestamp_type=0,
        headers=[],
        key=b"s-1",
        value=payload,
        checksum=None,
    )
    event = Event(app=cast(Any, None), key=b"s-1", value=payload, headers={}, message=message)
    acks = PartitionAcks()
    acks.add(2, 41, without_payload(event), 0)
    assert event.value is None
    assert message.value is None
    assert (message.topic, message.partition, message.offset, message.key) == ("events", 2, 41, b"s-1")
    assert acks.ready(frozenset()) == [event]
