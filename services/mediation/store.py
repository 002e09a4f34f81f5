"""Mediation's repository."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from pymongo import IndexModel

from shequ.contracts import mediation as contract
from shequ.store import Repository, as_record
from shequ_services.mediation.domain import Case

CASES = "cases"


class CaseRepository(Repository):
    INDEXES = {
        CASES: [
            # Exactly one case per incident, whatever the delivery count.
            IndexModel(
                [("incident_id", 1)],
                unique=True,
                partialFilterExpression={"incident_id": {"$type": "string"}},
            )
        ]
    }

    def open(self, case: Case) -> None:
        document = asdict(case)
        document["_id"] = document.pop("id")
        self.db[CASES].insert_one(document, session=self.session)
        self.emit(
            contract.CASE_OPENED_V1,
            subject=case.id,
            sequence=1,
            data={
                "case_id": case.id,
                "incident_id": case.incident_id,
                "community": case.community,
                "dispute_type": case.dispute_type,
            },
        )

    def for_incident(self, incident_id: str) -> list[dict[str, Any]]:
        return [as_record(d) for d in self.db[CASES].find({"incident_id": incident_id})]
