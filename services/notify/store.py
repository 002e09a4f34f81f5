"""Notify's repository: the record of every notification handed to a channel."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from pymongo import IndexModel

from shequ.contracts import notify as contract
from shequ.store import Repository, as_record
from shequ_services.notify.domain import Notification

NOTIFICATIONS = "notifications"


class NotificationRepository(Repository):
    INDEXES = {NOTIFICATIONS: [IndexModel([("subject_ref", 1), ("created_at", 1)])]}

    def record_sent(self, notification: Notification) -> None:
        document = asdict(notification)
        document["_id"] = document.pop("id")
        document["status"] = "sent"
        self.db[NOTIFICATIONS].insert_one(document, session=self.session)
        self.emit(
            contract.NOTIFICATION_SENT_V1,
            subject=notification.id,
            sequence=1,
            data={
                "notification_id": notification.id,
                "template": notification.template,
                "audience": notification.audience.split(":")[0],
                "channel": notification.channel,
                "subject_ref": notification.subject_ref,
            },
        )

    def about(self, subject_ref: str, limit: int) -> list[dict[str, Any]]:
        cursor = self.db[NOTIFICATIONS].find({"subject_ref": subject_ref}).sort("created_at", 1)
        return [as_record(document) for document in cursor.limit(limit)]
