"""tlog-tiles paths and bytes, and proofs built from stored tiles against proofs from the leaves."""

from __future__ import annotations

import random

import pytest

from ledger.merkle import (
    EMPTY_ROOT,
    ProofError,
    consistency_proof,
    hash_at_leaves,
    inclusion_proof,
    leaf_hash,
    root,
    verify_consistency,
    verify_inclusion,
)
from ledger.tiles import (
    FULL_TILE_BYTES,
    TILE_WIDTH,
    BundleID,
    TileBuilder,
    TileError,
    TileID,
    TileReader,
    bundle_path,
    bundles_between,
    decode_bundle,
    decode_index,
    decode_tile,
    encode_bundle,
    encode_index,
    encode_tile,
    parse_path,
    read_bundle,
    tile_path,
    tiles_between,
    tiles_for_size,
    verify_tiles,
)
from replay.audit import _split_bundle

# --- paths


@pytest.mark.parametrize(
    ("index", "encoded"),
    [
        (0, "000"),
        (7, "007"),
        (999, "999"),
        (1000, "x001/000"),
        (1234067, "x001/x234/067"),
        (10**9, "x001/x000/x000/000"),
    ],
)
def test_index_encoding(index: int, encoded: str) -> None:
    assert encode_index(index) == encoded
    assert decode_index(encoded) == index


@pytest.mark.parametrize("text", ["0", "0000", "x000/001", "001/002", "x1/000", "X001/000", "x001/00a", ""])
def test_non_canonical_indices_are_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="tile index"):
        decode_index(text)


def test_paths() -> None:
    assert tile_path(0, 1234067) == "tile/0/x001/x234/067"
    assert tile_path(1, 3, 17) == "tile/1/003.p/17"
    assert bundle_path(5) == "tile/entries/005"
    assert bundle_path(5, 255) == "tile/entries/005.p/255"
    assert parse_path("tile/2/x001/000.p/1") == TileID(2, 1000, 1)
    assert parse_path("tile/entries/x001/x234/067") == BundleID(1234067)
    assert parse_path("tile/63/000") == TileID(63, 0)
    for bad in [
        "tile/0/000.p/256",
        "tile/0/000.p/0",
        "tile/0/000.p/07",
        "tile/64/000",
        "tile/01/000",
        "tile/0/1",
        "tile/0/000/",
    ]:
        with pytest.raises(ValueError, match="tile"):
            parse_path(bad)
    with pytest.raises(ValueError, match="width"):
        TileID(0, 0, 257)


def test_tiles_for_size_matches_the_spec_examples() -> None:
    tiles = list(tiles_for_size(70_000))
    assert [t for t in tiles if t.level == 0 and not t.partial] == [TileID(0, n) for n in range(273)]
    assert [t for t in tiles if t.partial] == [TileID(0, 273, 112), TileID(1, 1, 17), TileID(2, 0, 1)]
    assert [t for t in tiles if t.level == 1 and not t.partial] == [TileID(1, 0)]
    assert list(tiles_for_size(256)) == [TileID(0, 0), TileID(1, 0, 1)]
    assert list(tiles_for_size(0)) == []
    assert list(tiles_for_size(1)) == [TileID(0, 0, 1)]


def test_tiles_between_lists_each_changed_tile() -> None:
    assert list(tiles_between(250, 260)) == [TileID(0, 0), TileID(0, 1, 4), TileID(1, 0, 1)]
    assert list(tiles_between(256, 257)) == [TileID(0, 1, 1)]
    assert list(tiles_between(300, 300)) == []
    assert list(bundles_between(250, 600)) == [BundleID(0), BundleID(1), BundleID(2, 88)]
    with pytest.raises(ValueError, match="grow"):
        list(tiles_between(5, 4))


# --- bytes


def test_tile_and_bundle_encoding() -> None:
    hashes = [leaf_hash(bytes([i])) for i in range(3)]
    data = encode_tile(hashes)
    assert data == b"".join(hashes)
    assert decode_tile(data, TileID(0, 0, 3)) == hashes
    with pytest.raises(TileError) as caught:
        decode_tile(data[:-1], TileID(0, 0, 3))
    assert caught.value.check == "length"
    with pytest.raises(ValueError, match="33 bytes"):
        encode_tile([b"\x00" * 33])

    entries = [b"", b"a", b"\x00" * 300, b"x" * 0xFFFF]
    bundle = encode_bundle(entries)
    assert bundle[:5] == b"\x00\x00\x00\x01a"
    assert decode_bundle(bundle, BundleID(0, 4)) == entries
    with pytest.raises(ValueError, match="at most 65535"):
        encode_bundle([b"x" * 0x10000])
    for broken, check in [(bundle[:-1], "framing"), (bundle + b"\x00", "framing"), (bundle, "count")]:
        with pytest.raises(TileError) as caught:
            decode_bundle(broken, BundleID(0, 4 if check == "framing" else 5))
        assert caught.value.check == check


