"""Mediation's repository: cases sealed at rest, the roster, and their events.

Every person-data field and every free text on a case is sealed before it
reaches MongoDB (``sealing.Keyring``) and opened on the way out; the domain
only ever sees plain values. Parties' names and buildings also get a blind
index for the recusal check. Each document lists the key ids it uses
(``kids``) so the rotation timer finds the ones still sealed under an old key.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, replace
from datetime import date, datetime
from pathlib import Path
from typing import Any

import yaml
from pymongo import ASCENDING, DESCENDING, IndexModel

from shequ import sealing
from shequ.contracts import mediation as contract
from shequ.errors import NotFound
from shequ.store import Repository, Store
from shequ_services.mediation import domain
from shequ_services.mediation.domain import Case, Clock, Party
from shequ_services.mediation.roster import Mediator, PartyIndexes
from shequ_services.mediation.workflow import StaleVersion, Transition

CASES = "cases"
DEFAULT_ROSTER = Path(__file__).with_name("roster.yaml")
MEDIATORS = "mediators"
#: Cases that still count towards a mediator's load.
OPEN_STATES = (*domain.RUNNING, "agreed", "failed", "referred", "withdrawn")


class CaseNotFound(NotFound):
    pass


class CaseChanged(Exception):
    """A timer lost a race with a step; the next pass sees the new version."""


class CaseRepository(Repository):
    INDEXES = {
        CASES: [
            # Exactly one case per incident, whatever the delivery count.
            IndexModel(
                [("incident_id", 1)],
                unique=True,
                partialFilterExpression={"incident_id": {"$type": "string"}},
            ),
            # The lookup by incident, run for every report: the embedded store
            # plans no partial index for it (docs/performance.md, "Query plans").
            IndexModel([("incident_id", 1), ("_id", 1)]),
            IndexModel([("community", 1), ("opened_at", DESCENDING)]),
            IndexModel([("mediator_id", 1), ("status", 1)]),
            IndexModel([("next_due", ASCENDING)], sparse=True),
            IndexModel([("kids", 1)]),
        ],
        MEDIATORS: [IndexModel([("community", 1)])],
    }

    keyring: sealing.Keyring

    # -- cases -----------------------------------------------------------------------

    def open(self, case: Case) -> bool:
        """Store a new case and its ``case.opened`` event; False if the incident has one."""

        def work() -> bool:
            if case.incident_id and self.db[CASES].find_one(
                {"incident_id": case.incident_id}, {"_id": 1}, session=self.session
            ):
                return False
            self.db[CASES].insert_one(self._document(case), session=self.session)
            self.audit("case", case.id, None, self.stored(CASES, case.id))
            self.emit(contract.CASE_OPENED_V1, subject=case.id, sequence=1, data=_ref(case))
            return True

        return self.run_in_transaction(work)

    def get(self, case_id: str) -> Case:
        document = self.db[CASES].find_one({"_id": case_id}, session=self.session)
        if document is None:
            raise CaseNotFound(f"no case {case_id}")
        return self._case(document)

    def for_incident(self, incident_id: str) -> list[Case]:
        return [self._case(d) for d in self.db[CASES].find({"incident_id": incident_id})]

    def listing(self, *, community: str | None, status: str | None, limit: int) -> list[Case]:
        query: dict[str, Any] = {}
        if community:
            query["community"] = community
        if status:
            query["status"] = status
        cursor = self.db[CASES].find(query).sort("opened_at", DESCENDING).limit(limit)
        return [self._case(d) for d in cursor]

    def save(self, before: Case, updated: Case, step: Transition | None = None) -> Case:
        """Write ``updated`` over ``before`` if still at its version, with the step's event."""

        def work() -> Case:
            stored = replace(updated, version=before.version + 1, event_seq=before.event_seq + 1)
            previous = self.stored(CASES, before.id)
            written = self.compare_and_set(
                CASES, before.id, {"version": before.version}, self._document(stored)
            )
            if written is None:
                raise StaleVersion(before.version, self.get(before.id).version)
            # Parties, sessions, the agreement and follow-ups live in the case's
            # document: one record per step covers whichever of them it changed.
            self.audit("case", before.id, previous, self.stored(CASES, before.id))
            if step is not None:
                self._emit_step(stored, step)
            return stored

        return self.run_in_transaction(work)

    def _emit_step(self, case: Case, step: Transition) -> None:
        ref, seq = _ref(case), case.event_seq
        data: dict[str, Any] | None = None
        spec = None
        if step.action == "assign":
            spec = contract.CASE_ASSIGNED_V1
            method = case.recusal["method"] if case.recusal else "manual"
            data = {**ref, "mediator_id": case.mediator_id, "method": method, "at": step.at}
        elif step.action == "schedule_session":
            spec, session = contract.CASE_SESSION_SCHEDULED_V1, case.sessions[-1]
            data = {
                **ref,
                "session_id": session["id"],
                "session_at": session["session_at"],
                "parties": len(case.parties),
                "at": step.at,
            }
        elif step.action == "agree":
            assert case.agreement is not None and case.confirmation is not None
            spec = contract.CASE_AGREED_V1
            data = {
                **ref,
                "at": step.at,
                "effective_on": date.fromisoformat(case.agreement["signed_on"]),
                "confirmation_deadline": date.fromisoformat(case.confirmation["deadline"]),
            }
        elif step.action == "fail":
            spec, data = contract.CASE_FAILED_V1, {**ref, "at": step.at}
        elif step.action == "refer":
            spec = contract.CASE_REFERRED_V1
            data = {**ref, "at": step.at, "court": step.fields["court"]}
        elif step.action in ("file_confirmation", "decide_confirmation"):
            assert case.confirmation is not None
            spec = contract.CASE_CONFIRMED_V1
            data = {
                **ref,
                "at": step.at,
                "result": case.confirmation["status"],
                "court": case.confirmation["court"],
            }
        elif step.action == "close":
            spec = contract.CASE_CLOSED_V1
            data = {**ref, "outcome": case.outcome, "at": step.at, "opened_at": case.opened_at}
        if spec is not None and data is not None:
            self.emit(spec, subject=case.id, sequence=seq, data=data)

    def outcome_counts(
        self, community: str | None, start: datetime, end: datetime
    ) -> dict[str, int]:
        """Cases closed in ``[start, end)`` by outcome, in one community or all."""
        match: dict[str, Any] = {"status": "closed", "closed_at": {"$gte": start, "$lt": end}}
        if community:
            match["community"] = community
        counts: dict[str, int] = {}
        for document in self.db[CASES].find(match, {"outcome": 1}):
            counts[document["outcome"]] = counts.get(document["outcome"], 0) + 1
        return counts

    def outcomes_by_community(self, start: datetime, end: datetime) -> dict[tuple[str, str], int]:
        """(community, outcome) → cases closed in ``[start, end)``: the agreement-rate gauge."""
        match = {"status": "closed", "closed_at": {"$gte": start, "$lt": end}}
        counts: dict[tuple[str, str], int] = {}
        for document in self.db[CASES].find(match, {"community": 1, "outcome": 1}):
            key = (document["community"], document["outcome"])
            counts[key] = counts.get(key, 0) + 1
        return counts

    # -- time limits -------------------------------------------------------------------

    def due(self, now: datetime, limit: int) -> list[Case]:
        cursor = (
            self.db[CASES]
            .find({"next_due": {"$lte": now}})
            .sort("next_due", ASCENDING)
            .limit(limit)
        )
        return [self._case(d) for d in cursor]

    def record_alerts(self, case: Case, alerts: list[str], clock: Clock) -> None:
        """Store the raised alerts and emit them, unless the case changed since it was read."""

        def work() -> None:
            previous = self.stored(CASES, case.id)
            written = self.compare_and_set(
                CASES,
                case.id,
                {"version": case.version},
                {
                    "$set": {"clock": asdict(clock), "next_due": clock.next_due()},
                    "$inc": {"event_seq": len(alerts)},
                },
            )
            if written is None:
                raise CaseChanged(case.id)
            self.audit("case", case.id, previous, written)
            for offset, alert in enumerate(alerts, start=1):
                self.emit(
                    contract.ALERT_SPECS[alert],
                    subject=case.id,
                    sequence=case.event_seq + offset,
                    data={**_ref(case), "deadline": clock.deadline},
                )

        self.run_in_transaction(work)

    # -- key rotation ------------------------------------------------------------------

    def reseal_batch(self, limit: int) -> int:
        """Re-seal up to ``limit`` documents still using a non-active key; how many changed.

        Also seals sessions' places stored in the clear by releases before
        places were sealed. The version does not move: rotation changes no fact, so a client's
        ``expected_version`` stays valid. A case written meanwhile is simply
        skipped (the write sealed it under the active key anyway).

        Each re-sealed case is still recorded (action
        ``mediation.timer.rotate_keys``): its stored bytes change, and a trail
        that skipped them could not tell a rotation from an edit behind its back.
        """
        query = {
            "$or": [
                {"kids": {"$in": self.keyring.stale_kids()}},
                # Places were stored in the clear before they were sealed.
                {"sessions.place": {"$type": "string"}},
                {"history.fields.place": {"$type": "string"}},
            ]
        }
        changed = 0
        for document in self.db[CASES].find(query).limit(limit):
            resealed = self.keyring.reseal(document, record_id=document["_id"])
            seal = self._sealer(document["_id"])
            resealed["sessions"] = [
                {**s, "place": self._seal_plain(seal, s.get("place"), f"sessions.{s['id']}.place")}
                for s in resealed.get("sessions", [])
            ]
            resealed["history"] = [
                {**h, "fields": _seal_reason(seal, h.get("fields", {}), f"history.{i}.reason")}
                for i, h in enumerate(resealed.get("history", []))
            ]
            resealed["kids"] = sorted(sealing.kids_in(resealed))
            written = self.replace_audited(CASES, "case", document, resealed, "version")
            changed += written is not None
        return changed

    @staticmethod
    def _seal_plain(seal: Any, value: Any, label: str) -> Any:
        """``value`` sealed if it is still in the clear, else as it is."""
        return seal(value, label) if isinstance(value, str) else value

    # -- roster --------------------------------------------------------------------------

    def put_mediator(self, values: Mapping[str, Any]) -> Mediator:
        """Create or replace a roster entry; relatives and building kept as blind indexes only."""
        mediator = self._mediator_from_input(values)
        document = asdict(mediator)
        document["_id"] = document.pop("id")

        def work() -> None:
            previous = self.replace_by_id(MEDIATORS, mediator.id, document, upsert=True)
            self.audit("mediator", mediator.id, previous, self.stored(MEDIATORS, mediator.id))

        self.run_in_transaction(work)
        return mediator

    def seed_roster(self, entries: Iterable[Mapping[str, Any]]) -> int:
        """Insert the seed roster's entries that are not stored yet (restarts change nothing)."""
        added = 0
        for values in entries:
            mediator = self._mediator_from_input(values)
            document = asdict(mediator)
            document["_id"] = document.pop("id")
            added += self.run_in_transaction(lambda document=document: self._seed(document))
        return added

    def _seed(self, document: dict[str, Any]) -> int:
        """Insert one seed entry unless stored (1) or not (0), recorded when inserted."""
        result = self.db[MEDIATORS].update_one(
            {"_id": document["_id"]},
            {"$setOnInsert": document},
            upsert=True,
            session=self.session,
        )
        if result.upserted_id is None:
            return 0
        self.audit("mediator", document["_id"], None, self.stored(MEDIATORS, document["_id"]))
        return 1

    def mediators(self, community: str | None = None) -> list[Mediator]:
        query = {"community": community} if community else {}
        return [_mediator(d) for d in self.db[MEDIATORS].find(query).sort("_id", ASCENDING)]

    def mediator(self, mediator_id: str) -> Mediator:
        document = self.db[MEDIATORS].find_one({"_id": mediator_id})
        if document is None:
            raise NotFound(f"no mediator {mediator_id}")
        return _mediator(document)

    def loads(self, community: str) -> dict[str, int]:
        """Open cases per mediator of a community."""
        loads: dict[str, int] = {}
        cursor = self.db[CASES].find(
            {
                "community": community,
                "status": {"$in": list(OPEN_STATES)},
                "mediator_id": {"$ne": None},
            },
            {"mediator_id": 1},
        )
        for document in cursor:
            loads[document["mediator_id"]] = loads.get(document["mediator_id"], 0) + 1
        return loads

    def party_indexes(self, case_id: str) -> PartyIndexes:
        document = self.db[CASES].find_one({"_id": case_id}, {"parties": 1}) or {}
        parties = document.get("parties", [])
        return PartyIndexes(
            names=frozenset(p["name_index"] for p in parties if p.get("name_index")),
            buildings=frozenset(p["building_index"] for p in parties if p.get("building_index")),
        )

    def indexes_of(self, parties: Iterable[Party]) -> PartyIndexes:
        """The blind indexes of parties not stored yet, for a recusal re-check."""
        index = self.keyring.blind_index
        listed = list(parties)
        return PartyIndexes(
            names=frozenset(index("name", p.name) for p in listed),
            buildings=frozenset(index("building", p.building) for p in listed if p.building),
        )

    def _mediator_from_input(self, values: Mapping[str, Any]) -> Mediator:
        index = self.keyring.blind_index
        building = values.get("building")
        return Mediator(
            id=values["id"],
            name=values["name"],
            community=values["community"],
            expertise=tuple(values.get("expertise") or ()),
            available=bool(values.get("available", True)),
            max_load=int(values.get("max_load", 10)),
            name_index=index("name", values["name"]),
            building_index=index("building", building) if building else None,
            relative_indexes=tuple(index("name", r) for r in values.get("relatives") or ()),
        )

    # -- sealing -----------------------------------------------------------------------

    def _document(self, case: Case) -> dict[str, Any]:
        seal = self._sealer(case.id)
        document: dict[str, Any] = {
            "_id": case.id,
            "incident_id": case.incident_id,
            "community": case.community,
            "dispute_type": case.dispute_type,
            "status": case.status,
            "opened_at": case.opened_at,
            "version": case.version,
            "event_seq": case.event_seq,
            "source": case.source,
            "facts": seal(case.facts, "facts"),
            "parties": [self._party_document(case.id, p) for p in case.parties],
            "mediator_id": case.mediator_id,
            "recusal": case.recusal,
            "sessions": [
                {
                    **s,
                    "notes": seal(s.get("notes"), f"sessions.{s['id']}.notes"),
                    "place": seal(s.get("place"), f"sessions.{s['id']}.place"),
                }
                for s in case.sessions
            ],
            "agreement": seal(
                json.dumps(case.agreement, ensure_ascii=False) if case.agreement else None,
                "agreement",
            ),
            "follow_ups": [
                {**v, "notes": seal(v.get("notes"), f"follow_ups.{i}.notes")}
                for i, v in enumerate(case.follow_ups)
            ],
            "confirmation": case.confirmation,
            "referral": case.referral,
            "extensions": [
                {**e, "reason": seal(e["reason"], f"extensions.{i}.reason")}
                for i, e in enumerate(case.extensions)
            ],
            "outcome": case.outcome,
            "closed_at": case.closed_at,
            "clock": asdict(case.clock),
            "next_due": case.clock.next_due(),
            "history": [
                {**h, "fields": _seal_reason(seal, h.get("fields", {}), f"history.{i}.reason")}
                for i, h in enumerate(case.history)
            ],
        }
        document["kids"] = sorted(sealing.kids_in(document))
        return document

    def _party_document(self, case_id: str, party: Party) -> dict[str, Any]:
        seal = self._sealer(case_id)
        document: dict[str, Any] = {"id": party.id, "role": party.role}
        for name in domain.PARTY_FIELDS:
            document[name] = seal(getattr(party, name), f"parties.{party.id}.{name}")
        index = self.keyring.blind_index
        document["name_index"] = index("name", party.name)
        document["building_index"] = index("building", party.building) if party.building else None
        return document

    def _sealer(self, case_id: str) -> Any:
        def seal(value: str | None, label: str) -> dict[str, str] | None:
            if value is None:
                return None
            return self.keyring.seal(value, record_id=case_id, label=label)

        return seal

    def _case(self, document: dict[str, Any]) -> Case:
        case_id = document["_id"]

        def unseal(value: Any, label: str) -> str | None:
            if value is None:
                return None
            return self.keyring.unseal(value, record_id=case_id, label=label)

        agreement = unseal(document.get("agreement"), "agreement")
        return Case(
            id=case_id,
            incident_id=document.get("incident_id"),
            community=document["community"],
            dispute_type=document["dispute_type"],
            status=document["status"],
            opened_at=document["opened_at"],
            clock=Clock(**document["clock"]),
            version=document["version"],
            event_seq=document["event_seq"],
            source=document.get("source", "incident"),
            facts=unseal(document.get("facts"), "facts"),
            parties=[
                Party(
                    id=p["id"],
                    role=p["role"],
                    **{
                        name: unseal(p.get(name), f"parties.{p['id']}.{name}")
                        for name in domain.PARTY_FIELDS
                    },
                )
                for p in document.get("parties", [])
            ],
            mediator_id=document.get("mediator_id"),
            recusal=document.get("recusal"),
            sessions=[
                {
                    **s,
                    "notes": unseal(s.get("notes"), f"sessions.{s['id']}.notes"),
                    # Written in the clear before places were sealed: read as stored.
                    "place": self.keyring.open_stored(
                        s.get("place"), record_id=case_id, label=f"sessions.{s['id']}.place"
                    ),
                }
                for s in document.get("sessions", [])
            ],
            agreement=json.loads(agreement) if agreement else None,
            follow_ups=[
                {**v, "notes": unseal(v.get("notes"), f"follow_ups.{i}.notes")}
                for i, v in enumerate(document.get("follow_ups", []))
            ],
            confirmation=document.get("confirmation"),
            referral=document.get("referral"),
            extensions=[
                {**e, "reason": unseal(e["reason"], f"extensions.{i}.reason")}
                for i, e in enumerate(document.get("extensions", []))
            ],
            outcome=document.get("outcome"),
            closed_at=document.get("closed_at"),
            history=[
                {**h, "fields": _unseal_reason(unseal, h.get("fields", {}), f"history.{i}.reason")}
                for i, h in enumerate(document.get("history", []))
            ],
        )


