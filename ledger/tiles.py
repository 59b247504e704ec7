"""The C2SP tlog-tiles layout (https://c2sp.org/tlog-tiles): paths, tile and bundle bytes, and
reading the Merkle tree back from stored tiles.

A tile at level L holds up to 256 consecutive hashes of the tree's level 8·L, 32 bytes each:
level-0 tiles hold leaf hashes, a level-1 tile's hashes are the roots of full level-0 tiles, and
so on. The seven tree levels between two tile levels are not stored; they are recomputed by
hashing up from the tile below. The rightmost tile of a level is *partial* (1-255 hashes) until
it fills, and a partial tile is never hashed into the level above. Entry bundles hold the
entries themselves, each prefixed with its length as a big-endian uint16.

Everything here is pure except `TileReader`, `verify_tiles` and `TileBuilder.resume`, which call
the ``read`` function they are given (the object store's get, a dict's lookup, a file read). A
missing object is any exception in their ``missing`` tuple (pass the store's not-found error).
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from ledger.merkle import (
    HASH_SIZE,
    CompactRange,
    consistency_proof,
    hash_pairs,
    inclusion_proof,
    leaf_hash,
    root,
)

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT  # 256 hashes
FULL_TILE_BYTES = TILE_WIDTH * HASH_SIZE  # 8192
MAX_TILE_LEVEL = 63
MAX_ENTRY_SIZE = 0xFFFF

Read = Callable[[str], bytes]


class TileError(Exception):
    """A stored tile or bundle is missing or malformed; says which path and which check."""

    def __init__(self, path: str, check: str, detail: str) -> None:
        super().__init__(f"{path}: {check}: {detail}")
        self.path = path
        self.check = check
        self.detail = detail


def encode_index(index: int) -> str:
    """A tile index as 3-digit path elements, all but the last prefixed "x": 1234067 -> x001/x234/067."""
    if index < 0:
        raise ValueError(f"negative tile index {index}")
    groups = [f"{index % 1000:03d}"]
    index //= 1000
    while index > 0:
        groups.append(f"x{index % 1000:03d}")
        index //= 1000
    return "/".join(reversed(groups))


_INDEX = re.compile(r"(?:x[0-9]{3}/)*[0-9]{3}")
_TILE_PATH = re.compile(r"tile/(entries|0|[1-9][0-9]?)/((?:x[0-9]{3}/)*[0-9]{3})(?:\.p/([1-9][0-9]{0,2}))?")


def decode_index(text: str) -> int:
    """Inverse of `encode_index`; rejects every other spelling (one index, one path)."""
    if not _INDEX.fullmatch(text):
        raise ValueError(f"malformed tile index {text!r}")
    value = int(text.replace("x", "").replace("/", ""))
    if encode_index(value) != text:  # leading zero groups such as x000/001
        raise ValueError(f"non-canonical tile index {text!r}")
    return value


def _check_width(width: int) -> None:
    if not 1 <= width <= TILE_WIDTH:
        raise ValueError(f"tile width must be 1..{TILE_WIDTH}, not {width}")


@dataclass(frozen=True, order=True)
class TileID:
    """The tile at ``level`` and ``index``, ``width`` hashes wide (256 when full)."""

    level: int
    index: int
    width: int = TILE_WIDTH

    def __post_init__(self) -> None:
        if not 0 <= self.level <= MAX_TILE_LEVEL:
            raise ValueError(f"tile level must be 0..{MAX_TILE_LEVEL}, not {self.level}")
        if self.index < 0:
            raise ValueError(f"negative tile index {self.index}")
        _check_width(self.width)

    @property
    def partial(self) -> bool:
        return self.width < TILE_WIDTH

    @property
    def path(self) -> str:
        suffix = f".p/{self.width}" if self.partial else ""
        return f"tile/{self.level}/{encode_index(self.index)}{suffix}"

    def full(self) -> TileID:
        return TileID(self.level, self.index)


@dataclass(frozen=True, order=True)
class BundleID:
    """The entry bundle ``index``: entries [index·256, index·256 + width)."""

    index: int
    width: int = TILE_WIDTH

    def __post_init__(self) -> None:
        if self.index < 0:
            raise ValueError(f"negative bundle index {self.index}")
        _check_width(self.width)

    @property
    def partial(self) -> bool:
        return self.width < TILE_WIDTH

    @property
    def path(self) -> str:
        suffix = f".p/{self.width}" if self.partial else ""
        return f"tile/entries/{encode_index(self.index)}{suffix}"

    def full(self) -> BundleID:
        return BundleID(self.index)


def tile_path(level: int, index: int, width: int = TILE_WIDTH) -> str:
    return TileID(level, index, width).path


def bundle_path(index: int, width: int = TILE_WIDTH) -> str:
    return BundleID(index, width).path


def parse_path(path: str) -> TileID | BundleID:
    """The tile or bundle a path names; only canonical spellings are accepted."""
    match = _TILE_PATH.fullmatch(path)
    if match is None:
        raise ValueError(f"not a tile path: {path!r}")
    kind, index_text, width_text = match.groups()
    index = decode_index(index_text)
    width = TILE_WIDTH if width_text is None else int(width_text)
    parsed: TileID | BundleID = (
        BundleID(index, width) if kind == "entries" else TileID(int(kind), index, width)
    )
    if parsed.path != path:  # e.g. ".p/256" is not a partial tile
        raise ValueError(f"non-canonical tile path {path!r}")
    return parsed


def _hashes_at(level: int, size: int) -> int:
    """How many level-(8·level) hashes a tree of ``size`` stores: one per complete 256^level block."""
    return size >> (TILE_HEIGHT * level)


def tile_for(level: int, index: int, size: int) -> TileID:
    """The tile (level, index) as it exists in a tree of ``size``: full, or partial with its width."""
    available = _hashes_at(level, size) - index * TILE_WIDTH
    if available <= 0:
        raise ValueError(f"a tree of size {size} has no tile {level}/{index}")
    return TileID(level, index, min(available, TILE_WIDTH))


def tiles_for_size(size: int) -> Iterator[TileID]:
    """Every tile of a tree of ``size``, level by level, full tiles then the partial one.

    For example 70,000 leaves: 273 full and one 112-wide level-0 tiles, one full and one 17-wide
    level-1 tile, one 1-wide level-2 tile.
    """
    return tiles_between(0, size)


def tiles_between(old_size: int, new_size: int) -> Iterator[TileID]:
    """The tiles to write when a tree grows from ``old_size`` to ``new_size``: each tile whose
    contents differ (the full tiles completed and the new partial tiles), in path order per level."""
    if not 0 <= old_size <= new_size:
        raise ValueError(f"a tree does not grow from {old_size} to {new_size}")
    level = 0
    while _hashes_at(level, new_size) > 0:
        yield from _level_tiles(level, old_size, new_size)
        level += 1


def _level_tiles(level: int, old_size: int, new_size: int) -> Iterator[TileID]:
    old_count, new_count = _hashes_at(level, old_size), _hashes_at(level, new_size)
    if new_count > old_count:
        for index in range(old_count // TILE_WIDTH, (new_count - 1) // TILE_WIDTH + 1):
            yield TileID(level, index, min(new_count - index * TILE_WIDTH, TILE_WIDTH))


def bundles_for_size(size: int) -> Iterator[BundleID]:
    return bundles_between(0, size)


def bundles_between(old_size: int, new_size: int) -> Iterator[BundleID]:
    if not 0 <= old_size <= new_size:
        raise ValueError(f"a log does not grow from {old_size} to {new_size}")
    if new_size == old_size:
        return
    for index in range(old_size // TILE_WIDTH, (new_size - 1) // TILE_WIDTH + 1):
        yield BundleID(index, min(new_size - index * TILE_WIDTH, TILE_WIDTH))


def encode_tile(hashes: Sequence[bytes]) -> bytes:
    """A tile's bytes: its hashes concatenated."""
    _check_width(len(hashes))
    for position, value in enumerate(hashes):
        if len(value) != HASH_SIZE:
            raise ValueError(f"tile hash {position} is {len(value)} bytes, not {HASH_SIZE}")
    return b"".join(hashes)