# --- building and reading tiles


def _leaves(n: int) -> list[bytes]:
    return [f"entry {i}".encode() for i in range(n)]


def _store(entries: list[bytes], checkpoints: list[int]) -> dict[str, bytes]:
    """Tiles as a log writes them: full ones once, partial ones at each checkpoint size."""
    builder = TileBuilder()
    store: dict[str, bytes] = {}
    position = 0
    for size in checkpoints:
        builder.extend(entries[position:size])
        position = size
        for item, data in builder.take_full() + builder.partials():
            assert item.path not in store or store[item.path] == data  # tiles are immutable
            store[item.path] = data
    return store


def test_builder_writes_exactly_the_tiles_of_the_size() -> None:
    entries = _leaves(70_000)
    store = _store(entries, [1, 255, 256, 257, 65_536, 69_999, 70_000])
    hashes = [leaf_hash(e) for e in entries]
    for tile in tiles_for_size(70_000):
        first = tile.index * TILE_WIDTH
        level_hashes = [hash_at_leaves(hashes)(8 * tile.level, first + i) for i in range(tile.width)]
        assert store[tile.path] == encode_tile(level_hashes), tile
    for bundle in bundles_between(0, 70_000):
        start = bundle.index * TILE_WIDTH
        assert decode_bundle(store[bundle.path], bundle) == entries[start : start + bundle.width]
    reader = TileReader(store.__getitem__, 70_000)
    assert reader.root() == root(hashes)
    assert reader.root(65_536) == root(hashes[:65_536])


def test_proofs_from_tiles_equal_proofs_from_leaves_for_random_sizes() -> None:
    rng = random.Random(8)
    entries = _leaves(2100)
    hashes = [leaf_hash(e) for e in entries]
    sizes = sorted({rng.randrange(1, 2100) for _ in range(25)} | {256, 257, 511, 512, 513, 2048, 2099})
    for size in sizes:
        # Only this size's checkpoint was written, so every rightmost tile is the partial one.
        store = _store(entries, [size])
        reader = TileReader(store.__getitem__, size)
        tree = hashes[:size]
        assert reader.root() == root(tree)
        for index in {0, size - 1, rng.randrange(size), rng.randrange(size)}:
            proof = reader.inclusion_proof(index)
            assert proof == inclusion_proof(tree, index, size)
            verify_inclusion(tree[index], index, size, proof, root(tree))
        for size1 in {1, size, rng.randrange(1, size + 1), rng.randrange(1, size + 1)}:
            proof = reader.consistency_proof(size1)
            assert proof == consistency_proof(size1, size, tree)
            verify_consistency(size1, size, proof, root(tree[:size1]), root(tree))


def test_reader_serves_smaller_trees_from_a_larger_ones_tiles() -> None:
    entries = _leaves(1500)
    hashes = [leaf_hash(e) for e in entries]
    reader = TileReader(_store(entries, [1500]).__getitem__, 1500)
    for size in (1, 255, 256, 700, 1023, 1499):
        assert reader.root(size) == root(hashes[:size])
        assert reader.inclusion_proof(size - 1, size) == inclusion_proof(hashes, size - 1, size)
        assert reader.consistency_proof(1, size) == consistency_proof(1, size, hashes)
    with pytest.raises(ValueError, match="beyond"):
        reader.root(1501)


def test_partial_tile_gone_falls_back_to_the_full_tile() -> None:
    entries = _leaves(600)
    store = _store(entries, [300, 600])  # size 300 had partial 0/001.p/44; size 600 made 0/001 full
    del store["tile/0/001.p/44"]
    reader = TileReader(store.__getitem__, 300)
    assert reader.root() == root([leaf_hash(e) for e in entries[:300]])
    del store["tile/entries/001.p/44"]
    assert read_bundle(store.__getitem__, BundleID(1, 44)) == entries[256:300]
    signed_root = root([leaf_hash(e) for e in entries[:300]])
    verify_tiles(store.__getitem__, 300, signed_root)
    assert TileBuilder.resume(300, store.__getitem__).partials() == _builder_at(entries, 300).partials()
    del store["tile/0/001"]
    with pytest.raises(TileError) as caught:
        TileReader(store.__getitem__, 300).root()
    assert caught.value.check == "missing"
    del store["tile/entries/001"]
    with pytest.raises(TileError) as caught:
        read_bundle(store.__getitem__, BundleID(1, 44))
    assert (caught.value.path, caught.value.check) == ("tile/entries/001.p/44", "missing")