#: Free text a step keeps in the history: sealed there like everything else typed.
HISTORY_TEXT = ("reason", "place")


def _seal_reason(seal: Any, fields: Mapping[str, Any], label: str) -> dict[str, Any]:
    """A step's reason and place, sealed in the history (``label`` names the reason's place)."""
    out = dict(fields)
    for name in HISTORY_TEXT:
        if isinstance(out.get(name), str):
            out[name] = seal(out[name], _history_label(label, name))
    return out


def _unseal_reason(unseal: Any, fields: Mapping[str, Any], label: str) -> dict[str, Any]:
    """The history's sealed texts opened; a place written in the clear before is read as is."""
    out = dict(fields)
    for name in HISTORY_TEXT:
        if sealing.is_sealed(out.get(name)):
            out[name] = unseal(out[name], _history_label(label, name))
    return out


def _history_label(label: str, name: str) -> str:
    """``history.3.reason`` for a reason (the label mediation always used), ``history.3.place``."""
    return label if name == "reason" else label.rsplit(".", 1)[0] + f".{name}"


def _ref(case: Case) -> dict[str, Any]:
    return {
        "case_id": case.id,
        "incident_id": case.incident_id,
        "community": case.community,
        "dispute_type": case.dispute_type,
    }


def _mediator(document: dict[str, Any]) -> Mediator:
    values = dict(document)
    values["id"] = values.pop("_id")
    values["expertise"] = tuple(values.get("expertise") or ())
    values["relative_indexes"] = tuple(values.get("relative_indexes") or ())
    return Mediator(**values)


class CaseStore(Store):
    """The store provider, handing each repository the keyring from configuration.

    Keys are read in ``setup()``; a missing or malformed key stops the
    service from starting rather than storing parties unencrypted.
    """

    def setup(self) -> None:
        super().setup()
        config = self.container.config
        self.keyring = sealing.Keyring.from_settings(config, "mediation", index_required=True)

    def start(self) -> None:
        super().start()
        path = self.container.config.get("MEDIATION_ROSTER_FILE") or DEFAULT_ROSTER
        with open(path, encoding="utf-8") as handle:
            seed = yaml.safe_load(handle) or {}
        repository = self.get_dependency(None)
        assert isinstance(repository, CaseRepository)
        self.at_start(
            lambda: repository.seed_roster(seed.get("mediators", [])), "seeding the roster"
        )

    def get_dependency(self, worker_ctx: Any) -> Repository:
        repository = super().get_dependency(worker_ctx)
        repository.keyring = self.keyring  # type: ignore[attr-defined]
        return repository
