"""Disclosure rules: what a public entry says, and how entries chain together.

Entries are built only from event fields that carry no personal data, and a
sensitive category (pregnancy, hospitalisation, rentals, migrants, family
matters) is published without its category: the notice board says that a
personal matter was received, nothing more. Each entry's hash covers its
content and the previous entry's hash, so a quiet edit or removal breaks
every later hash. (Merkle proofs and signed checkpoints come with issue #4.)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

GENESIS_HASH = "0" * 64

SENSITIVE_TITLE = "受理个人事项一件（内容依法不予公开）"


@dataclass(frozen=True)
class EntryDraft:
    kind: str
    cadence: str
    community: str
    title: str
    body: dict[str, Any]
    references: tuple[str, ...]


@dataclass(frozen=True)
class Entry:
    seq: int
    kind: str
    cadence: str
    community: str
    title: str
    body: dict[str, Any]
    references: tuple[str, ...]
    published_at: datetime
    prev_hash: str
    entry_hash: str

    @property
    def id(self) -> str:
        return f"E{self.seq:08d}"


def incident_received(
    *,
    incident_id: str,
    category: str,
    category_name: str,
    sensitive: bool,
    community: str,
    urgency: str,
) -> EntryDraft:
    """The public notice that an incident was received (件件有回应)."""
    if sensitive:
        return EntryDraft(
            kind="incident_summary",
            cadence="ad_hoc",
            community=community,
            title=SENSITIVE_TITLE,
            body={"category": None, "urgency": None},
            references=(),
        )
    return EntryDraft(
        kind="incident_summary",
        cadence="ad_hoc",
        community=community,
        title=f"受理事项：{category_name}",
        body={"category": category, "urgency": urgency},
        references=(incident_id,),
    )


def seal(draft: EntryDraft, *, seq: int, prev_hash: str, published_at: datetime) -> Entry:
    """Give a draft its place in the log and its chained hash."""
    content = {
        "seq": seq,
        "kind": draft.kind,
        "cadence": draft.cadence,
        "community": draft.community,
        "title": draft.title,
        "body": draft.body,
        "references": list(draft.references),
        "published_at": published_at.isoformat(),
        "prev_hash": prev_hash,
    }
    digest = hashlib.sha256(
        json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
    ).hexdigest()
    return Entry(
        seq=seq,
        kind=draft.kind,
        cadence=draft.cadence,
        community=draft.community,
        title=draft.title,
        body=draft.body,
        references=draft.references,
        published_at=published_at,
        prev_hash=prev_hash,
        entry_hash=digest,
    )


def verify_chain(entries: list[Entry]) -> int | None:
    """The seq of the first entry whose hash or link does not hold, or None."""
    prev = GENESIS_HASH
    for entry in entries:
        resealed = seal(
            EntryDraft(entry.kind, entry.cadence, entry.community, entry.title, entry.body,
                       entry.references),
            seq=entry.seq, prev_hash=prev, published_at=entry.published_at,
        )  # fmt: skip
        if entry.prev_hash != prev or resealed.entry_hash != entry.entry_hash:
            return entry.seq
        prev = entry.entry_hash
    return None
