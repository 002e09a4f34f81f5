"""The committee roster: who may mediate a case, and the recusal check (回避).

Pure: the store hands over mediators and their current loads, and the
parties' blind indexes (HMACs of names and buildings, see ``sealing``). The
check compares indexes only, so it never needs a party's name in the clear.

A mediator is excluded from a case when they are a party (their name index
equals a party's), a declared relative of a party (a relative's name index
equals a party's), or lives in the same building as a party.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

PARTY = "party"
RELATIVE = "relative"
SAME_BUILDING = "same_building"


class AssignmentRefused(Exception):
    """No mediator can take the case, or the chosen one cannot without an override (409)."""

    def __init__(self, message: str, *, reasons: Iterable[str] = ()) -> None:
        self.reasons = sorted(reasons)
        super().__init__(message)


class UnknownMediator(Exception):
    """The mediator named is not on this community's roster (422)."""


@dataclass(frozen=True)
class Mediator:
    id: str
    name: str
    community: str
    expertise: tuple[str, ...] = ()
    available: bool = True
    max_load: int = 10
    name_index: str = ""
    building_index: str | None = None
    relative_indexes: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class PartyIndexes:
    names: frozenset[str]
    buildings: frozenset[str]


def recusal_reasons(mediator: Mediator, parties: PartyIndexes) -> list[str]:
    reasons = []
    if mediator.name_index and mediator.name_index in parties.names:
        reasons.append(PARTY)
    if parties.names.intersection(mediator.relative_indexes):
        reasons.append(RELATIVE)
    if mediator.building_index and mediator.building_index in parties.buildings:
        reasons.append(SAME_BUILDING)
    return reasons


def assign(
    mediators: Iterable[Mediator],
    loads: Mapping[str, int],
    *,
    community: str,
    dispute_type: str,
    parties: PartyIndexes,
    at: datetime,
    chosen: str | None = None,
    override_reason: str | None = None,
) -> dict[str, Any]:
    """Decide the mediator and return the decision as recorded on the case.

    Automatic (``chosen`` is None): among available mediators of the
    community with room under their ``max_load`` and no recusal reason,
    experts in the dispute type first, then the lightest load, then by id
    so the choice is stable. Manual: the named mediator, who must be on the
    community's roster; if they are recused, unavailable or full, only with
    ``override_reason`` (recorded as method ``override``).
    """
    roster = sorted((m for m in mediators if m.community == community), key=lambda m: m.id)
    checked = [
        {
            "mediator_id": m.id,
            "excluded": recusal_reasons(m, parties),
            "available": m.available,
            "load": loads.get(m.id, 0),
            "expert": dispute_type in m.expertise,
        }
        for m in roster
    ]
    record: dict[str, Any] = {"at": at, "checked": checked, "override_reason": None}
    if chosen is None:
        eligible = [
            c for c, m in zip(checked, roster, strict=True)
            if not c["excluded"] and m.available and c["load"] < m.max_load
        ]  # fmt: skip
        if not eligible:
            raise AssignmentRefused(
                f"no mediator of {community} is available, within their load and free of recusal"
            )
        best = min(eligible, key=lambda c: (not c["expert"], c["load"], c["mediator_id"]))
        return {**record, "mediator_id": best["mediator_id"], "method": "auto"}
    found = next((c for c in checked if c["mediator_id"] == chosen), None)
    if found is None:
        raise UnknownMediator(f"{chosen!r} is not on the roster of {community}")
    mediator = next(m for m in roster if m.id == chosen)
    blockers = list(found["excluded"])
    if not mediator.available:
        blockers.append("unavailable")
    if found["load"] >= mediator.max_load:
        blockers.append("full_load")
    if not blockers:
        return {**record, "mediator_id": chosen, "method": "manual"}
    if not (override_reason or "").strip():
        raise AssignmentRefused(
            f"{chosen} cannot take this case ({', '.join(blockers)}) without an override reason",
            reasons=blockers,
        )
    return {
        **record,
        "mediator_id": chosen,
        "method": "override",
        "override_reason": override_reason.strip(),  # type: ignore[union-attr]
        "overridden": blockers,
    }
