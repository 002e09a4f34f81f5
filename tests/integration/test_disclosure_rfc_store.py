"""The disclosure log's repository on the real store, checked against the RFC 9162 reference.

Entries go in through ``EntryRepository.append`` (one transaction each, as in
production); the leaf bytes come back out of the database, and the RFC
reference (`tests/support/rfc9162.py`) rebuilds the tree from them alone. Every
root and proof the repository serves, at every size the log passed through,
must be the reference's; and a proof read after the log has grown further is
still the proof of the size it was asked for.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from shequ_services.disclosure import merkle
from shequ_services.disclosure.domain import EntryDraft
from shequ_services.disclosure.store import EntryRepository
from tests.conftest import Servers
from tests.support import rfc9162

pytestmark = pytest.mark.integration

SIZE = 37  # past 32, so the tree has a ragged right edge under a perfect left half


@pytest.fixture(scope="module")
def log(servers: Servers) -> Iterator[tuple[EntryRepository, rfc9162.Tree]]:
    client = servers.mongo()
    name = f"disclosure_rfc_{uuid.uuid4().hex[:8]}"
    repository = EntryRepository(client[name], service="disclosure", district="test")
    for number in range(SIZE):
        repository.append(
            EntryDraft(
                kind="notice",
                cadence="ad_hoc",
                community="hx-qingyuan",
                period="2026-11",
                title=f"通知 {number}",
                body={"text": f"第{number}号通知"},
            )
        )
    leaves = [entry.leaf for entry in repository.page(limit=SIZE + 1)]
    yield repository, rfc9162.Tree(leaves)
    client.drop_database(name)
    client.close()


def test_the_log_holds_every_appended_entry_in_order(log: Any) -> None:
    repository, reference = log
    assert repository.size() == SIZE == len(reference)
    assert [entry.index for entry in repository.page(limit=SIZE + 1)] == list(range(SIZE))


def test_the_head_and_every_earlier_root_are_the_rfc_mth_of_the_stored_leaves(log: Any) -> None:
    repository, reference = log
    assert repository.head() == (SIZE, reference.mth())
    for size in range(SIZE + 1):
        assert repository.root(size) == reference.mth(0, size), size


def test_every_inclusion_proof_at_every_size_is_the_rfc_path(log: Any) -> None:
    repository, reference = log
    for size in range(1, SIZE + 1):
        root = reference.mth(0, size)
        for index in range(size):
            path = repository.inclusion_proof(index, size)
            assert path == reference.path(index, size), (index, size)
            leaf = rfc9162.leaf_hash(reference.entries[index])
            assert rfc9162.verify_inclusion(leaf, index, size, path, root), (index, size)


def test_every_consistency_proof_between_sizes_is_the_rfc_proof(log: Any) -> None:
    repository, reference = log
    for second in range(1, SIZE + 1):
        for first in range(1, second + 1):
            proof = repository.consistency_proof(first, second)
            assert proof == reference.proof(first, second), (first, second)
            roots = reference.mth(0, first), reference.mth(0, second)
            assert rfc9162.verify_consistency(first, second, proof, *roots), (first, second)


def test_a_proof_outside_the_log_is_refused(log: Any) -> None:
    repository, _ = log
    with pytest.raises(ValueError):
        repository.inclusion_proof(SIZE, SIZE)
    with pytest.raises(ValueError):
        repository.consistency_proof(0, SIZE)
    assert merkle.EMPTY_ROOT == repository.root(0)
