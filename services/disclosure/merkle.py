"""The disclosure log's Merkle tree: RFC 9162 hashing, proofs from stored subtrees.

The tree is the one RFC 9162 §2.1 defines over the log's leaves: a leaf
hashes as SHA-256(0x00 ‖ leaf bytes), an interior node as SHA-256(0x01 ‖
left ‖ right), and a tree of n leaves splits at the largest power of two
below n. Anyone holding the leaves can rebuild it; nothing here is ours to
choose.

What is ours is how it is stored so that a proof stays cheap at a million
entries. Every *perfect* subtree (2**level leaves starting at a multiple of
2**level) is written once, when its last leaf arrives, under its key
``(level, index)``: on average two nodes per append. Every subtree that a
root or a proof of the RFC needs is either such a perfect subtree or the
ragged right edge of the tree, which is a chain of at most log2(n) perfect
ones. So a root or a proof reads O(log n) stored nodes, and it is computed
in two steps: ``*_keys`` says which nodes it needs (the caller fetches them
in one round-trip), then the proof is computed from them.

The head of the log keeps the *frontier*: the roots of the perfect subtrees
the current tree decomposes into, largest first (one per set bit of its
size). Appending a leaf only merges the frontier's tail, and the current
root folds the frontier, without reading any stored node.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence

NodeKey = tuple[int, int]
"""``(level, index)``: the perfect subtree over leaves [index·2**level, (index+1)·2**level)."""

EMPTY_ROOT = hashlib.sha256(b"").digest()


class ProofRangeError(ValueError):
    """A proof was asked for positions the tree does not have."""


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def append(
    frontier: Sequence[bytes], size: int, leaf: bytes
) -> tuple[list[bytes], list[tuple[NodeKey, bytes]]]:
    """Add leaf number ``size``: the new frontier and the perfect subtrees it completes."""
    if len(frontier) != size.bit_count():
        raise ValueError(f"a frontier of a tree of {size} leaves has {size.bit_count()} hashes")
    merged = list(frontier)
    level, current = 0, leaf_hash(leaf)
    completed = [((0, size), current)]
    # The frontier's tail is a perfect subtree of 2**level leaves exactly when
    # that bit of the old size is set: each set low bit merges one level up.
    while size >> level & 1:
        current = node_hash(merged.pop(), current)
        level += 1
        completed.append(((level, size >> level), current))
    merged.append(current)
    return merged, completed


def root_from_frontier(frontier: Sequence[bytes]) -> bytes:
    if not frontier:
        return EMPTY_ROOT
    root = frontier[-1]
    for subtree in reversed(frontier[:-1]):
        root = node_hash(subtree, root)
    return root


def frontier_keys(size: int) -> list[NodeKey]:
    """The perfect subtrees a tree of ``size`` leaves decomposes into, largest first."""
    return _perfect_cover(0, size)


def root_keys(size: int) -> set[NodeKey]:
    return set(_perfect_cover(0, size))


def root(size: int, nodes: Mapping[NodeKey, bytes]) -> bytes:
    """The root of the tree of the first ``size`` leaves (RFC 9162 MTH)."""
    if size == 0:
        return EMPTY_ROOT
    return _range_hash(0, size, nodes)


def inclusion_keys(index: int, size: int) -> set[NodeKey]:
    _check_inclusion(index, size)
    return _keys_of(_inclusion_ranges(index, 0, size))


def inclusion_proof(index: int, size: int, nodes: Mapping[NodeKey, bytes]) -> list[bytes]:
    """The audit path of leaf ``index`` in the tree of ``size`` leaves (RFC 9162 PATH)."""
    _check_inclusion(index, size)
    return [_range_hash(lo, hi, nodes) for lo, hi in _inclusion_ranges(index, 0, size)]


def consistency_keys(first: int, second: int) -> set[NodeKey]:
    _check_consistency(first, second)
    return _keys_of(_consistency_ranges(first, 0, second, True))


def consistency_proof(first: int, second: int, nodes: Mapping[NodeKey, bytes]) -> list[bytes]:
    """Why the tree of ``first`` leaves is a prefix of that of ``second`` (RFC 9162 PROOF)."""
    _check_consistency(first, second)
    return [_range_hash(lo, hi, nodes) for lo, hi in _consistency_ranges(first, 0, second, True)]


def verify_inclusion(
    leaf: bytes, index: int, size: int, path: Sequence[bytes], expected_root: bytes
) -> bool:
    """RFC 9162 §2.1.3.2, given the leaf *hash*: does the path lead to the root?"""
    if index >= size or index < 0:
        return False
    fn, sn, current = index, size - 1, leaf
    for sibling in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            current = node_hash(sibling, current)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            current = node_hash(current, sibling)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and current == expected_root


def verify_consistency(
    first: int, second: int, path: Sequence[bytes], first_root: bytes, second_root: bytes
) -> bool:
    """RFC 9162 §2.1.4.2: is the tree of ``first`` leaves a prefix of that of ``second``?"""
    if first < 0 or first > second:
        return False
    if first == second:
        return not path and first_root == second_root
    if first == 0:
        return not path and first_root == EMPTY_ROOT
    if not path:
        return False
    proof = list(path)
    if first & (first - 1) == 0:
        proof.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    first_hash = second_hash = proof[0]
    for sibling in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            first_hash = node_hash(sibling, first_hash)
            second_hash = node_hash(sibling, second_hash)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            second_hash = node_hash(second_hash, sibling)
        fn, sn = fn >> 1, sn >> 1
    return first_hash == first_root and second_hash == second_root and sn == 0


# The RFC's recursions, over leaf ranges [lo, hi) instead of copied lists.


def _split(count: int) -> int:
    """The largest power of two smaller than ``count`` (count > 1)."""
    return 1 << (count - 1).bit_length() - 1


def _inclusion_ranges(index: int, lo: int, hi: int) -> list[tuple[int, int]]:
    """The subtrees of RFC 9162's PATH(index, D[lo:hi]), leaf side first."""
    if hi - lo == 1:
        return []
    middle = lo + _split(hi - lo)
    if index < middle:
        return [*_inclusion_ranges(index, lo, middle), (middle, hi)]
    return [*_inclusion_ranges(index, middle, hi), (lo, middle)]


