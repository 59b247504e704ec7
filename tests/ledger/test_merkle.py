"""Merkle maths against a literal transcription of RFC 6962 §2.1, plus tamper cases."""

from __future__ import annotations

import hashlib
import random

import pytest

from ledger.merkle import (
    EMPTY_ROOT,
    CompactRange,
    ConsistencyProof,
    InclusionProof,
    ProofError,
    consistency_proof,
    hash_at_leaves,
    hash_pairs,
    inclusion_proof,
    leaf_hash,
    node_hash,
    range_hash,
    root,
    root_from_inclusion_proof,
    subtree_root,
    verify_consistency,
    verify_inclusion,
)

# --- RFC 6962 §2.1, recursive and slow on purpose: the reference the fast code is checked against.


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: list[bytes]) -> bytes:
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return d[0]
    k = _k(len(d))
    return hashlib.sha256(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:])).digest()


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [ref_mth(d)]
    k = _k(n)
    if m <= k:
        return [*ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


def leaves(n: int, seed: int = 0) -> list[bytes]:
    return [leaf_hash(f"{seed}:{i}".encode()) for i in range(n)]


# --- hashes and roots


def test_hash_functions_follow_rfc6962() -> None:
    assert leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    a, b = leaf_hash(b"a"), leaf_hash(b"b")
    assert node_hash(a, b) == hashlib.sha256(b"\x01" + a + b).digest()


def test_known_root_of_the_upstream_test_tree() -> None:
    # The 8-leaf tree of RFC 6962's examples as used by transparency-dev/merkle's tests.
    data = [bytes.fromhex(h) for h in ["", "00", "10", "2021", "3031", "40414243", "5051525354555657"]]
    data.append(bytes.fromhex("606162636465666768696a6b6c6d6e6f"))
    expected = "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
    assert root([leaf_hash(x) for x in data]).hex() == expected


@pytest.mark.parametrize("size", [*range(0, 70), 127, 128, 129, 255, 256, 257, 1000, 1023, 1025])
def test_root_matches_reference(size: int) -> None:
    d = leaves(size)
    assert root(d) == ref_mth(d)


def test_compact_range_matches_reference_at_every_size_to_300() -> None:
    d = leaves(301)
    compact = CompactRange()
    for size in range(301):
        assert compact.size == size
        assert compact.root() == ref_mth(d[:size])
        if size < 300:
            compact.append(d[size])


def test_compact_range_extend_equals_append_and_resumes_from_nodes() -> None:
    rng = random.Random(6962)
    for _ in range(40):
        size = rng.randrange(0, 3000)
        d = leaves(size, seed=size)
        appended = CompactRange()
        for h in d:
            appended.append(h)
        extended = CompactRange()
        extended.extend(d)
        assert extended.root() == appended.root() == root(d)
        resumed = CompactRange.from_nodes(size, hash_at_leaves(d))
        assert resumed.root() == root(d)
        assert resumed.nodes() == extended.nodes()
        more = leaves(37, seed=-1)
        resumed.extend(more)
        assert resumed.root() == root(d + more)


def test_compact_range_visitor_sees_every_complete_node_once() -> None:
    d = leaves(100)
    seen: list[tuple[int, int, bytes]] = []
    compact = CompactRange()
    for h in d:
        compact.append(h, lambda level, index, node: seen.append((level, index, node)))
    expected = [
        (level, index, hash_at_leaves(d)(level, index)) for level in range(7) for index in range(100 >> level)
    ]
    assert sorted(seen) == sorted(expected)


def test_compact_range_rejects_wrong_hash_size_without_corrupting_state() -> None:
    compact = CompactRange()
    compact.extend(leaves(5))
    before = compact.root()
    with pytest.raises(ValueError, match="33 bytes"):
        compact.extend([leaf_hash(b"x"), b"\x00" * 33])
    assert compact.size == 6
    with pytest.raises(ValueError, match="31 bytes"):
        compact.append(b"\x00" * 31)
    assert compact.size == 6
    assert root([*leaves(5), leaf_hash(b"x")]) == compact.root() != before


def test_subtree_root_and_range_hash() -> None:
    d = leaves(96)
    assert subtree_root(d[:64]) == ref_mth(d[:64])
    with pytest.raises(ValueError, match="power-of-two"):
        subtree_root(d[:3])
    hash_at = hash_at_leaves(d)
    for start, end in [(0, 96), (64, 96), (64, 95), (32, 33), (0, 0), (80, 89)]:
        assert range_hash(start, end, hash_at) == ref_mth(d[start:end])
    with pytest.raises(ValueError, match="aligned"):
        range_hash(1, 4, hash_at)


# --- proofs


def test_proofs_match_reference_exhaustively_to_size_40() -> None:
    for size in range(1, 41):
        d = leaves(size)
        r = root(d)
        for index in range(size):
            proof = inclusion_proof(d, index, size)
            assert proof == ref_path(index, d)
            verify_inclusion(d[index], index, size, proof, r)
        for size1 in range(1, size + 1):
            proof = consistency_proof(size1, size, d)
            assert proof == ref_subproof(size1, d, True)
            verify_consistency(size1, size, proof, root(d[:size1]), r)


def test_proofs_for_random_larger_sizes() -> None:
    rng = random.Random(9162)
    d = leaves(5000)
    for _ in range(60):
        size2 = rng.randrange(1, 5000)
        size1 = rng.randrange(1, size2 + 1)
        index = rng.randrange(size2)
        tree = d[:size2]
        r2 = root(tree)
        verify_inclusion(tree[index], index, size2, inclusion_proof(tree, index, size2), r2)
        # A source longer than the tree: proofs are of the prefix of the given size.
        assert inclusion_proof(d, index, size2) == inclusion_proof(tree, index, size2)
        verify_consistency(size1, size2, consistency_proof(size1, size2, d), root(d[:size1]), r2)


def test_proof_dataclasses_verify() -> None:
    d = leaves(11)
    InclusionProof(3, 11, tuple(inclusion_proof(d, 3, 11))).verify(d[3], root(d))
    ConsistencyProof(4, 11, tuple(consistency_proof(4, 11, d))).verify(root(d[:4]), root(d))
    with pytest.raises(ProofError):
        InclusionProof(4, 11, tuple(inclusion_proof(d, 3, 11))).verify(d[3], root(d))


def test_proof_generation_rejects_impossible_requests() -> None:
    d = leaves(4)
    with pytest.raises(ValueError, match="not in a tree"):
        inclusion_proof(d, 4, 4)
    with pytest.raises(ValueError, match="larger than"):
        inclusion_proof(d, 0, 5)
    with pytest.raises(ValueError, match="no consistency proof"):
        consistency_proof(0, 4, d)
    with pytest.raises(ValueError, match="no consistency proof"):
        consistency_proof(3, 2, d)
    assert consistency_proof(4, 4, d) == []


# --- tampering: each is caught, by the step that names it


def _flip(value: bytes, bit: int = 0) -> bytes:
    return bytes([value[0] ^ (1 << bit), *value[1:]])


def test_inclusion_tamper_cases_name_the_failed_check() -> None:
    d = leaves(21)
    r = root(d)
    proof = inclusion_proof(d, 13, 21)
    cases: list[tuple[str, tuple[bytes, int, int, list[bytes], bytes]]] = [
        ("root", (_flip(d[13]), 13, 21, proof, r)),
        ("root", (d[13], 13, 21, [proof[0], _flip(proof[1], 7), *proof[2:]], r)),
        ("root", (d[13], 13, 21, proof, _flip(r))),
        ("root", (d[13], 12, 21, proof, r)),
        ("proof_length", (d[13], 13, 21, proof[:-1], r)),
        ("proof_length", (d[13], 13, 21, [*proof, r], r)),
        ("proof_length", (d[13], 13, 42, proof, r)),
        ("index", (d[13], 21, 21, proof, r)),
        ("index", (d[13], -1, 21, proof, r)),
        ("hash_size", (d[13][:31], 13, 21, proof, r)),
        ("hash_size", (d[13], 13, 21, [b"", *proof[1:]], r)),
    ]
    for check, args in cases:
        with pytest.raises(ProofError) as caught:
            verify_inclusion(*args)
        assert caught.value.check == check, (check, caught.value)


def test_root_from_inclusion_proof_of_single_leaf_is_the_leaf() -> None:
    h = leaf_hash(b"only")
    assert root_from_inclusion_proof(h, 0, 1, []) == h


def test_consistency_tamper_cases_name_the_failed_check() -> None:
    d = leaves(23)
    r1, r2 = root(d[:6]), root(d)
    proof = consistency_proof(6, 23, d)
    cases: list[tuple[str, tuple[int, int, list[bytes], bytes, bytes]]] = [
        ("root1", (6, 23, proof, _flip(r1), r2)),
        ("root2", (6, 23, proof, r1, _flip(r2))),
        ("root1", (6, 23, [_flip(proof[0]), *proof[1:]], r1, r2)),
        ("root2", (6, 23, [*proof[:-1], _flip(proof[-1])], r1, r2)),
        ("proof_length", (6, 23, proof[:-1], r1, r2)),
        ("proof_length", (6, 23, [*proof, r2], r1, r2)),
        ("proof_length", (6, 23, [], r1, r2)),
        ("sizes", (7, 6, [], r1, r2)),
        ("sizes", (0, 23, [], EMPTY_ROOT, r2)),
        ("root2", (6, 6, [], r1, r2)),
        ("proof_length", (6, 6, [r1], r1, r1)),
        ("hash_size", (6, 23, proof, r1[:-1], r2)),
    ]
    for check, args in cases:
        with pytest.raises(ProofError) as caught:
            verify_consistency(*args)
        assert caught.value.check == check, (check, caught.value)


def test_a_rewritten_history_is_not_consistent() -> None:
    # The log's first six leaves are replaced and the tree regrown: same sizes, different roots.
    honest = leaves(30)
    forged = leaves(6, seed=666) + honest[6:]
    proof = consistency_proof(10, 30, forged)
    with pytest.raises(ProofError) as caught:
        verify_consistency(10, 30, proof, root(honest[:10]), root(forged))
    assert caught.value.check == "root1"


def test_hash_pairs_is_the_level_above() -> None:
    level = [leaf_hash(bytes([i])) for i in range(8)]
    above = hash_pairs(b"".join(level))
    assert above == b"".join(node_hash(level[i], level[i + 1]) for i in range(0, 8, 2))
    assert hash_pairs(hash_pairs(above)) == root(level)
    assert hash_pairs(b"") == b""
