"""Checking a downloaded copy of the log, without trusting the server that served it.

A copy is what ``shequ disclosure fetch`` saves: the signed checkpoint, the
log's public key (and witnesses' keys) and every entry up to the
checkpoint's size with the exact bytes each leaf hashed. The checks:

1. the checkpoint's signature verifies under the public key (pin it with
   ``--public-key`` rather than trust the one in the copy);
2. each witness cosignature present verifies under that witness's key;
3. every entry's shown fields are what its hashed bytes say, and each
   entry sits at the index its bytes name;
4. the Merkle tree of the entries' bytes has the signed root.

A quietly edited, removed, reordered or inserted entry fails (3) or (4); a
forged checkpoint fails (1). Nothing here asks the server anything.
"""

from __future__ import annotations

import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shequ_services.disclosure import domain, merkle
from shequ_services.disclosure.checkpoint import (
    checkpoint_body,
    cosignature_message,
    signature_valid,
    unb64,
)

#: The entry fields that must agree with the hashed bytes.
SHOWN_FIELDS = (
    "index", "kind", "cadence", "community", "period", "title", "body", "references",
    "supersedes", "origin",
)  # fmt: skip


@dataclass
class Report:
    size: int = 0
    checked_entries: int = 0
    witnesses: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_copy(copy: Mapping[str, Any], *, pinned_key: bytes | None = None) -> Report:
    report = Report()
    try:
        checkpoint = copy["checkpoint"]
        origin, size = checkpoint["origin"], int(checkpoint["size"])
        root_hash, signature = unb64(checkpoint["root_hash"]), unb64(checkpoint["signature"])
        entries = copy["entries"]
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        report.problems.append(f"the copy is not a disclosure log copy: {exc!r}")
        return report
    report.size = size
    public_key = pinned_key
    if public_key is None:
        report.warnings.append(
            "trusting the public key inside the copy; pass --public-key to pin the district's"
        )
        try:
            public_key = unb64(copy["public_key"]["public_key"])
        except (KeyError, TypeError, ValueError, binascii.Error):
            report.problems.append("the copy has no readable public key")
            return report
    body = checkpoint_body(origin, size, root_hash)
    if not signature_valid(public_key, body, signature):
        report.problems.append(f"the checkpoint of size {size} is not signed by the log's key")
    _check_cosignatures(copy, checkpoint, body, report)
    leaves = _check_entries(entries, size, report)
    if leaves is not None:
        frontier: list[bytes] = []
        for index, leaf in enumerate(leaves):
            frontier, _ = merkle.append(frontier, index, leaf)
        if merkle.root_from_frontier(frontier) != root_hash:
            report.problems.append(
                f"the {size} entries do not make the signed tree: an entry was changed, "
                "removed, inserted or reordered after the checkpoint was signed"
            )
    return report


def _check_cosignatures(
    copy: Mapping[str, Any], checkpoint: Mapping[str, Any], body: bytes, report: Report
) -> None:
    keys = {w["name"]: w["public_key"] for w in (copy.get("public_key") or {}).get("witnesses", [])}
    for cosignature in checkpoint.get("cosignatures", []):
        name = cosignature.get("witness")
        if name not in keys:
            report.warnings.append(f"cosignature by {name!r}, a witness the copy has no key for")
            continue
        try:
            valid = signature_valid(
                unb64(keys[name]),
                cosignature_message(body, int(cosignature["timestamp"])),
                unb64(cosignature["signature"]),
            )
        except (KeyError, TypeError, ValueError, binascii.Error):
            valid = False
        if valid:
            report.witnesses.append(name)
        else:
            report.problems.append(f"the cosignature of witness {name} does not verify")


def _check_entries(entries: Sequence[Any], size: int, report: Report) -> list[bytes] | None:
    if len(entries) < size:
        report.problems.append(f"the checkpoint covers {size} entries; the copy has {len(entries)}")
        return None
    leaves = []
    for position, entry in enumerate(entries[:size]):
        try:
            leaf = unb64(entry["leaf"])
            content = domain.parse_leaf(leaf)
        except (KeyError, TypeError, ValueError, binascii.Error):
            report.problems.append(f"entry at position {position}: its leaf bytes are unreadable")
            leaves.append(b"")
            continue
        if entry.get("index") != position or content.get("index") != position:
            report.problems.append(
                f"entry at position {position} says it is entry {entry.get('index')} "
                f"(its bytes: {content.get('index')})"
            )
        differing = [name for name in SHOWN_FIELDS if entry.get(name) != content.get(name)]
        if _time_differs(entry.get("published_at"), content.get("published_at")):
            differing.append("published_at")
        if differing:
            report.problems.append(
                f"entry {position}: {', '.join(differing)} shown differ from its hashed bytes"
            )
        leaves.append(leaf)
    report.checked_entries = len(leaves)
    return leaves


def _time_differs(shown: Any, hashed: Any) -> bool:
    try:
        return datetime.fromisoformat(str(shown)) != datetime.fromisoformat(str(hashed))
    except ValueError:
        return True
