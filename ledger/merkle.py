"""RFC 6962 / RFC 9162 Merkle tree maths: hashes, roots, proofs and their verification.

Leaves and nodes are domain-separated (0x00 and 0x01 prefixes) so a leaf can never be passed
off as an interior node. A tree of n leaves splits at the largest power of two below n, which
makes every complete left subtree permanent: once leaves [i·2^k, (i+1)·2^k) exist, their node
hash never changes. Tiles store exactly those permanent nodes, and proofs are built from them.

Proofs are generated from a *hash source*: either the list of leaf hashes, or a `HashAt`
callable giving the hash of the complete subtree at (level, index) — leaves
[index·2^level, (index+1)·2^level) — so a verifier holding only stored tiles can build any
proof without the leaves (see `ledger.tiles.TileReader`).

Verification raises one error type, `ProofError`, whose ``check`` names the numbered step
that failed. The steps follow RFC 9162 §2.1.3.2 and §2.1.4.2.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

HASH_SIZE = 32
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()

# (level, index) -> hash of the complete subtree over leaves [index << level, (index + 1) << level).
HashAt = Callable[[int, int], bytes]
# (level, index, hash) of a node that has just become complete; see CompactRange.append.
NodeVisitor = Callable[[int, int, bytes], None]

_sha256 = hashlib.sha256


class ProofError(Exception):
    """A proof failed verification; ``check`` names the step, ``detail`` says how."""

    def __init__(self, check: str, detail: str) -> None:
        super().__init__(f"{check}: {detail}")
        self.check = check
        self.detail = detail


def leaf_hash(data: bytes) -> bytes:
    return _sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(NODE_PREFIX + left + right).digest()


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """The Merkle tree hash of the given leaf hashes (EMPTY_ROOT for none).

    Bottom-up, one level at a time, an unpaired last node is carried up unchanged: that is the
    same tree as RFC 6962's recursive split, and one list comprehension per level keeps it
    within a small factor of raw hashlib speed.
    """
    if not leaf_hashes:
        return EMPTY_ROOT
    level: Sequence[bytes] = leaf_hashes
    prefix = NODE_PREFIX
    sha = _sha256
    while len(level) > 1:
        carry = level[-1] if len(level) & 1 else None
        pairs = iter(level)
        upper = [sha(prefix + left + right).digest() for left, right in zip(pairs, pairs, strict=False)]
        if carry is not None:
            upper.append(carry)
        level = upper
    return level[0]


def hash_pairs(level: bytes) -> bytes:
    """The level above, from a level's hashes concatenated (an even number of them): each pair's
    node hash, concatenated. Working on one byte string costs one slice and one concatenation per
    node, less than `root`'s list of pairs."""
    prefix = NODE_PREFIX
    sha = _sha256
    pair = 2 * HASH_SIZE
    return b"".join(
        [sha(prefix + level[start : start + pair]).digest() for start in range(0, len(level), pair)]
    )


def subtree_root(hashes: Sequence[bytes]) -> bytes:
    """The hash of a complete subtree whose bottom-level hashes are given (a power of two of them),
    for example the node hash of a full tile: the tile's 256 hashes fold into one node 8 levels up.
    """
    count = len(hashes)
    if count == 0 or count & (count - 1):
        raise ValueError(f"a complete subtree has a power-of-two number of hashes, not {count}")
    return root(hashes)


def hash_at_leaves(leaf_hashes: Sequence[bytes]) -> HashAt:
    """A HashAt over an in-memory list of leaf hashes (computes each subtree it is asked for)."""

    def hash_at(level: int, index: int) -> bytes:
        start = index << level
        end = start + (1 << level)
        if end > len(leaf_hashes):
            raise ValueError(f"node ({level}, {index}) needs leaves up to {end}, have {len(leaf_hashes)}")
        if level == 0:
            return leaf_hashes[start]
        return root(leaf_hashes[start:end])

    return hash_at


def _as_hash_at(source: Sequence[bytes] | HashAt) -> HashAt:
    if callable(source):
        return source
    return hash_at_leaves(source)