def _builder_at(entries: list[bytes], size: int) -> TileBuilder:
    builder = TileBuilder()
    builder.extend(entries[:size])
    return builder


def test_a_replaced_tile_is_caught_by_proofs_through_it_and_by_verify_tiles() -> None:
    entries = _leaves(1000)
    hashes = [leaf_hash(e) for e in entries]
    signed_root = root(hashes)
    store = _store(entries, [1000])
    verify_tiles(store.__getitem__, 1000, signed_root)
    forged = bytearray(store["tile/0/001"])
    forged[5 * 32] ^= 0x01  # leaf 261's hash
    store["tile/0/001"] = bytes(forged)
    reader = TileReader(store.__getitem__, 1000)
    # The root reads tile 0/001's hash from level 1, so the change does not show there ...
    assert reader.root() == signed_root
    # ... but a proof that passes through the changed hash fails,
    with pytest.raises(ProofError) as caught:
        verify_inclusion(hashes[260], 260, 1000, reader.inclusion_proof(260), signed_root)
    assert caught.value.check == "root"
    verify_inclusion(hashes[700], 700, 1000, reader.inclusion_proof(700), signed_root)
    # ... and checking every tile finds it, with its path.
    with pytest.raises(TileError) as caught_tile:
        verify_tiles(store.__getitem__, 1000, signed_root)
    assert (caught_tile.value.path, caught_tile.value.check) == ("tile/0/001", "parent_hash")
    assert "tile/1/000.p/3" in caught_tile.value.detail
    store["tile/0/001"] = store["tile/0/001"][:-1]
    with pytest.raises(TileError) as caught_tile:
        TileReader(store.__getitem__, 1000).inclusion_proof(260)
    assert caught_tile.value.check == "length"


def test_verify_tiles_locates_each_kind_of_damage() -> None:
    entries = _leaves(70_000)
    store = _store(entries, [70_000])
    signed_root = root([leaf_hash(e) for e in entries])
    reported: list[int] = []
    verify_tiles(store.__getitem__, 70_000, signed_root, progress=lambda done, total: reported.append(done))
    assert reported[-1] == 70_000
    assert len(reported) == -(-70_000 // TILE_WIDTH)  # once per bundle

    def damaged(path: str, data: bytes | None) -> tuple[str, str]:
        changed = dict(store)
        if data is None:
            del changed[path]
        else:
            changed[path] = data
        with pytest.raises(TileError) as caught:
            verify_tiles(changed.__getitem__, 70_000, signed_root)
        return caught.value.path, caught.value.check

    def flip(data: bytes, at: int) -> bytes:
        return data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]

    changed_entries = [*entries[256:512]]
    changed_entries[3] = b"edited record"
    # An edited entry, with its level-0 hash left alone: the bundle no longer matches.
    assert damaged("tile/entries/001", encode_bundle(changed_entries)) == ("tile/entries/001", "leaf_hash")
    # A level-0 tile rewritten to match an edited bundle: its parent hash no longer matches.
    rewritten = encode_tile([leaf_hash(e) for e in changed_entries])
    both = dict(store, **{"tile/0/001": rewritten, "tile/entries/001": encode_bundle(changed_entries)})
    with pytest.raises(TileError) as caught:
        verify_tiles(both.__getitem__, 70_000, signed_root)
    assert (caught.value.path, caught.value.check) == ("tile/0/001", "parent_hash")
    # A level-1 tile changed: its own parent (level 2) catches it, before its children are read.
    assert damaged("tile/1/000", flip(store["tile/1/000"], 40)) == ("tile/1/000", "parent_hash")
    # The partial tiles at the top feed the root directly.
    assert damaged("tile/2/000.p/1", flip(store["tile/2/000.p/1"], 0)) == ("checkpoint", "root")
    assert damaged("tile/0/273.p/112", flip(store["tile/0/273.p/112"], 0)) == ("checkpoint", "root")
    # Something missing, or a whole bundle dropped.
    assert damaged("tile/0/100", None) == ("tile/0/100", "missing")
    assert damaged("tile/entries/100", None) == ("tile/entries/100", "missing")
    # A truncated log: the tiles of a smaller, self-consistent tree do not give the signed root.
    smaller = _store(entries[:69_000], [69_000])
    with pytest.raises(TileError) as caught:
        verify_tiles(smaller.__getitem__, 69_000, signed_root)
    assert caught.value.check == "root"


