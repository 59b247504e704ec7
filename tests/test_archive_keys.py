"""Archive object keys: what the seal worker writes, the ledger and the proofs read back."""

from __future__ import annotations

import pytest

from storage.archive import object_key, object_prefix, parse_object_key


def test_a_key_names_its_epoch_partition_and_offsets() -> None:
    key = object_key("2026-11-24", 3, 1_000, 1_999)
    assert key == "2026-11-24/p00003/00000000000000001000-00000000000000001999.avro"
    assert key.startswith(object_prefix("2026-11-24", 3))
    assert parse_object_key(key) == ("2026-11-24", 3, 1_000, 1_999)
    # Offsets sort as keys: the ledger and recovery list a partition's objects in offset order.
    keys = [object_key("e", 0, first, first + 9) for first in (5, 10, 200, 3_000)]
    assert sorted(keys) == keys


@pytest.mark.parametrize(
    "key",
    [
        "e/p00001/notes.avro",  # a stray upload
        "e/p00001/0001-0002.avro",  # offsets not written by the worker
        "e/x00001/00000000000000000001-00000000000000000002.avro",
        "e/p00001/00000000000000000001-00000000000000000002.avro.bak",
        "/p00001/00000000000000000001-00000000000000000002.avro",
        "ledger/blackbox/abc/e/p00001/checkpoint/00000000000000000001",
        "e/p00001/sub/00000000000000000001-00000000000000000002.avro",
    ],
)
def test_other_keys_are_not_archive_objects(key: str) -> None:
    assert parse_object_key(key) is None
