"""merkle.py against an independent reference written from RFC 9162.

The reference (`tests/support/rfc9162.py`) follows the RFC's recursive
definitions over a list of entries and its verification step lists; merkle.py
stores perfect subtrees and works from them. Here the log is built the way the
service builds it, one `append` at a time, and every root and proof it serves
(from the nodes those appends produced, and only from the nodes its `*_keys`
asked for) must be exactly the RFC's MTH, PATH and PROOF, accepted by the RFC's
verifier, and every damaged proof must be refused by both verifiers.

Sizes: every tree of 1..70 entries with every leaf and every (first, second)
pair, then larger trees around powers of two (127..129, 1000, 1024, 1025) with
sampled leaves and pairs.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shequ_services.disclosure import merkle
from tests.support import rfc9162

SMALL_SIZES = tuple(range(1, 71))
LARGE_SIZES = (127, 128, 129, 1000, 1024, 1025)
ALL_SIZES = SMALL_SIZES + LARGE_SIZES
LOG_SIZE = max(ALL_SIZES) + 1
ZERO = bytes(32)


def entry(number: int) -> bytes:
    """Distinct entries, so that no two leaves (and no two subtrees) hash alike."""
    return f"entry {number}".encode()


@dataclass
class Log:
    """A log of LOG_SIZE entries built by merkle.append, as the store builds it."""

    entries: list[bytes]
    frontiers: list[list[bytes]]  # frontiers[n]: the frontier of the tree of n entries
    nodes: dict[merkle.NodeKey, bytes]
    completed_by: dict[merkle.NodeKey, int]  # which append (leaf index) produced the node
    reference: rfc9162.Tree = field(repr=False)

    def root(self, size: int) -> bytes:
        return self.reference.mth(0, size)

    def only(self, keys: set[merkle.NodeKey]) -> dict[merkle.NodeKey, bytes]:
        """The stored nodes a proof asked for, and nothing else: the store's one round-trip."""
        return {key: self.nodes[key] for key in keys}


@functools.cache
def built_log() -> Log:
    entries = [entry(number) for number in range(LOG_SIZE)]
    frontier: list[bytes] = []
    frontiers = [list(frontier)]
    nodes: dict[merkle.NodeKey, bytes] = {}
    completed_by: dict[merkle.NodeKey, int] = {}
    for size, leaf in enumerate(entries):
        frontier, completed = merkle.append(frontier, size, leaf)
        for key, value in completed:
            assert key not in nodes, f"append {size} wrote node {key} a second time"
            nodes[key] = value
            completed_by[key] = size
        frontiers.append(list(frontier))
    # The reference runs on past the log so that proofs can be compared with the
    # RFC's at sizes the log has not reached (a proof shown under a wrong size).
    reference = rfc9162.Tree([entry(number) for number in range(2 * LOG_SIZE + 8)])
    return Log(entries, frontiers, nodes, completed_by, reference)


