"""An independent reference for the disclosure log's Merkle tree, written from RFC 9162.

The tests check `services/disclosure/merkle.py` against this module, so it must not
share a line of reasoning with it: merkle.py works on stored perfect subtrees
(level, index) and a frontier, this module follows the RFC's recursive definitions
over a list of entries word for word, and its verifiers are the RFC's step lists
with the step numbers kept in the comments. It is deliberately slow and obvious;
`Tree` only memoises MTH over ranges of one fixed list so that the exhaustive tests
finish, which changes no result.

Sections followed (RFC 9162, "Certificate Transparency Version 2.0"):

- §2.1.1   Definition of the Merkle Tree (MTH, with k the largest power of two < n)
- §2.1.3.1 Generating an inclusion proof (PATH)
- §2.1.3.2 Verifying an inclusion proof
- §2.1.4.1 Generating a consistency proof (PROOF, SUBPROOF)
- §2.1.4.2 Verifying consistency between two tree heads

The hash is SHA-256, the algorithm RFC 6962 fixed and RFC 9162 keeps as its first
registered one; the hashing is identical in both RFCs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = [
    "HASH",
    "MTH",
    "PATH",
    "PROOF",
    "SUBPROOF",
    "Tree",
    "largest_power_of_two_below",
    "leaf_hash",
    "verify_consistency",
    "verify_inclusion",
]


def HASH(data: bytes) -> bytes:  # noqa: N802 - the RFC's name
    """SHA-256, the hash algorithm of RFC 6962 and the first one RFC 9162 registers."""
    return hashlib.sha256(data).digest()


def leaf_hash(entry: bytes) -> bytes:
    """MTH({d(0)}) = HASH(0x00 || d(0)) (§2.1.1): the hash of a one-entry tree."""
    return HASH(b"\x00" + entry)


def largest_power_of_two_below(n: int) -> int:
    """The k of §2.1.1: the largest power of two smaller than n, so k < n <= 2k (n > 1)."""
    if n < 2:
        raise ValueError("k is defined only for n > 1")
    k = 1
    while k * 2 < n:
        k *= 2
    return k


class Tree:
    """The list of entries D[n] of §2.1.1, with MTH memoised per range.

    `D[a:b]` in the RFC is the list of entries from a to b - 1; here a range (a, b)
    over the one tuple of entries, so the recursion below reads like the RFC while
    each MTH(D[a:b]) is hashed once.
    """

    def __init__(self, entries: Sequence[bytes]) -> None:
        self.entries: tuple[bytes, ...] = tuple(entries)
        self._mth: dict[tuple[int, int], bytes] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def mth(self, start: int = 0, end: int | None = None) -> bytes:
        """MTH(D[start:end]) (§2.1.1).

        MTH({}) = HASH(); MTH({d(0)}) = HASH(0x00 || d(0)); for n > 1, with k the
        largest power of two smaller than n,
        MTH(D_n) = HASH(0x01 || MTH(D[0:k]) || MTH(D[k:n])).
        """
        end = len(self.entries) if end is None else end
        if not 0 <= start <= end <= len(self.entries):
            raise ValueError(f"no range D[{start}:{end}] in a list of {len(self.entries)}")
        key = (start, end)
        if key not in self._mth:
            n = end - start
            if n == 0:
                value = HASH(b"")
            elif n == 1:
                value = leaf_hash(self.entries[start])
            else:
                k = largest_power_of_two_below(n)
                value = HASH(b"\x01" + self.mth(start, start + k) + self.mth(start + k, end))
            self._mth[key] = value
        return self._mth[key]

    def path(self, m: int, n: int | None = None) -> list[bytes]:
        """PATH(m, D[n]) (§2.1.3.1): the inclusion proof of entry m in the first n entries."""
        n = len(self.entries) if n is None else n
        if not 0 <= m < n <= len(self.entries):
            raise ValueError(f"PATH({m}, D[{n}]) is not defined")
        return self._path(m, 0, n)

    def _path(self, m: int, start: int, end: int) -> list[bytes]:
        """PATH(m, D[start:end]), m relative to start.

        PATH(0, {d(0)}) = {}. For n > 1, with k the largest power of two smaller than n:
        PATH(m, D_n) = PATH(m, D[0:k]) : MTH(D[k:n]) for m < k, and
        PATH(m, D_n) = PATH(m - k, D[k:n]) : MTH(D[0:k]) for m >= k,
        where ':' appends the single element to the list.
        """
        n = end - start
        if n == 1:
            return []
        k = largest_power_of_two_below(n)
        if m < k:
            return [*self._path(m, start, start + k), self.mth(start + k, end)]
        return [*self._path(m - k, start + k, end), self.mth(start, start + k)]

    def proof(self, m: int, n: int | None = None) -> list[bytes]:
        """PROOF(m, D[n]) = SUBPROOF(m, D[n], true) (§2.1.4.1).

        The RFC defines it for 0 < m < n. m == n is accepted too because SUBPROOF's
        first rule already answers it (the empty list), and the log serves that
        request; m == 0 has no definition and is refused.
        """
        n = len(self.entries) if n is None else n
        if not 0 < m <= n <= len(self.entries):
            raise ValueError(f"PROOF({m}, D[{n}]) is not defined")
        return self._subproof(m, 0, n, True)

    def _subproof(self, m: int, start: int, end: int, b: bool) -> list[bytes]:
        """SUBPROOF(m, D[start:end], b) (§2.1.4.1), m relative to start.

        SUBPROOF(m, D[m], true) = {}; SUBPROOF(m, D[m], false) = {MTH(D[m])}.
        For m < n, with k the largest power of two smaller than n:
        if m <= k: SUBPROOF(m, D_n, b) = SUBPROOF(m, D[0:k], b) : MTH(D[k:n]);
        if m > k:  SUBPROOF(m, D_n, b) = SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k]).
        """
        n = end - start
        if m == n:
            return [] if b else [self.mth(start, end)]
        k = largest_power_of_two_below(n)
        if m <= k:
            return [*self._subproof(m, start, start + k, b), self.mth(start + k, end)]
        return [*self._subproof(m - k, start + k, end, False), self.mth(start, start + k)]


def MTH(entries: Sequence[bytes]) -> bytes:  # noqa: N802 - the RFC's name
    """MTH(D_n) (§2.1.1) of a list of entries."""
    return Tree(entries).mth()


def PATH(m: int, entries: Sequence[bytes]) -> list[bytes]:  # noqa: N802 - the RFC's name
    """PATH(m, D_n) (§2.1.3.1) over a list of entries."""
    return Tree(entries).path(m)


def PROOF(m: int, entries: Sequence[bytes]) -> list[bytes]:  # noqa: N802 - the RFC's name
    """PROOF(m, D_n) (§2.1.4.1) over a list of entries."""
    return Tree(entries).proof(m)


def SUBPROOF(m: int, entries: Sequence[bytes], b: bool) -> list[bytes]:  # noqa: N802
    """SUBPROOF(m, D_n, b) (§2.1.4.1) over a list of entries, for 0 < m <= n."""
    if not 0 < m <= len(entries):
        raise ValueError(f"SUBPROOF({m}, D[{len(entries)}], {b}) is not defined")
    return Tree(entries)._subproof(m, 0, len(entries), b)


def _lsb(x: int) -> bool:
    """LSB(x): the least significant bit of x is set (the RFC's notation in §2.1.3.2)."""
    return x & 1 == 1


def verify_inclusion(
    hash_: bytes, leaf_index: int, tree_size: int, inclusion_path: Sequence[bytes], root_hash: bytes
) -> bool:
    """§2.1.3.2: does `inclusion_path` prove that leaf `hash_` sits at `leaf_index`?

    `hash_` is the leaf's hash (HASH(0x00 || entry)); `root_hash` the head of the
    tree of `tree_size` entries. The steps are the RFC's, in its order.
    """
    # 1. If leaf_index >= tree_size, fail the proof verification.
    if leaf_index >= tree_size or leaf_index < 0:
        return False
    # 2. Set fn to leaf_index and sn to tree_size - 1.
    fn = leaf_index
    sn = tree_size - 1
    # 3. Set r to hash.
    r = hash_
    # 4. For each value p in the inclusion_path array:
    for p in inclusion_path:
        # a. If sn is 0, stop the iteration and fail the proof verification.
        if sn == 0:
            return False
        # b. If LSB(fn) is set, or if fn is equal to sn, then:
        if _lsb(fn) or fn == sn:
            # i. Set r to HASH(0x01 || p || r).
            r = HASH(b"\x01" + p + r)
            # ii. If LSB(fn) is not set, right-shift both fn and sn equally until
            #     either LSB(fn) is set or fn is 0.
            if not _lsb(fn):
                while not _lsb(fn) and fn != 0:
                    fn >>= 1
                    sn >>= 1
        # Otherwise: i. Set r to HASH(0x01 || r || p).
        else:
            r = HASH(b"\x01" + r + p)
        # c. Finally, right-shift both fn and sn one time.
        fn >>= 1
        sn >>= 1
    # 5. Compare sn to 0 and r to root_hash: both must hold.
    return sn == 0 and r == root_hash


def verify_consistency(
    first: int,
    second: int,
    consistency_path: Sequence[bytes],
    first_hash: bytes,
    second_hash: bytes,
) -> bool:
    """§2.1.4.2: does `consistency_path` prove tree head `second` extends head `first`?

    The RFC's algorithm is for 0 < first < second. It says nothing about first ==
    second (PROOF(m, D[m]) is empty by §2.1.4.1, and the heads must then be equal)
    and nothing about first == 0 (the empty tree is a prefix of every tree, but there
    is no proof to check); those two cases are decided here without the algorithm,
    and every other case goes through its steps unchanged.
    """
    if first < 0 or second < first:
        return False
    if first == second:
        return len(consistency_path) == 0 and first_hash == second_hash
    if first == 0:
        return len(consistency_path) == 0 and first_hash == HASH(b"")
    path = list(consistency_path)
    # 1. If consistency_path is an empty array, stop and fail the proof verification.
    if not path:
        return False
    # 2. If first is an exact power of 2, prepend first_hash to the consistency_path array.
    if first & (first - 1) == 0:
        path.insert(0, first_hash)
    # 3. Set fn to first - 1 and sn to second - 1.
    fn = first - 1
    sn = second - 1
    # 4. If LSB(fn) is set, right-shift both fn and sn equally until LSB(fn) is not set.
    while _lsb(fn):
        fn >>= 1
        sn >>= 1
    # 5. Set both fr and sr to the first value in the consistency_path array.
    fr = sr = path[0]
    # 6. For each subsequent value c in the consistency_path array:
    for c in path[1:]:
        # a. If sn is 0, stop the iteration and fail the proof verification.
        if sn == 0:
            return False
        # b. If LSB(fn) is set, or if fn is equal to sn, then:
        if _lsb(fn) or fn == sn:
            # i. Set fr to HASH(0x01 || c || fr).
            fr = HASH(b"\x01" + c + fr)
            # ii. Set sr to HASH(0x01 || c || sr).
            sr = HASH(b"\x01" + c + sr)
            # iii. If LSB(fn) is not set, right-shift both fn and sn equally until
            #      either LSB(fn) is set or fn is 0.
            if not _lsb(fn):
                while not _lsb(fn) and fn != 0:
                    fn >>= 1
                    sn >>= 1
        # Otherwise: i. Set sr to HASH(0x01 || sr || c).
        else:
            sr = HASH(b"\x01" + sr + c)
        # c. Finally, right-shift both fn and sn one time.
        fn >>= 1
        sn >>= 1
    # 7. Verify fr == first_hash, sr == second_hash and sn == 0.
    return fr == first_hash and sr == second_hash and sn == 0
