"""No findAndModify where a collection grows (``shequ.store.Repository.update_by_id`` says why)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
FIND_AND_MODIFY = {"find_one_and_update", "find_one_and_replace", "find_one_and_delete"}
#: (file, function) -> why a findAndModify is right there: a collection of a
#: few documents, and an atomic read-and-write outside any transaction.
ALLOWED = {
    ("shared/audit.py", "append_many"): "the trail's one counter document",
    ("services/disclosure/store.py", "_append_all"): "the log's one head document",
    ("services/volunteer/store.py", "acquire_lease"): "one lease document per round",
}


def find_and_modify_calls() -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for path in sorted((ROOT / "shared").rglob("*.py")) + sorted((ROOT / "services").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in FIND_AND_MODIFY
                ):
                    found.add((path.relative_to(ROOT).as_posix(), function.name))
    return found


def test_find_and_modify_is_used_only_on_collections_of_a_few_documents() -> None:
    found = find_and_modify_calls()
    assert found - set(ALLOWED) == set(), (
        "use Repository.update_by_id / replace_by_id / delete_by_id"
    )
    assert set(ALLOWED) <= found, "an allowed use is gone: drop it from ALLOWED"