def _consistency_ranges(first: int, lo: int, hi: int, whole: bool) -> list[tuple[int, int]]:
    """The subtrees of RFC 9162's SUBPROOF(first, D[lo:hi], whole)."""
    if lo + first == hi:
        return [] if whole else [(lo, hi)]
    middle = lo + _split(hi - lo)
    if lo + first <= middle:
        return [*_consistency_ranges(first, lo, middle, whole), (middle, hi)]
    return [*_consistency_ranges(first - (middle - lo), middle, hi, False), (lo, middle)]


def _perfect_cover(lo: int, hi: int) -> list[NodeKey]:
    """The stored subtrees whose hashes make up the RFC subtree [lo, hi), left to right.

    The RFC's left subtrees are always perfect and aligned; only a right edge
    is ragged, and it splits again the same way.
    """
    cover = []
    while lo < hi:
        count = hi - lo
        width = count if count & (count - 1) == 0 else _split(count)
        level = width.bit_length() - 1
        cover.append((level, lo >> level))
        lo += width
    return cover


def _range_hash(lo: int, hi: int, nodes: Mapping[NodeKey, bytes]) -> bytes:
    cover = _perfect_cover(lo, hi)
    try:
        hashes = [nodes[key] for key in cover]
    except KeyError as missing:
        raise KeyError(f"stored node {missing.args[0]} is missing") from None
    return root_from_frontier(hashes)


def _keys_of(ranges: Iterable[tuple[int, int]]) -> set[NodeKey]:
    return {key for lo, hi in ranges for key in _perfect_cover(lo, hi)}


def _check_inclusion(index: int, size: int) -> None:
    if not 0 <= index < size:
        raise ProofRangeError(f"leaf {index} is not in a tree of {size} leaves")


def _check_consistency(first: int, second: int) -> None:
    if not 0 < first <= second:
        raise ProofRangeError(
            f"a consistency proof needs 0 < first <= second (got first={first}, second={second})"
        )