def range_hash(start: int, end: int, hash_at: HashAt) -> bytes:
    """MTH(D[start:end]) from complete-subtree hashes.

    ``start`` must be a multiple of the largest power of two not above ``end - start`` (true of
    every range an RFC 6962 proof names). The range is the complete subtrees given by the binary
    digits of its length, largest first; their hash folds from the right.
    """
    if not 0 <= start <= end:
        raise ValueError(f"bad range [{start}, {end})")
    if start == end:
        return EMPTY_ROOT
    parts: list[bytes] = []
    position = start
    remaining = end - start
    for level in range(remaining.bit_length() - 1, -1, -1):
        if remaining >> level & 1:
            if position & ((1 << level) - 1):
                raise ValueError(f"range [{start}, {end}) is not aligned to its subtrees")
            parts.append(hash_at(level, position >> level))
            position += 1 << level
    result = parts[-1]
    for part in reversed(parts[:-1]):
        result = node_hash(part, result)
    return result


def _split(n: int) -> int:
    """The largest power of two strictly below n (n >= 2): where RFC 6962 splits a tree."""
    return 1 << ((n - 1).bit_length() - 1)


def inclusion_proof(source: Sequence[bytes] | HashAt, index: int, size: int) -> list[bytes]:
    """RFC 6962 PATH(index, D[0:size]): sibling hashes from the leaf's level up to the root's."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is not in a tree of size {size}")
    if not callable(source) and size > len(source):
        raise ValueError(f"tree size {size} is larger than the {len(source)} leaf hashes given")
    hash_at = _as_hash_at(source)
    path: list[bytes] = []  # collected root-first, returned leaf-first
    low, high = 0, size
    while high - low > 1:
        half = _split(high - low)
        if index < low + half:
            path.append(range_hash(low + half, high, hash_at))
            high = low + half
        else:
            path.append(range_hash(low, low + half, hash_at))
            low += half
    path.reverse()
    return path


def consistency_proof(size1: int, size2: int, source: Sequence[bytes] | HashAt) -> list[bytes]:
    """RFC 6962 PROOF(size1, D[0:size2]): that the tree of size1 is a prefix of the tree of size2.

    Requires 0 < size1 <= size2 (an empty tree is a prefix of every tree; there is nothing to prove).
    """
    if not 0 < size1 <= size2:
        raise ValueError(f"no consistency proof from size {size1} to size {size2}")
    if not callable(source) and size2 > len(source):
        raise ValueError(f"tree size {size2} is larger than the {len(source)} leaf hashes given")
    hash_at = _as_hash_at(source)
    proof: list[bytes] = []  # collected root-first, returned deepest-first
    low, high = 0, size2
    old = size1  # size of the old tree within the current subtree [low, high)
    whole = True  # the old tree is a complete subtree the verifier already knows (its root)
    while old != high - low:
        half = _split(high - low)
        if old <= half:
            proof.append(range_hash(low + half, high, hash_at))
            high = low + half
        else:
            proof.append(range_hash(low, low + half, hash_at))
            low += half
            old -= half
            whole = False
    if not whole:
        proof.append(range_hash(low, high, hash_at))
    proof.reverse()
    return proof


def _check_hash(check: str, name: str, value: bytes) -> None:
    if len(value) != HASH_SIZE:
        raise ProofError(check, f"{name} is {len(value)} bytes, not {HASH_SIZE}")


def _inclusion_length(index: int, size: int) -> int:
    # Below the level where the paths to `index` and to the last leaf part, every level has a
    # sibling; above it, only levels where `index` has a left neighbour on the right border do.
    inner = (index ^ (size - 1)).bit_length()
    return inner + (index >> inner).bit_count()


def root_from_inclusion_proof(leaf: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """The root that ``proof`` implies for ``leaf`` at ``index`` in a tree of ``size``.

    Checks:
      1. the index is inside the tree;
      2. the leaf hash and every proof hash are 32 bytes;
      3. the proof has exactly the number of hashes a tree of this size needs;
      4. the hashes chain up to a root (RFC 9162 §2.1.3.2).
    """
    if not 0 <= index < size:  # 1
        raise ProofError("index", f"leaf index {index} is not in a tree of size {size}")
    _check_hash("hash_size", "leaf hash", leaf)  # 2
    for position, sibling in enumerate(proof):
        _check_hash("hash_size", f"proof hash {position}", sibling)
    expected = _inclusion_length(index, size)  # 3
    if len(proof) != expected:
        raise ProofError("proof_length", f"{len(proof)} hashes, a tree of size {size} needs {expected}")
    fn, sn, result = index, size - 1, leaf  # 4
    for sibling in proof:
        if sn == 0:
            raise ProofError("proof_length", "proof continues above the root")
        if fn & 1 or fn == sn:
            result = node_hash(sibling, result)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            result = node_hash(result, sibling)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("proof_length", "proof stops below the root")
    return result


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root_hash: bytes) -> None:
    """Check that ``leaf`` is the leaf hash at ``index`` of the tree of ``size`` with ``root_hash``.

    Steps 1-4 as in `root_from_inclusion_proof`, then:
      5. the computed root equals ``root_hash``.
    """
    computed = root_from_inclusion_proof(leaf, index, size, proof)
    if computed != root_hash:  # 5
        raise ProofError("root", f"proof leads to root {computed.hex()}, expected {root_hash.hex()}")


def verify_consistency(size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes) -> None:
    """Check that the tree of ``size1`` with ``root1`` is a prefix of the tree of ``size2`` with ``root2``.

    Checks:
      1. 0 <= size1 <= size2 (a log never shrinks);
      2. size1 > 0: a proof from the empty tree is meaningless (compare root1 with EMPTY_ROOT instead);
      3. equal sizes: the proof is empty and the roots are equal, and nothing more is needed;
      4. the roots and every proof hash are 32 bytes;
      5. the proof has exactly the number of hashes these sizes need;
      6. the proof rebuilds root1 (RFC 9162 §2.1.4.2);
      7. the same hashes, extended to the right, rebuild root2.
    """
    if not 0 <= size1 <= size2:  # 1
        raise ProofError("sizes", f"size1 {size1} is larger than size2 {size2}, or negative")
    if size1 == 0:  # 2
        raise ProofError("sizes", "a consistency proof from the empty tree is meaningless")
    if size1 == size2:  # 3
        if proof:
            raise ProofError("proof_length", f"{len(proof)} hashes, equal sizes need none")
        if root1 != root2:
            raise ProofError("root2", "equal sizes but different roots")
        return
    _check_hash("hash_size", "root1", root1)  # 4
    _check_hash("hash_size", "root2", root2)
    for position, item in enumerate(proof):
        _check_hash("hash_size", f"proof hash {position}", item)
    # 5: the proof is the inclusion path of leaf size1-1 in the tree of size2, minus the levels
    # inside the largest complete subtree ending at size1, plus that subtree's root unless the
    # old tree is itself that subtree (then the verifier has it already: root1).
    shift = (size1 & -size1).bit_length() - 1
    seeded = size1 == 1 << shift
    expected = _inclusion_length(size1 - 1, size2) - shift + (0 if seeded else 1)
    if len(proof) != expected:
        raise ProofError("proof_length", f"{len(proof)} hashes, sizes {size1}->{size2} need {expected}")
    path = [root1, *proof] if seeded else list(proof)
    fn, sn = size1 - 1, size2 - 1  # 6 and 7 together: one walk computes both roots
    while fn & 1:
        fn >>= 1
        sn >>= 1
    old = new = path[0]
    for item in path[1:]:
        if sn == 0:
            raise ProofError("proof_length", "proof continues above the root")
        if fn & 1 or fn == sn:
            old = node_hash(item, old)
            new = node_hash(item, new)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            new = node_hash(new, item)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("proof_length", "proof stops below the root")
    if old != root1:  # 6
        raise ProofError("root1", f"proof leads to old root {old.hex()}, expected {root1.hex()}")
    if new != root2:  # 7
        raise ProofError("root2", f"proof leads to new root {new.hex()}, expected {root2.hex()}")


@dataclass(frozen=True)
class InclusionProof:
    """That the leaf at ``index`` is in the tree of ``size``: the RFC 6962 audit path."""

    index: int
    size: int
    hashes: tuple[bytes, ...]

    def verify(self, leaf: bytes, root_hash: bytes) -> None:
        verify_inclusion(leaf, self.index, self.size, self.hashes, root_hash)


@dataclass(frozen=True)
class ConsistencyProof:
    """That the tree of ``size1`` is a prefix of the tree of ``size2``."""

    size1: int
    size2: int
    hashes: tuple[bytes, ...]

    def verify(self, root1: bytes, root2: bytes) -> None:
        verify_consistency(self.size1, self.size2, self.hashes, root1, root2)


class CompactRange:
    """The Merkle tree of a growing log in O(log n) memory: one hash per complete subtree.

    The hashes are the roots of the complete subtrees the size's binary digits describe, largest
    (leftmost) first. Appending a leaf merges equal-sized subtrees like a binary counter carries,
    so each append costs one hash amortised and the root is available at every size.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self) -> None:
        self._size = 0
        self._hashes: list[bytes] = []

    @classmethod
    def from_nodes(cls, size: int, hash_at: HashAt) -> CompactRange:
        """Resume at ``size`` from stored complete-subtree hashes (for example from tiles)."""
        if size < 0:
            raise ValueError(f"negative size {size}")
        compact = cls()
        position = 0
        for level in range(size.bit_length() - 1, -1, -1):
            if size >> level & 1:
                node = hash_at(level, position >> level)
                if len(node) != HASH_SIZE:
                    raise ValueError(f"node ({level}, {position >> level}) is {len(node)} bytes")
                compact._hashes.append(node)
                position += 1 << level
        compact._size = size
        return compact

    @property
    def size(self) -> int:
        return self._size

    def nodes(self) -> list[tuple[int, int, bytes]]:
        """The (level, index, hash) of each complete subtree held, left to right."""
        out: list[tuple[int, int, bytes]] = []
        position = 0
        hashes = iter(self._hashes)
        for level in range(self._size.bit_length() - 1, -1, -1):
            if self._size >> level & 1:
                out.append((level, position >> level, next(hashes)))
                position += 1 << level
        return out

    def copy(self) -> CompactRange:
        other = CompactRange()
        other._size = self._size
        other._hashes = list(self._hashes)
        return other

    def append(self, leaf: bytes, visit: NodeVisitor | None = None) -> int:
        """Add one leaf hash; return its index. ``visit`` sees the leaf and every node it completes."""
        if len(leaf) != HASH_SIZE:
            raise ValueError(f"leaf hash is {len(leaf)} bytes, not {HASH_SIZE}")
        index = self._size
        stack = self._hashes
        current = leaf
        if visit is not None:
            visit(0, index, leaf)
        carry = index
        level = 0
        while carry & 1:
            current = _sha256(NODE_PREFIX + stack.pop() + current).digest()
            carry >>= 1
            level += 1
            if visit is not None:
                visit(level, carry, current)
        stack.append(current)
        self._size = index + 1
        return index

    def extend(self, leaves: Iterable[bytes]) -> None:
        """Append many leaf hashes."""
        self.extend_visiting(leaves, every=0)

    def extend_visiting(self, leaves: Iterable[bytes], every: int) -> list[tuple[int, int, bytes]]:
        """Append many leaf hashes, returning each node completed at a level that is a positive
        multiple of ``every`` (none for 0), as (level, index, hash) in the order `append` would
        visit them: what a tile builder needs, without a call per node. The hot loop of the
        ledger worker and of verification, so everything is local."""
        stack = self._hashes
        push, pop = stack.append, stack.pop
        sha, prefix, size = _sha256, NODE_PREFIX, self._size
        visited: list[tuple[int, int, bytes]] = []
        try:
            for leaf in leaves:
                if len(leaf) != HASH_SIZE:
                    raise ValueError(f"leaf hash {size} is {len(leaf)} bytes, not {HASH_SIZE}")
                current = leaf
                carry = size
                level = 0
                while carry & 1:
                    current = sha(prefix + pop() + current).digest()
                    carry >>= 1
                    level += 1
                    if every and level % every == 0:
                        visited.append((level, carry, current))
                push(current)
                size += 1
        finally:
            self._size = size
        return visited

    def root(self) -> bytes:
        if not self._hashes:
            return EMPTY_ROOT
        result = self._hashes[-1]
        for left in reversed(self._hashes[:-1]):
            result = node_hash(left, result)
        return result


# The ledger worker's name for the same thing: a log it appends to and reads roots from.
MerkleLog = CompactRange