def decode_tile(data: bytes, tile: TileID) -> list[bytes]:
    """The hashes of ``tile``, checking its length against its width."""
    if len(data) != tile.width * HASH_SIZE:
        raise TileError(
            tile.path, "length", f"{len(data)} bytes, a {tile.width}-wide tile has {tile.width * HASH_SIZE}"
        )
    return [data[offset : offset + HASH_SIZE] for offset in range(0, len(data), HASH_SIZE)]


def encode_bundle(entries: Sequence[bytes]) -> bytes:
    """An entry bundle's bytes: each entry after its length as a big-endian uint16."""
    _check_width(len(entries))
    parts: list[bytes] = []
    for position, entry in enumerate(entries):
        if len(entry) > MAX_ENTRY_SIZE:
            raise ValueError(
                f"entry {position} is {len(entry)} bytes; a bundle entry holds at most {MAX_ENTRY_SIZE}"
            )
        parts.append(len(entry).to_bytes(2, "big"))
        parts.append(entry)
    return b"".join(parts)


def decode_bundle(data: bytes, bundle: BundleID) -> list[bytes]:
    """The entries of ``bundle``, checking framing and count against its width."""
    width = bundle.width
    if len(data) >= 2:
        # Nearly always every entry has the same length (session ids of one length): then the
        # length prefixes sit at a fixed stride and are checked with two slices.
        length = data[0] << 8 | data[1]
        stride = length + 2
        if (
            len(data) == width * stride
            and data[0::stride] == bytes((length >> 8,)) * width
            and data[1::stride] == bytes((length & 0xFF,)) * width
        ):
            return [data[start : start + length] for start in range(2, len(data) + 2, stride)]
    entries: list[bytes] = []
    offset = 0
    while offset < len(data):
        if offset + 2 > len(data):
            raise TileError(bundle.path, "framing", f"truncated length prefix at byte {offset}")
        length = int.from_bytes(data[offset : offset + 2], "big")
        offset += 2
        if offset + length > len(data):
            raise TileError(bundle.path, "framing", f"entry {len(entries)} runs past the end of the bundle")
        entries.append(data[offset : offset + length])
        offset += length
    if len(entries) != bundle.width:
        raise TileError(bundle.path, "count", f"{len(entries)} entries, expected {bundle.width}")
    return entries


