"""The disclosure service: the community's public notice board as a verifiable log."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from werkzeug.wrappers import Request, Response

from shequ import policy
from shequ.contracts import CloudEvent
from shequ.contracts import grid as grid_events
from shequ.contracts import mediation as mediation_events
from shequ.contracts import volunteer as volunteer_events
from shequ.errors import Conflict, Forbidden, InvalidInput, NotFound
from shequ.events import event_handler, idempotent
from shequ.http import json_response, load_body, load_query, route
from shequ.metrics import DISCLOSURE_REDACTIONS
from shequ.reconcile import Effect
from shequ.service import PlatformService
from shequ.store import Store
from shequ.timers import timer
from shequ_services.disclosure import domain, guard, merkle
from shequ_services.disclosure.checkpoint import (
    BadSignature,
    Checkpoint,
    UnknownWitness,
    b64,
    unb64,
)
from shequ_services.disclosure.keys import LogKey
from shequ_services.disclosure.pages import BoardPages
from shequ_services.disclosure.schemas import (
    CheckpointSchema,
    ConsistencyProofSchema,
    ConsistencyQuerySchema,
    CosignatureSchema,
    EntryDraftSchema,
    EntryPageSchema,
    EntryQuerySchema,
    EntrySchema,
    FiguresRequestSchema,
    FiguresResultSchema,
    InclusionProofSchema,
    ProofQuerySchema,
    PublicKeySchema,
)
from shequ_services.disclosure.store import INTEGRATE_BATCH, EntryRepository


class DisclosureService(BoardPages, PlatformService):
    name = "disclosure"

    entries = Store(EntryRepository)
    log_key = LogKey()
    report_effects = (
        Effect(
            "entries",
            "references",
            expected="public",
            match={"kind": "incident_summary", "cadence": "ad_hoc"},
        ),
    )

    # Entries fed by events: built from codes and counts only, then guarded anyway.

    @event_handler(grid_events.SERVICE, grid_events.INCIDENT_REPORTED)
    @idempotent("entries")
    def on_incident_reported(self, event: CloudEvent) -> None:
        data = event.data
        category = data["category"]
        self.entries.remember_category(
            category["code"], name_zh=category["name_zh"], sensitive=category["sensitive"]
        )
        self._append_event_fed(
            domain.incident_received(
                incident_id=data["incident_id"],
                category=category["code"],
                category_name=category["name_zh"],
                sensitive=category["sensitive"],
                community=data["community"],
                urgency=data["urgency"],
                reported_at=_aware(data["reported_at"]),
            )
        )

    @event_handler(grid_events.SERVICE, grid_events.INCIDENT_CLOSED)
    @idempotent("entries")
    def on_incident_closed(self, event: CloudEvent) -> None:
        self._append_concluded(event, outcome=event.data["to_state"])

    @event_handler(grid_events.SERVICE, grid_events.TRANSITION_EVENTS["reject"])
    @idempotent("entries")
    def on_incident_rejected(self, event: CloudEvent) -> None:
        self._append_concluded(event, outcome="rejected")

    @event_handler(grid_events.SERVICE, grid_events.INCIDENT_MERGED)
    @idempotent("entries")
    def on_incident_merged(self, event: CloudEvent) -> None:
        self._append_concluded(event, outcome="merged")

    @event_handler(grid_events.SERVICE, grid_events.INCIDENT_RATED)
    @idempotent("entries")
    def on_incident_rated(self, event: CloudEvent) -> None:
        data = event.data
        self._append_event_fed(
            domain.incident_rated(
                incident_id=data["incident_id"],
                category=data["category"],
                sensitive=self.entries.is_sensitive(data["category"]),
                community=data["community"],
                outcome=data["outcome"],
                score=data["score"],
                at=_aware(data["at"]),
            )
        )

    @event_handler(mediation_events.SERVICE, mediation_events.CASE_CLOSED)
    @idempotent("entries")
    def on_mediation_case_closed(self, event: CloudEvent) -> None:
        data = event.data
        self.entries.count_mediation(
            community=data["community"],
            month=domain.month_of(_aware(data["at"])),
            outcome=data["outcome"],
        )

    @event_handler(volunteer_events.SERVICE, volunteer_events.HOURS_APPROVED)
    @idempotent("entries")
    def on_volunteer_hours_approved(self, event: CloudEvent) -> None:
        data = event.data
        self.entries.count_volunteer_time(
            community=data["community"],
            month=domain.month_of(_aware(data["at"])),
            minutes=data["minutes"],
        )

    @event_handler(volunteer_events.SERVICE, volunteer_events.HOURS_CORRECTED)
    @idempotent("entries")
    def on_volunteer_hours_corrected(self, event: CloudEvent) -> None:
        """A correction that took time off: the month of the corrected service loses it."""
        data = event.data
        self.entries.count_volunteer_time(
            community=data["community"],
            month=domain.month_of(_aware(data["at"])),
            minutes=-data["minutes_removed"],
            records=0,
        )

    def _append_concluded(self, event: CloudEvent, *, outcome: str) -> None:
        data = event.data
        self._append_event_fed(
            domain.incident_concluded(
                incident_id=data["incident_id"],
                category=data["category"],
                sensitive=self.entries.is_sensitive(data["category"]),
                community=data["community"],
                outcome=outcome,
                answered_in_time=data.get("answered_in_time"),
                at=_aware(data["at"]),
            )
        )

    def _append_event_fed(self, draft: domain.EntryDraft) -> None:
        """Redact and count, then queue: the sequencer appends it (``integrate_pending``)."""
        redacted, found = domain.guarded(draft)
        self.entries.enqueue(redacted)
        for kind, count in found.items():
            DISCLOSURE_REDACTIONS.labels(kind).inc(count)

    # Reading the log (public).

    @route(
        "GET",
        "/api/v1/disclosure/entries",
        public=True,
        summary="Entries of the public log with the exact bytes each leaf hashed",
        query=EntryQuerySchema,
        response=EntryPageSchema,
    )
    def list_entries(self, request: Request) -> dict[str, Any]:
        """Without filters, ``start``..``end`` is a contiguous range a verifier can hash."""
        query = load_query(request, EntryQuerySchema())
        found = self.entries.page(
            community=query.get("community"),
            kind=query.get("kind"),
            period=query.get("period"),
            start=query["start"],
            end=query.get("end"),
            limit=query["limit"],
            newest_first=query["order"] == "desc",
        )
        return {"items": EntrySchema(many=True).dump(found)}

    @route(
        "GET",
        "/api/v1/disclosure/entries/<int:index>",
        public=True,
        summary="One entry of the public log",
        response=EntrySchema,
    )
    def get_entry(self, request: Request, index: int) -> dict[str, Any]:
        return EntrySchema().dump(self.entries.get(index))

    @route(
        "GET",
        "/api/v1/disclosure/entries/<int:index>/proof",
        public=True,
        summary="Inclusion proof of an entry in the tree of a signed size (RFC 9162)",
        query=ProofQuerySchema,
        response=InclusionProofSchema,
    )
    def get_inclusion_proof(self, request: Request, index: int) -> dict[str, Any]:
        """Without ``size``, against the latest signed checkpoint."""
        size = self._proof_size(load_query(request, ProofQuerySchema()).get("size"))
        if index >= size:
            raise NotFound(f"entry {index} is not in the tree of size {size}")
        entry = self.entries.get(index)
        return {
            "leaf_index": index,
            "tree_size": size,
            "leaf_hash": b64(merkle.leaf_hash(entry.leaf)),
            "audit_path": [b64(h) for h in self.entries.inclusion_proof(index, size)],
        }

    @route(
        "GET",
        "/api/v1/disclosure/consistency",
        public=True,
        summary="Consistency proof between two tree sizes (RFC 9162)",
        query=ConsistencyQuerySchema,
        response=ConsistencyProofSchema,
        errors=(404,),
    )
    def get_consistency_proof(self, request: Request) -> dict[str, Any]:
        """Without ``second``, up to the latest signed checkpoint."""
        query = load_query(request, ConsistencyQuerySchema())
        first, second = query["first"], self._proof_size(query.get("second"))
        if first > second:
            raise InvalidInput(
                "the proof range is reversed", {"first": [f"must not exceed second ({second})"]}
            )
        return {
            "first": first,
            "second": second,
            "consistency_path": [b64(h) for h in self.entries.consistency_proof(first, second)],
        }

    @route(
        "GET",
        "/api/v1/disclosure/checkpoint",
        public=True,
        summary="The latest signed checkpoint, with witnesses' cosignatures",
        response=CheckpointSchema,
        errors=(404,),
    )
    def get_checkpoint(self, request: Request) -> dict[str, Any]:
        latest = self.entries.latest_checkpoint()
        if latest is None:
            raise NotFound("no checkpoint has been signed yet")
        return self._dump_checkpoint(latest)

    @route(
        "GET",
        "/api/v1/disclosure/checkpoints/<int:size>",
        public=True,
        summary="The signed checkpoint of one tree size",
        response=CheckpointSchema,
    )
    def get_checkpoint_of_size(self, request: Request, size: int) -> dict[str, Any]:
        return self._dump_checkpoint(self.entries.checkpoint(size))

    @route(
        "GET",
        "/api/v1/disclosure/public-key",
        public=True,
        summary="The log's Ed25519 public key and the witnesses it accepts",
        response=PublicKeySchema,
    )
    def get_public_key(self, request: Request) -> dict[str, Any]:
        signer = self.log_key
        return {
            "origin": signer.origin,
            "algorithm": "Ed25519",
            "public_key": b64(signer.public_key),
            "key_id": b64(signer.key_id),
            "witnesses": [
                {"name": name, "public_key": b64(key)}
                for name, key in sorted(signer.witnesses.items())
            ],
        }

    # Writing: staff entries, checkpoints on demand, witnesses, monthly figures.

    @route(
        "POST",
        "/api/v1/disclosure/entries",
        action="disclosure.entry.publish",
        summary="Publish an entry (staff); personal data is refused, naming the field",
        body=EntryDraftSchema,
        response=EntrySchema,
        status=201,
        errors=(403,),
    )
    def publish_entry(self, request: Request) -> Response:
        body = load_body(request, EntryDraftSchema())
        policy.require(
            request.identity, "disclosure.entry.publish", _community_target(body["community"])
        )
        findings = guard.check_fields(
            {"title": body["title"], "body": body["body"], "references": body["references"]},
            body["parties"],
        )
        if findings:
            raise InvalidInput(
                "the entry would publish personal data", guard.field_errors(findings)
            )
        draft = domain.EntryDraft(
            kind=body["kind"],
            cadence=body["cadence"],
            community=body["community"],
            period=body["period"],
            title=body["title"],
            body=body["body"],
            references=tuple(body["references"]),
            supersedes=body["supersedes"],
            origin="staff",
        )
        try:
            entry = self.entries.append(draft)
        except domain.InvalidEntry as exc:
            raise InvalidInput(
                "the entry breaks a rule of the log", {exc.field: [str(exc)]}
            ) from exc
        return json_response(
            EntrySchema().dump(entry),
            status=201,
            headers={"Location": f"/api/v1/disclosure/entries/{entry.index}"},
        )

    @route(
        "POST",
        "/api/v1/disclosure/checkpoints",
        action="disclosure.checkpoint.sign",
        summary="Sign a checkpoint now (staff), if the log grew since the last one",
        response=CheckpointSchema,
        status=201,
        errors=(403, 409),
    )
    def sign_checkpoint_now(self, request: Request) -> Response:
        before = self.entries.latest_checkpoint()
        checkpoint = self._sign_if_grown()
        if checkpoint is None:
            raise Conflict("the log is empty: there is nothing to sign yet")
        created = before is None or before.size != checkpoint.size
        return json_response(self._dump_checkpoint(checkpoint), status=201 if created else 200)

    @route(
        "POST",
        "/api/v1/disclosure/checkpoints/<int:size>/cosignatures",
        public=True,
        summary="A configured witness adds its cosignature to a checkpoint",
        body=CosignatureSchema,
        response=CheckpointSchema,
        errors=(403, 404),
    )
    def add_cosignature(self, request: Request, size: int) -> dict[str, Any]:
        """Public, because the signature is the credential: only configured keys count."""
        body = load_body(request, CosignatureSchema())
        checkpoint = self.entries.checkpoint(size)
        try:
            signature = unb64(body["signature"])
        except ValueError:
            raise InvalidInput(
                "the cosignature is malformed", {"signature": ["not base64"]}
            ) from None
        try:
            cosignature = self.log_key.check_cosignature(
                checkpoint, body["witness"], body["timestamp"], signature
            )
        except UnknownWitness as exc:
            raise Forbidden(str(exc)) from exc
        except BadSignature as exc:
            raise InvalidInput(
                "the cosignature does not verify", {"signature": [str(exc)]}
            ) from exc
        # The caller is the witness its configured key proved; no person's token.
        self.entries.actor = {"witness": cosignature.witness}
        return self._dump_checkpoint(self.entries.add_cosignature(size, cosignature))

    @route(
        "POST",
        "/api/v1/disclosure/figures",
        action="disclosure.figures.publish",
        summary="Publish (or correct) a community's monthly figures now (staff)",
        body=FiguresRequestSchema,
        response=FiguresResultSchema,
        errors=(403,),
    )
    def publish_figures(self, request: Request) -> dict[str, Any]:
        body = load_body(request, FiguresRequestSchema())
        policy.require(
            request.identity, "disclosure.figures.publish", _community_target(body["community"])
        )
        published = self.entries.publish_month(body["community"], body["month"])
        return self._dump_figures(body["community"], body["month"], published)

    @route(
        "GET",
        "/api/v1/disclosure/figures",
        public=True,
        summary="The latest published figures of a community's month",
        query=FiguresRequestSchema,
        response=FiguresResultSchema,
    )
    def get_figures(self, request: Request) -> dict[str, Any]:
        query = load_query(request, FiguresRequestSchema())
        return self._dump_figures(query["community"], query["month"], [])

    # Schedules.

    @timer("DISCLOSURE_SEQUENCE_SECONDS", 0.5)
    def integrate_pending(self) -> None:
        """Append the queued event-fed drafts, a batch per transaction, until none are left.

        Every replica may run this; their batches take turns on the log's head.
        """
        while len(self.entries.integrate()) == INTEGRATE_BATCH:
            pass

    @timer("DISCLOSURE_CHECKPOINT_SECONDS", 60)
    def sign_checkpoint(self) -> None:
        """Sign when the log grew; every replica may run this, the first signature wins."""
        self._sign_if_grown()

    @timer("DISCLOSURE_FIGURES_SECONDS", 3600)
    def publish_last_month(self) -> None:
        """Last month's figures for every community, corrected if late events changed them."""
        month = domain.previous_month(datetime.now(domain.LOCAL_TIME).date())
        for community in self.entries.communities_of(month):
            self.entries.publish_month(community, month)

    # Helpers.

    def _sign_if_grown(self) -> Checkpoint | None:
        size, root_hash = self.entries.head()
        latest = self.entries.latest_checkpoint()
        if size == 0 or (latest is not None and latest.size >= size):
            return latest
        return self.entries.add_checkpoint(
            self.log_key.sign_checkpoint(size, root_hash, datetime.now(UTC))
        )

    def _proof_size(self, asked: int | None) -> int:
        if asked is not None:
            current = self.entries.size()
            if asked > current:
                raise NotFound(f"the log has {current} entries, not {asked}")
            return asked
        latest = self.entries.latest_checkpoint()
        if latest is None:
            raise NotFound("no checkpoint has been signed yet: ask with an explicit size")
        return latest.size

    def _dump_checkpoint(self, checkpoint: Checkpoint) -> dict[str, Any]:
        return CheckpointSchema().dump(
            {
                "origin": checkpoint.origin,
                "size": checkpoint.size,
                "root_hash": b64(checkpoint.root_hash),
                "signature": b64(checkpoint.signature),
                "key_id": b64(self.log_key.key_id),
                "signed_at": checkpoint.signed_at,
                "note": checkpoint.body.decode(),
                "cosignatures": [
                    {"witness": c.witness, "timestamp": c.timestamp, "signature": b64(c.signature)}
                    for c in checkpoint.cosignatures
                ],
            }
        )

    def _dump_figures(
        self, community: str, month: str, published: list[domain.Entry]
    ) -> dict[str, Any]:
        latest = self.entries.latest(
            community=community, month=month, kind="incident_summary", cadence="periodic"
        )
        return FiguresResultSchema().dump(
            {"community": community, "month": month, "figures": latest, "published": published}
        )


def _community_target(community: str) -> policy.Target:
    return policy.Target("publication", community, community=community)


def _aware(value: str | datetime) -> datetime:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError(f"time without a zone: {value}")
    return moment