def test_verify_tiles_without_entries_names_the_same_tile() -> None:
    """Without entries (the audit's way) full tiles are checked a level at a time; a failure is
    still named tile by tile, as with entries."""
    entries = _leaves(70_000)
    store = _store(entries, [70_000])
    signed_root = root([leaf_hash(e) for e in entries])
    reported: list[int] = []
    verify_tiles(
        store.__getitem__,
        70_000,
        signed_root,
        entries=False,
        progress=lambda done, total: reported.append(done),
    )
    assert reported[-1] == 70_000
    assert len(reported) == -(-70_000 // TILE_WIDTH)  # once per bundle

    def damaged(changes: dict[str, bytes | None]) -> tuple[str, str]:
        changed = dict(store)
        for path, data in changes.items():
            if data is None:
                del changed[path]
            else:
                changed[path] = data
        with pytest.raises(TileError) as caught:
            verify_tiles(changed.__getitem__, 70_000, signed_root, entries=False)
        return caught.value.path, caught.value.check

    def flip(data: bytes, at: int) -> bytes:
        return data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]

    assert damaged({"tile/0/001": flip(store["tile/0/001"], 100)}) == ("tile/0/001", "parent_hash")
    assert damaged(
        {"tile/0/200": flip(store["tile/0/200"], 0), "tile/0/201": flip(store["tile/0/201"], 0)}
    ) == (
        "tile/0/200",
        "parent_hash",
    )
    assert damaged({"tile/1/000": flip(store["tile/1/000"], 40)}) == ("tile/1/000", "parent_hash")
    assert damaged({"tile/0/100": None}) == ("tile/0/100", "missing")
    assert damaged({"tile/0/100": store["tile/0/100"][:-1]}) == ("tile/0/100", "length")
    # A bad tile before a missing one is reported first, as tile by tile.
    assert damaged({"tile/0/050": flip(store["tile/0/050"], 8), "tile/0/060": None}) == (
        "tile/0/050",
        "parent_hash",
    )


def test_reader_refuses_nodes_outside_the_tree() -> None:
    reader = TileReader(_store(_leaves(10), [10]).__getitem__, 10)
    with pytest.raises(ValueError, match="complete subtree"):
        reader.node_hash(2, 2)  # leaves 8..11, but only 10 exist
    empty: dict[str, bytes] = {}
    assert TileReader(empty.__getitem__, 0).root() == EMPTY_ROOT


def test_builder_resumes_from_stored_tiles() -> None:
    entries = _leaves(1300)
    for cut in (0, 1, 255, 256, 257, 700, 1024):
        store = _store(entries, [cut] if cut else [])
        resumed = TileBuilder.resume(cut, store.__getitem__)
        assert resumed.size == cut
        resumed.extend(entries[cut:])
        assert resumed.root() == root([leaf_hash(e) for e in entries])
        for item, data in resumed.take_full() + resumed.partials():
            store[item.path] = data
        assert store == _store(entries, [1300]) | {k: v for k, v in store.items() if ".p/" in k}


def test_resume_detects_a_bundle_that_does_not_match_its_tile() -> None:
    entries = _leaves(300)
    store = _store(entries, [300])
    store["tile/entries/001.p/44"] = encode_bundle([b"forged", *entries[257:300]])
    with pytest.raises(TileError) as caught:
        TileBuilder.resume(300, store.__getitem__)
    assert caught.value.check == "leaf_hash"


def test_hash_only_builder() -> None:
    hashes = [leaf_hash(e) for e in _leaves(600)]
    builder = TileBuilder(with_entries=False)
    for h in hashes:
        builder.append_leaf_hash(h)
    written = dict((item.path, data) for item, data in builder.take_full() + builder.partials())
    assert sorted(written) == sorted(t.path for t in tiles_for_size(600))
    assert len(written["tile/0/000"]) == FULL_TILE_BYTES
    with pytest.raises(ValueError, match="leaf hashes only"):
        builder.append(b"entry")
    with pytest.raises(ValueError, match="append with the entry"):
        TileBuilder().append_leaf_hash(hashes[0])


def test_bundles_decode_with_entries_of_one_length_or_many() -> None:
    # Entries of one length take decode_bundle's fixed-stride path, mixed lengths the general
    # one; the audit's _split_bundle is decode_bundle answering None instead of raising.
    same = [b"e" * 40 for _ in range(256)]
    mixed = [bytes([i]) * (i % 7) for i in range(256)]
    for entries in (same, mixed, same[:3], [b""] * 5, [b"\x00\x02ab", b"cd"]):
        data = encode_bundle(entries)
        width = len(entries)
        assert decode_bundle(data, BundleID(0, width)) == entries
        assert _split_bundle(data, width) == entries
        wrong = width - 1 if width == TILE_WIDTH else width + 1
        with pytest.raises(TileError):
            decode_bundle(data, BundleID(0, wrong))
        assert _split_bundle(data, wrong) is None
        with pytest.raises(TileError):
            decode_bundle(data + b"\x00", BundleID(0, width))  # trailing bytes
        assert _split_bundle(data + b"\x00", width) is None