def read_bundle(
    read: Read,
    bundle: BundleID,
    *,
    missing: tuple[type[BaseException], ...] = (FileNotFoundError, KeyError),
) -> list[bytes]:
    """The entries of ``bundle``; a partial bundle that is gone is read from the full one's prefix."""
    data, stored = read_bundle_bytes(read, bundle, missing=missing)
    return decode_bundle(data, stored)[: bundle.width]


def read_bundle_bytes(
    read: Read,
    bundle: BundleID,
    *,
    missing: tuple[type[BaseException], ...] = (FileNotFoundError, KeyError),
) -> tuple[bytes, BundleID]:
    """The stored bytes holding ``bundle``'s entries, and which bundle they are: the partial
    bundle itself or, when that is gone, the full one whose prefix it is (for callers that look
    at the bytes before decoding them). A bundle found nowhere is TileError ``missing``."""
    try:
        return read(bundle.path), bundle
    except missing as exc:
        if not bundle.partial:
            raise TileError(bundle.path, "missing", "entry bundle not found") from exc
        try:
            return read(bundle.full().path), bundle.full()
        except missing:
            raise TileError(
                bundle.path, "missing", "neither the partial nor the full bundle was found"
            ) from exc


class TileReader:
    """Any complete-subtree hash of a tree of ``size``, read from its stored tiles.

    ``node_hash`` is a `ledger.merkle.HashAt`, so any inclusion or consistency proof for a tree of
    size <= ``size`` can be built from tiles alone. A node at tree level 8·L + r is the root of
    2^r consecutive hashes of tile level L: read, not recomputed, when r == 0.

    The reader checks nothing but lengths: a replaced tile gives wrong hashes, so a proof that
    passes through them fails verification against the signed root. (The root it computes reads
    only the partial tiles and the top of the tree; `verify_tiles` checks every tile.) A partial
    tile that is gone (logs may delete it once the full tile exists) is read as a prefix of the
    full tile.
    """

    def __init__(
        self,
        read: Read,
        size: int,
        *,
        missing: tuple[type[BaseException], ...] = (FileNotFoundError, KeyError),
        cache_size: int = 64,
    ) -> None:
        if size < 0:
            raise ValueError(f"negative tree size {size}")
        self._read = read
        self.size = size
        self._missing = missing
        self._cache: OrderedDict[tuple[int, int], list[bytes]] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()

    def _fetch(self, tile: TileID) -> bytes:
        try:
            return self._read(tile.path)
        except self._missing as exc:
            if not tile.partial:
                raise TileError(tile.path, "missing", "tile not found") from exc
            try:
                full = self._read(tile.full().path)
            except self._missing:
                raise TileError(
                    tile.path, "missing", "neither the partial nor the full tile was found"
                ) from exc
            if len(full) != FULL_TILE_BYTES:
                raise TileError(
                    tile.full().path, "length", f"{len(full)} bytes, a full tile has {FULL_TILE_BYTES}"
                ) from exc
            return full[: tile.width * HASH_SIZE]

    def tile_bytes(self, level: int, index: int) -> bytes:
        """The bytes of tile (level, index) as it stands at this reader's size, length checked
        (not cached: for callers that compare or hash a tile whole)."""
        tile = tile_for(level, index, self.size)
        data = self._fetch(tile)
        if len(data) != tile.width * HASH_SIZE:
            decode_tile(data, tile)  # raises the length error
        return data

    def tile_hashes(self, level: int, index: int) -> list[bytes]:
        """The hashes of tile (level, index) as it stands at this reader's size. Safe from several
        threads: the cache is locked, the read is not (two threads may read one tile at once)."""
        key = (level, index)
        with self._cache_lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        tile = tile_for(level, index, self.size)
        hashes = decode_tile(self._fetch(tile), tile)
        with self._cache_lock:
            self._cache[key] = hashes
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return hashes

    def node_hash(self, level: int, index: int) -> bytes:
        """Hash of the complete subtree over leaves [index·2^level, (index+1)·2^level)."""
        if level < 0 or index < 0 or (index + 1) << level > self.size:
            raise ValueError(
                f"node ({level}, {index}) is not a complete subtree of a tree of size {self.size}"
            )
        tile_level, rise = divmod(level, TILE_HEIGHT)
        first = index << rise  # the node's first hash at the tile level
        hashes = self.tile_hashes(tile_level, first // TILE_WIDTH)
        offset = first % TILE_WIDTH
        if rise == 0:
            return hashes[offset]
        return root(hashes[offset : offset + (1 << rise)])

    def leaf_hash(self, index: int) -> bytes:
        return self.node_hash(0, index)

    def root(self, size: int | None = None) -> bytes:
        """The root hash of the tree of ``size`` (default: this reader's size) from tiles."""
        return CompactRange.from_nodes(self._size_or_own(size), self.node_hash).root()

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        return inclusion_proof(self.node_hash, index, self._size_or_own(size))

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        return consistency_proof(size1, self._size_or_own(size2), self.node_hash)

    def _size_or_own(self, size: int | None) -> int:
        if size is None:
            return self.size
        if not 0 <= size <= self.size:
            raise ValueError(f"tree size {size} is beyond this reader's size {self.size}")
        return size


def verify_tiles(
    read: Read,
    size: int,
    root_hash: bytes,
    *,
    entries: bool = True,
    missing: tuple[type[BaseException], ...] = (FileNotFoundError, KeyError),
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Check every tile (and entry bundle) of the tree of ``size`` against its signed root.

    A root computed from tiles reads only the partial tiles and the top of the tree, so a changed
    full tile lower down would not show in it: each full tile is also checked against the hash its
    parent holds. Going from the top down, every parent is already verified when its children are
    checked, so the tile named in a failure is the one that is wrong.

    Checks (a tile that cannot be read is TileError "missing" or "length" wherever it is met):
      1. the root computed from the tiles is ``root_hash`` ("root"); this covers every partial tile;
      2. level by level from the top, each full tile hashes to the hash its (verified) parent tile
         holds for it ("parent_hash");
      3. with ``entries``, each bundle holds its width of entries ("framing", "count") whose leaf
         hashes are the (verified) level-0 tile's hashes ("leaf_hash", naming the entry).
    ``progress(done, size)`` is called after each level-0 tile.
    """
    reader = TileReader(read, size, missing=missing)
    computed = reader.root()  # 1
    if computed != root_hash:
        raise TileError(
            "checkpoint", "root", f"tiles give root {computed.hex()}, the checkpoint {root_hash.hex()}"
        )
    top = 0
    while _hashes_at(top + 1, size) > 0:
        top += 1
    for level in range(top, -1, -1):
        if not entries and _full_tiles_sound(reader, level, size):  # 2, for the whole level at once
            if level == 0 and progress is not None:
                for tile in _level_tiles(0, 0, size):
                    progress(min((tile.index + 1) * TILE_WIDTH, size), size)
            continue
        for tile in _level_tiles(level, 0, size):  # 2 and 3 tile by tile, naming the first failure
            hashes = reader.tile_hashes(tile.level, tile.index)
            if not tile.partial:  # 2
                parent_tile = tile_for(level + 1, tile.index // TILE_WIDTH, size)
                parent = reader.tile_hashes(level + 1, parent_tile.index)[tile.index % TILE_WIDTH]
                if root(hashes) != parent:
                    raise TileError(
                        tile.path,
                        "parent_hash",
                        f"tile does not hash to entry {tile.index % TILE_WIDTH} of {parent_tile.path}",
                    )
            if level == 0 and entries:  # 3
                bundle = BundleID(tile.index, tile.width)
                for offset, entry in enumerate(read_bundle(read, bundle, missing=missing)):
                    if leaf_hash(entry) != hashes[offset]:
                        index = tile.index * TILE_WIDTH + offset
                        raise TileError(
                            bundle.path, "leaf_hash", f"entry {index} does not match its leaf hash"
                        )
            if level == 0 and progress is not None:
                progress(min((tile.index + 1) * TILE_WIDTH, size), size)


def _full_tiles_sound(reader: TileReader, level: int, size: int) -> bool:
    """Check 2 of `verify_tiles` for every full tile of ``level``, 256 tiles (one parent tile) at a
    time: each group's bytes are hashed up eight levels as one string and compared with the parent
    tile's bytes, with no per-tile lists. False, on any mismatch or unreadable tile, means "check
    tile by tile", which names the first failure in the same order as ever."""
    full = _hashes_at(level, size) // TILE_WIDTH
    for parent_index in range((full + TILE_WIDTH - 1) // TILE_WIDTH):
        first = parent_index * TILE_WIDTH
        last = min(first + TILE_WIDTH, full)
        try:
            nodes = b"".join([reader.tile_bytes(level, index) for index in range(first, last)])
            parents = reader.tile_bytes(level + 1, parent_index)
        except TileError:
            return False
        for _ in range(TILE_HEIGHT):
            nodes = hash_pairs(nodes)
        if nodes != parents[: (last - first) * HASH_SIZE]:
            return False
    return True


class TileBuilder:
    """Builds tiles and entry bundles as a log grows, holding only the rightmost tile of each level.

    Append entries (or, for a hash-only log, leaf hashes); `take_full` returns each tile and
    bundle once it is complete and will never change, `partials` the partial ones for the current
    size (written with each checkpoint). `resume` rebuilds the state from what was stored.
    """

    def __init__(self, *, with_entries: bool = True) -> None:
        self._range = CompactRange()
        self._with_entries = with_entries
        self._levels: list[list[bytes]] = [[]]
        self._entries: list[bytes] = []
        self._full: list[tuple[TileID | BundleID, bytes]] = []

    @property
    def size(self) -> int:
        return self._range.size

    def root(self) -> bytes:
        return self._range.root()

    def compact_range(self) -> CompactRange:
        return self._range.copy()

    def append(self, entry: bytes) -> int:
        """Add an entry (leaf data); return its index."""
        index = self.size
        self.extend([entry])
        return index

    def append_leaf_hash(self, leaf: bytes) -> int:
        if self._with_entries:
            raise ValueError("this builder writes entry bundles; use append with the entry")
        return self._range.append(leaf, self._visit)

    def extend(self, entries: Sequence[bytes]) -> None:
        """Add entries (leaf data) in order: the ledger's hot loop. Leaves fill the level-0 tile
        and the entry bundle in slices; only the rare nodes at higher tile levels are visited
        one by one. The tiles and bundles are those of appending the entries one at a time."""
        if not self._with_entries:
            raise ValueError("this builder holds leaf hashes only; use append_leaf_hash")
        for entry in entries:
            if len(entry) > MAX_ENTRY_SIZE:
                raise ValueError(
                    f"entry is {len(entry)} bytes; a bundle entry holds at most {MAX_ENTRY_SIZE}"
                )
        first = self.size
        leaves = [leaf_hash(entry) for entry in entries]
        higher = self._range.extend_visiting(leaves, TILE_HEIGHT)
        row, done = self._levels[0], 0
        while done < len(leaves):
            room = TILE_WIDTH - len(row)
            row.extend(leaves[done : done + room])
            self._entries.extend(entries[done : done + room])
            done += room
            if len(row) == TILE_WIDTH:  # the entries (one per leaf) fill their bundle with it
                tile = (first + done - 1) // TILE_WIDTH
                self._full.append((TileID(0, tile), encode_tile(row)))
                self._full.append((BundleID(tile), encode_bundle(self._entries)))
                row = self._levels[0] = []
                self._entries = []
        for level, index, node in higher:
            self._visit(level, index, node)

    def _visit(self, level: int, index: int, node: bytes) -> None:
        tile_level, rise = divmod(level, TILE_HEIGHT)
        if rise:
            return
        while len(self._levels) <= tile_level:
            self._levels.append([])
        row = self._levels[tile_level]
        row.append(node)
        if len(row) == TILE_WIDTH:
            self._full.append((TileID(tile_level, index // TILE_WIDTH), encode_tile(row)))
            self._levels[tile_level] = []

    def take_full(self) -> list[tuple[TileID | BundleID, bytes]]:
        """The full tiles and bundles completed since the last call, lowest level first."""
        out, self._full = self._full, []
        return out

    def partials(self) -> list[tuple[TileID | BundleID, bytes]]:
        """The partial tiles (and partial bundle) of the current size."""
        out: list[tuple[TileID | BundleID, bytes]] = []
        for level, row in enumerate(self._levels):
            if row:
                out.append(
                    (tile_for(level, _hashes_at(level, self.size) // TILE_WIDTH, self.size), encode_tile(row))
                )
        if self._entries:
            out.append((BundleID(self.size // TILE_WIDTH, len(self._entries)), encode_bundle(self._entries)))
        return out

    @classmethod
    def resume(
        cls,
        size: int,
        read: Read,
        *,
        with_entries: bool = True,
        missing: tuple[type[BaseException], ...] = (FileNotFoundError, KeyError),
    ) -> TileBuilder:
        """The builder as it was at ``size``, from the tiles (and bundle) stored for that size."""
        reader = TileReader(read, size, missing=missing)
        builder = cls(with_entries=with_entries)
        builder._range = CompactRange.from_nodes(size, reader.node_hash)
        builder._levels = []
        level = 0
        while _hashes_at(level, size) > 0:
            count = _hashes_at(level, size)
            row = reader.tile_hashes(level, count // TILE_WIDTH) if count % TILE_WIDTH else []
            builder._levels.append(list(row))  # the builder appends to it; the reader caches it
            level += 1
        if not builder._levels:
            builder._levels = [[]]
        if with_entries and size % TILE_WIDTH:
            bundle = BundleID(size // TILE_WIDTH, size % TILE_WIDTH)
            builder._entries = read_bundle(read, bundle, missing=missing)
            if [leaf_hash(entry) for entry in builder._entries] != builder._levels[0]:
                raise TileError(bundle.path, "leaf_hash", "entries do not hash to the level-0 tile")
        return builder
