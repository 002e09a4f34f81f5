"""Notification channels. The log channel writes a line per notification.

Channels are plugins (entry points ``shequ.notify.channels``); the log channel
is the development default. It logs the template and the audience role, never
a recipient's contact data.
"""

from __future__ import annotations

import logging

from shequ_services.notify.domain import Notification

log = logging.getLogger("shequ.notify.log_channel")


class LogChannel:
    name = "log"

    def send(self, notification: Notification) -> None:
        log.info(
            "notification %s (%s) to %s about %s",
            notification.id,
            notification.template,
            notification.audience,
            notification.subject_ref,
        )