def sampled_indices(size: int) -> list[int]:
    """Every leaf of a small tree; the edges, the powers of two and 24 others of a large one."""
    if size <= 70:
        return list(range(size))
    picks = {0, 1, size // 2, size - 2, size - 1}
    power = 1
    while power < size:
        picks.update(p for p in (power - 1, power, power + 1) if p < size)
        power *= 2
    picks.update(random.Random(size).sample(range(size), 24))
    return sorted(picks)


def sampled_firsts(second: int) -> list[int]:
    """Every earlier size of a small tree; edges, powers of two and 24 others of a large one."""
    if second <= 70:
        return list(range(1, second + 1))
    return sorted({index + 1 for index in sampled_indices(second)} | {1, second})


def flip(value: bytes, bit: int) -> bytes:
    data = bytearray(value)
    data[(bit // 8) % len(data)] ^= 1 << (bit % 8)
    return bytes(data)


# --- the tree itself ------------------------------------------------------------


def test_each_append_stores_exactly_the_perfect_subtrees_its_leaf_completes() -> None:
    log = built_log()
    expected = {
        (level, index)
        for level in range(LOG_SIZE.bit_length())
        for index in range(LOG_SIZE >> level)
    }
    assert set(log.nodes) == expected
    for (level, index), appended in log.completed_by.items():
        assert appended == (index + 1) * 2**level - 1


def test_every_stored_node_is_the_rfc_hash_of_its_subtree() -> None:
    log = built_log()
    for (level, index), value in log.nodes.items():
        assert value == log.reference.mth(index * 2**level, (index + 1) * 2**level)


def test_the_frontier_after_every_append_folds_to_the_rfc_root() -> None:
    log = built_log()
    for size, frontier in enumerate(log.frontiers):
        assert merkle.root_from_frontier(frontier) == log.root(size), size


@pytest.mark.parametrize("size", (0, *ALL_SIZES))
def test_the_root_from_stored_nodes_is_the_rfc_mth(size: int) -> None:
    log = built_log()
    assert merkle.root(size, log.only(merkle.root_keys(size))) == log.root(size)
    assert merkle.root(size, log.nodes) == log.root(size)


def test_the_empty_tree_has_the_rfc_empty_root() -> None:
    assert merkle.EMPTY_ROOT == rfc9162.MTH([]) == rfc9162.HASH(b"")
    assert merkle.root_from_frontier([]) == merkle.EMPTY_ROOT
    assert merkle.root(0, {}) == merkle.EMPTY_ROOT


def test_leaf_and_node_hashes_are_the_rfc_domain_separated_hashes() -> None:
    left, right = rfc9162.leaf_hash(b"a"), rfc9162.leaf_hash(b"b")
    assert merkle.leaf_hash(b"a") == left
    assert merkle.node_hash(left, right) == rfc9162.MTH([b"a", b"b"])


# --- which nodes a proof reads ---------------------------------------------------


def assert_keys_are_complete_in(keys: set[merkle.NodeKey], size: int) -> None:
    """A proof at `size` may read only subtrees that were complete when the log had `size`."""
    for level, index in keys:
        assert (index + 1) * 2**level <= size, ((level, index), size)


@pytest.mark.parametrize("size", ALL_SIZES)
def test_proofs_read_only_nodes_complete_at_their_size_and_o_log_n_of_them(size: int) -> None:
    bound = 2 * size.bit_length()
    assert len(merkle.root_keys(size)) <= size.bit_length()
    assert_keys_are_complete_in(merkle.root_keys(size), size)
    for index in sampled_indices(size):
        keys = merkle.inclusion_keys(index, size)
        assert_keys_are_complete_in(keys, size)
        assert len(keys) <= bound
    for first in sampled_firsts(size):
        keys = merkle.consistency_keys(first, size)
        assert_keys_are_complete_in(keys, size)
        assert len(keys) <= bound


# --- inclusion proofs ------------------------------------------------------------


@pytest.mark.parametrize("size", ALL_SIZES)
def test_every_inclusion_proof_is_the_rfc_path_and_verifies(size: int) -> None:
    log = built_log()
    root = log.root(size)
    for index in sampled_indices(size):
        path = merkle.inclusion_proof(index, size, log.only(merkle.inclusion_keys(index, size)))
        assert path == log.reference.path(index, size), (index, size)
        assert merkle.inclusion_proof(index, size, log.nodes) == path
        leaf = merkle.leaf_hash(log.entries[index])
        assert rfc9162.verify_inclusion(leaf, index, size, path, root)
        assert merkle.verify_inclusion(leaf, index, size, path, root)


def inclusion_damages(index: int, size: int, path: list[bytes], root: bytes, leaf: bytes):
    """(description, leaf, index, size, path, root) for proofs that must not verify."""
    for position in range(len(path)):
        for bit in (0, 7, 8 * position + 3, 255):
            damaged = list(path)
            damaged[position] = flip(damaged[position], bit)
            yield f"bit {bit} of path[{position}] flipped", leaf, index, size, damaged, root
    yield "leaf hash bit flipped", flip(leaf, 5), index, size, path, root
    yield "root bit flipped", leaf, index, size, path, flip(root, 200)
    yield "entry's own bytes instead of its leaf hash", b"x" * 32, index, size, path, root
    if path:
        yield "last element dropped", leaf, index, size, path[:-1], root
        yield "first element dropped", leaf, index, size, path[1:], root
    if len(path) > 1:
        yield "elements reversed", leaf, index, size, path[::-1], root
    yield "root appended", leaf, index, size, [*path, root], root
    yield "zero hash appended", leaf, index, size, [*path, ZERO], root
    yield "zero hash prepended", leaf, index, size, [ZERO, *path], root
    yield "index past the end", leaf, size, size, path, root
    yield "negative index", leaf, -1, size, path, root
    yield "empty tree", leaf, index, 0, path, root


@pytest.mark.parametrize("size", ALL_SIZES)
def test_a_damaged_inclusion_proof_is_refused_by_both_verifiers(size: int) -> None:
    log = built_log()
    root = log.root(size)
    for index in sampled_indices(size):
        path = log.reference.path(index, size)
        leaf = rfc9162.leaf_hash(log.entries[index])
        for description, *case in inclusion_damages(index, size, path, root, leaf):
            assert not rfc9162.verify_inclusion(*case), (description, index, size)
            assert not merkle.verify_inclusion(*case), (description, index, size)


@pytest.mark.parametrize("size", ALL_SIZES)
def test_an_inclusion_proof_for_another_index_is_refused(size: int) -> None:
    log = built_log()
    root = log.root(size)
    indices = sampled_indices(size)
    others = range(size) if size <= 32 else indices
    for index in indices:
        path = log.reference.path(index, size)
        leaf = rfc9162.leaf_hash(log.entries[index])
        for other in others:
            if other != index:
                assert not rfc9162.verify_inclusion(leaf, other, size, path, root), (index, other)
                assert not merkle.verify_inclusion(leaf, other, size, path, root), (index, other)


@pytest.mark.parametrize("size", ALL_SIZES)
def test_an_inclusion_proof_under_another_tree_size_is_refused_when_its_shape_differs(
    size: int,
) -> None:
    """A wrong size is refused whenever the RFC path at that size has another length.

    Where the path at the other size has the same length and the same left/right
    shape (index 0 of 7 and of 8, say), the RFC verifier recomputes the same root
    and accepts: the hashes do not commit to the size, the signed checkpoint
    does. merkle.py must then agree with the RFC, which the last assert checks.
    """
    log = built_log()
    root = log.root(size)
    for index in sampled_indices(size)[:40]:
        path = log.reference.path(index, size)
        leaf = rfc9162.leaf_hash(log.entries[index])
        for other in {size - 1, size + 1, size * 2, size // 2, size + 7, max(1, size - 7)}:
            if other == size or other <= index:
                continue
            ours = merkle.verify_inclusion(leaf, index, other, path, root)
            theirs = rfc9162.verify_inclusion(leaf, index, other, path, root)
            if len(log.reference.path(index, other)) != len(path):
                assert not theirs and not ours, (index, size, other)
            assert ours == theirs, (index, size, other)


# --- consistency proofs ----------------------------------------------------------


@pytest.mark.parametrize("second", ALL_SIZES)
def test_every_consistency_proof_is_the_rfc_proof_and_verifies(second: int) -> None:
    log = built_log()
    second_root = log.root(second)
    for first in sampled_firsts(second):
        keys = merkle.consistency_keys(first, second)
        proof = merkle.consistency_proof(first, second, log.only(keys))
        assert proof == log.reference.proof(first, second), (first, second)
        assert merkle.consistency_proof(first, second, log.nodes) == proof
        first_root = log.root(first)
        assert rfc9162.verify_consistency(first, second, proof, first_root, second_root)
        assert merkle.verify_consistency(first, second, proof, first_root, second_root)


def test_consistency_proofs_between_random_sizes_across_the_whole_log() -> None:
    log = built_log()
    pick = random.Random(9162)
    for _ in range(400):
        first, second = sorted(pick.sample(range(1, LOG_SIZE + 1), 2))
        keys = merkle.consistency_keys(first, second)
        proof = merkle.consistency_proof(first, second, log.only(keys))
        assert proof == log.reference.proof(first, second), (first, second)
        roots = log.root(first), log.root(second)
        assert merkle.verify_consistency(first, second, proof, *roots), (first, second)


def consistency_damages(first: int, second: int, proof: list[bytes], a: bytes, b: bytes):
    """(description, first, second, proof, first_root, second_root) that must not verify."""
    for position in range(len(proof)):
        for bit in (0, 7, 8 * position + 3, 255):
            damaged = list(proof)
            damaged[position] = flip(damaged[position], bit)
            yield f"bit {bit} of proof[{position}] flipped", first, second, damaged, a, b
    yield "first root bit flipped", first, second, proof, flip(a, 9), b
    yield "second root bit flipped", first, second, proof, a, flip(b, 9)
    if first != second:
        yield "roots swapped", first, second, proof, b, a
        yield "empty proof", first, second, [], a, b
        yield "last element dropped", first, second, proof[:-1], a, b
        yield "first element dropped", first, second, proof[1:], a, b
    yield "first root appended", first, second, [*proof, a], a, b
    yield "second root appended", first, second, [*proof, b], a, b
    yield "zero hash prepended", first, second, [ZERO, *proof], a, b
    yield "first size past the second", second + 1, second, proof, a, b
    yield "first size zero", 0, second, proof, a, b


@pytest.mark.parametrize("second", ALL_SIZES)
def test_a_damaged_consistency_proof_is_refused_by_both_verifiers(second: int) -> None:
    log = built_log()
    second_root = log.root(second)
    for first in sampled_firsts(second):
        proof = log.reference.proof(first, second)
        first_root = log.root(first)
        for description, *case in consistency_damages(
            first, second, proof, first_root, second_root
        ):
            assert not rfc9162.verify_consistency(*case), (description, first, second)
            assert not merkle.verify_consistency(*case), (description, first, second)


@pytest.mark.parametrize("second", ALL_SIZES)
def test_a_consistency_proof_for_another_first_size_is_refused(second: int) -> None:
    log = built_log()
    second_root = log.root(second)
    firsts = sampled_firsts(second)
    others = range(0, second + 1) if second <= 32 else firsts
    for first in firsts:
        proof = log.reference.proof(first, second)
        first_root = log.root(first)
        for other in others:
            if other != first:
                case = (other, second, proof, first_root, second_root)
                assert not rfc9162.verify_consistency(*case), (first, other, second)
                assert not merkle.verify_consistency(*case), (first, other, second)


@pytest.mark.parametrize("second", ALL_SIZES)
def test_a_consistency_proof_under_another_second_size_is_refused_when_its_shape_differs(
    second: int,
) -> None:
    """As for inclusion: refused when the RFC proof at the other size has another length,
    and merkle.py agrees with the RFC verifier in every case."""
    log = built_log()
    second_root = log.root(second)
    for first in sampled_firsts(second)[:40]:
        proof = log.reference.proof(first, second)
        first_root = log.root(first)
        for other in {second - 1, second + 1, second * 2, second // 2, second + 7}:
            if other == second or other < first:
                continue
            case = (first, other, proof, first_root, second_root)
            ours, theirs = merkle.verify_consistency(*case), rfc9162.verify_consistency(*case)
            if len(log.reference.proof(first, other)) != len(proof):
                assert not theirs and not ours, (first, second, other)
            assert ours == theirs, (first, second, other)


def test_the_trivial_consistency_cases_outside_the_rfc_algorithm() -> None:
    """first == second (equal heads, empty proof) and first == 0 (empty tree, empty proof)."""
    log = built_log()
    root = log.root(5)
    assert merkle.consistency_proof(5, 5, log.nodes) == [] == log.reference.proof(5, 5)
    for verify in (merkle.verify_consistency, rfc9162.verify_consistency):
        assert verify(5, 5, [], root, root)
        assert not verify(5, 5, [], root, log.root(6))
        assert not verify(5, 5, [root], root, root)
        assert verify(0, 5, [], merkle.EMPTY_ROOT, root)
        assert not verify(0, 5, [], root, root)
        assert not verify(6, 5, [], root, root)


@pytest.mark.parametrize(
    ("index", "size"), [(0, 0), (3, 3), (4, 3), (-1, 3)], ids=["empty", "at", "past", "negative"]
)
def test_an_inclusion_proof_outside_the_tree_is_a_value_error(index: int, size: int) -> None:
    log = built_log()
    with pytest.raises(ValueError):
        merkle.inclusion_keys(index, size)
    with pytest.raises(ValueError):
        merkle.inclusion_proof(index, size, log.nodes)


@pytest.mark.parametrize(("first", "second"), [(0, 4), (5, 4), (-1, 4)])
def test_a_consistency_proof_between_impossible_sizes_is_a_value_error(
    first: int, second: int
) -> None:
    log = built_log()
    with pytest.raises(ValueError):
        merkle.consistency_keys(first, second)
    with pytest.raises(ValueError):
        merkle.consistency_proof(first, second, log.nodes)


# --- published vectors -----------------------------------------------------------

# The Certificate Transparency reference test vectors, as published in
# transparency-dev/merkle (Google's Go library for RFC 6962 logs, Apache-2.0),
# file proof/verify_test.go: the eight leaf inputs, the roots of the trees of
# 1..8 of them, and its inclusion and consistency proofs. That file numbers leaves
# from 1 (`leaf` below is its number minus one). The empty root is SHA-256 of the
# empty string, MTH({}) in RFC 9162 §2.1.1.
CT_EMPTY_ROOT = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
CT_LEAVES = (
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
)
CT_ROOTS = (
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
)
CT_INCLUSION = (  # (leaf index, tree size, audit path)
    (
        0,
        8,
        (
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ),
    ),
    (
        5,
        8,
        (
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ),
    ),
    (2, 3, ("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",)),
    (
        1,
        5,
        (
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ),
    ),
)
CT_CONSISTENCY = (  # (first size, second size, consistency path)
    (1, 1, ()),
    (
        1,
        8,
        (
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ),
    ),
    (
        6,
        8,
        (
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ),
    ),
    (
        2,
        5,
        (
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ),
    ),
    (
        6,
        7,
        (
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ),
    ),
)


@functools.cache
def ct_log() -> tuple[list[list[bytes]], dict[merkle.NodeKey, bytes]]:
    frontier: list[bytes] = []
    frontiers = [frontier]
    nodes: dict[merkle.NodeKey, bytes] = {}
    for size, leaf in enumerate(CT_LEAVES):
        frontier, completed = merkle.append(frontier, size, bytes.fromhex(leaf))
        nodes.update(completed)
        frontiers.append(frontier)
    return frontiers, nodes


def test_the_published_empty_root() -> None:
    assert merkle.EMPTY_ROOT.hex() == CT_EMPTY_ROOT == rfc9162.MTH([]).hex()


@pytest.mark.parametrize("size", range(1, 9))
def test_the_published_roots_of_the_ct_test_tree(size: int) -> None:
    frontiers, nodes = ct_log()
    leaves = [bytes.fromhex(leaf) for leaf in CT_LEAVES[:size]]
    assert rfc9162.MTH(leaves).hex() == CT_ROOTS[size - 1]
    assert merkle.root_from_frontier(frontiers[size]).hex() == CT_ROOTS[size - 1]
    assert merkle.root(size, nodes).hex() == CT_ROOTS[size - 1]


@pytest.mark.parametrize(("index", "size", "path"), CT_INCLUSION)
def test_the_published_inclusion_proofs(index: int, size: int, path: tuple[str, ...]) -> None:
    _, nodes = ct_log()
    expected = [bytes.fromhex(node) for node in path]
    leaves = [bytes.fromhex(leaf) for leaf in CT_LEAVES[:size]]
    assert rfc9162.PATH(index, leaves) == expected
    assert merkle.inclusion_proof(index, size, nodes) == expected
    leaf = rfc9162.leaf_hash(leaves[index])
    root = bytes.fromhex(CT_ROOTS[size - 1])
    assert rfc9162.verify_inclusion(leaf, index, size, expected, root)
    assert merkle.verify_inclusion(leaf, index, size, expected, root)


@pytest.mark.parametrize(("first", "second", "path"), CT_CONSISTENCY)
def test_the_published_consistency_proofs(first: int, second: int, path: tuple[str, ...]) -> None:
    _, nodes = ct_log()
    expected = [bytes.fromhex(node) for node in path]
    leaves = [bytes.fromhex(leaf) for leaf in CT_LEAVES[:second]]
    assert rfc9162.PROOF(first, leaves) == expected
    assert merkle.consistency_proof(first, second, nodes) == expected
    roots = bytes.fromhex(CT_ROOTS[first - 1]), bytes.fromhex(CT_ROOTS[second - 1])
    assert rfc9162.verify_consistency(first, second, expected, *roots)
    assert merkle.verify_consistency(first, second, expected, *roots)


def test_the_worked_example_of_rfc_6962() -> None:
    """RFC 6962 §2.1.3: the tree of seven leaves d0..d6, its audit paths and proofs.

    Nodes are named as in the RFC's figure: a..f are the leaves d0..d5, j is d6
    alone, g..i the pairs, k and l the two halves.
    """
    _, nodes = ct_log()
    t = rfc9162.Tree([bytes.fromhex(leaf) for leaf in CT_LEAVES[:7]])
    a, b, c, d, e, f = (t.mth(n, n + 1) for n in range(6))
    g, h, i, j = t.mth(0, 2), t.mth(2, 4), t.mth(4, 6), t.mth(6, 7)
    k, l = t.mth(0, 4), t.mth(4, 7)  # noqa: E741 - the RFC's name
    assert t.mth() == rfc9162.HASH(b"\x01" + k + l)
    for index, path in ((0, [b, h, l]), (3, [c, g, l]), (4, [f, j, k]), (6, [i, k])):
        assert t.path(index) == path
        assert merkle.inclusion_proof(index, 7, nodes) == path
    for first, proof in ((3, [c, d, g, l]), (4, [l]), (6, [i, j, k])):
        assert t.proof(first) == proof
        assert merkle.consistency_proof(first, 7, nodes) == proof
    assert (a, e) == (rfc9162.leaf_hash(b""), rfc9162.leaf_hash(bytes.fromhex("3031")))


# --- random proofs: merkle.verify_* decides as the RFC verifier does ---------------

hashes = st.binary(min_size=32, max_size=32)


@st.composite
def inclusion_cases(draw: st.DrawFn) -> tuple[bytes, int, int, list[bytes], bytes]:
    """A proof of the log, then perhaps damaged, or one made up entirely."""
    log = built_log()
    size = draw(st.integers(1, LOG_SIZE))
    index = draw(st.integers(0, size - 1))
    path = log.reference.path(index, size)
    leaf = rfc9162.leaf_hash(log.entries[index])
    root = log.root(size)
    damage = draw(st.sampled_from(["none", "bit", "index", "size", "drop", "insert", "random"]))
    if damage == "bit" and path:
        position = draw(st.integers(0, len(path) - 1))
        path[position] = flip(path[position], draw(st.integers(0, 255)))
    elif damage == "index":
        index = draw(st.integers(-2, size + 2))
    elif damage == "size":
        size = draw(st.integers(0, 2 * LOG_SIZE))
    elif damage == "drop" and path:
        del path[draw(st.integers(0, len(path) - 1))]
    elif damage == "insert":
        path.insert(draw(st.integers(0, len(path))), draw(hashes))
    elif damage == "random":
        path = draw(st.lists(hashes, max_size=12))
        leaf, root = draw(hashes), draw(hashes)
    return leaf, index, size, path, root


@st.composite
def consistency_cases(draw: st.DrawFn) -> tuple[int, int, list[bytes], bytes, bytes]:
    log = built_log()
    second = draw(st.integers(1, LOG_SIZE))
    first = draw(st.integers(1, second))
    proof = log.reference.proof(first, second)
    first_root, second_root = log.root(first), log.root(second)
    damage = draw(st.sampled_from(["none", "bit", "first", "second", "drop", "insert", "random"]))
    if damage == "bit" and proof:
        position = draw(st.integers(0, len(proof) - 1))
        proof[position] = flip(proof[position], draw(st.integers(0, 255)))
    elif damage == "first":
        first = draw(st.integers(-1, second + 2))
    elif damage == "second":
        second = draw(st.integers(0, LOG_SIZE))
    elif damage == "drop" and proof:
        del proof[draw(st.integers(0, len(proof) - 1))]
    elif damage == "insert":
        proof.insert(draw(st.integers(0, len(proof))), draw(hashes))
    elif damage == "random":
        proof = draw(st.lists(hashes, max_size=12))
        first_root, second_root = draw(hashes), draw(hashes)
    return first, second, proof, first_root, second_root


@settings(max_examples=1500, deadline=None)
@given(inclusion_cases())
def test_merkle_verify_inclusion_decides_as_the_rfc_verifier(
    case: tuple[bytes, int, int, list[bytes], bytes],
) -> None:
    assert merkle.verify_inclusion(*case) == rfc9162.verify_inclusion(*case)


@settings(max_examples=1500, deadline=None)
@given(consistency_cases())
def test_merkle_verify_consistency_decides_as_the_rfc_verifier(
    case: tuple[int, int, list[bytes], bytes, bytes],
) -> None:
    assert merkle.verify_consistency(*case) == rfc9162.verify_consistency(*case)
