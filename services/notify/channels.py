"""Notification channels: plugins found through the entry points ``shequ.notify.channels``.

A channel is a class built with notify's config that sends one ``Message`` to
one address and raises ``ChannelError`` when it could not. It does no retries
of its own: the delivery worker records every attempt, backs off and falls
back to the recipient's next channel. Channels never log an address or the
text, only delivery ids and roles.

Built in: ``log`` (development), ``webhook`` (JSON over HTTP), ``email``
(SMTP), ``sms`` (a generic HTTP gateway) and ``wecom`` (a WeChat Work group
robot). A bureau adds one by shipping a package with an entry point in the
same group.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import smtplib
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from importlib.metadata import entry_points
from typing import Any, Protocol
from urllib.parse import urlsplit

log = logging.getLogger("shequ.notify.channels")

ENTRY_POINT_GROUP = "shequ.notify.channels"


class ChannelError(Exception):
    """The channel could not deliver; the message is safe to show (no addresses)."""


@dataclass(frozen=True)
class Message:
    delivery_id: str
    event_type: str
    audience: str
    subject_ref: str
    address: str
    subject: str
    body: str
    extra: Mapping[str, Any] = field(default_factory=dict)


class Channel(Protocol):
    name: str

    def send(self, message: Message) -> None: ...


class UnsafeUrl(ValueError):
    pass


def check_url(url: str, *, allow_http_loopback: bool) -> None:
    """Refuse anything but https, except http to a loopback host when allowed (dev, tests)."""
    parts = urlsplit(url)
    if not parts.hostname:
        raise UnsafeUrl("not an absolute URL")
    if parts.scheme == "https":
        return
    if parts.scheme == "http" and allow_http_loopback and _is_loopback(parts.hostname):
        return
    if parts.scheme == "http" and allow_http_loopback:
        raise UnsafeUrl("http is allowed only to a loopback host; use https")
    raise UnsafeUrl("must be an https URL")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def post_json(
    url: str, payload: Any, *, timeout: float, headers: Mapping[str, str] | None = None
) -> bytes:
    """POST a JSON body; any non-2xx answer or transport failure is a ``ChannelError``."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload, ensure_ascii=False)
    data = body if isinstance(body, bytes) else body.encode("utf-8")
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked when saved
        url,
        data=data,
        method="POST",
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return bytes(response.read())
    except urllib.error.HTTPError as exc:
        raise ChannelError(f"HTTP {exc.code} from the endpoint") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ChannelError(f"could not reach the endpoint: {type(reason).__name__}") from None


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer other than success, never followed.

    urllib would follow a 302 to a POST with a GET and no body (a "success"
    that delivered nothing), and a redirect could lead anywhere, past the
    https and loopback checks made when the URL was saved.
    """

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


class LogChannel:
    """Development default: one log line per notification, no address, no text."""

    name = "log"

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config

    def send(self, message: Message) -> None:
        log.info(
            "notification %s (%s) to %s about %s",
            message.delivery_id,
            message.event_type,
            message.audience,
            message.subject_ref,
        )


class WebhookChannel:
    """POSTs a small JSON document to the recipient's own URL."""

    name = "webhook"

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.timeout = float(config.get("NOTIFY_HTTP_TIMEOUT_SECONDS") or 10)

    def send(self, message: Message) -> None:
        post_json(
            message.address,
            {
                "delivery_id": message.delivery_id,
                "event_type": message.event_type,
                "subject_ref": message.subject_ref,
                "subject": message.subject,
                "text": message.body,
            },
            timeout=self.timeout,
        )


class EmailChannel:
    """Plain-text e-mail through the configured SMTP relay (smtplib)."""

    name = "email"

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.host = str(config.get("NOTIFY_SMTP_HOST") or "127.0.0.1")
        self.port = int(config.get("NOTIFY_SMTP_PORT") or 25)
        self.sender = str(config.get("NOTIFY_SMTP_FROM") or "notify@shequ.invalid")
        self.user = config.get("NOTIFY_SMTP_USER") or ""
        self.password = config.get("NOTIFY_SMTP_PASSWORD") or ""
        self.starttls = str(config.get("NOTIFY_SMTP_STARTTLS") or "").lower() in ("1", "true")
        self.timeout = float(config.get("NOTIFY_HTTP_TIMEOUT_SECONDS") or 10)

    def send(self, message: Message) -> None:
        mail = EmailMessage()
        mail["From"] = self.sender
        mail["To"] = message.address
        mail["Subject"] = message.subject or message.body.splitlines()[0][:60]
        mail["X-Shequ-Delivery"] = message.delivery_id
        mail.set_content(message.body)
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                if self.starttls:
                    smtp.starttls()
                if self.user:
                    smtp.login(self.user, self.password)
                smtp.send_message(mail)
        except smtplib.SMTPResponseException as exc:
            raise ChannelError(f"SMTP {exc.smtp_code}") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise ChannelError(f"SMTP failed: {type(exc).__name__}") from None


class SmsChannel:
    """A generic HTTP SMS gateway: POST ``{"to", "text"}`` with an optional bearer token.

    Commercial gateways differ in field names; a deployment whose gateway
    wants another shape ships its own adapter under another entry point.
    """

    name = "sms"

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.url = str(config.get("NOTIFY_SMS_GATEWAY_URL") or "")
        self.token = str(config.get("NOTIFY_SMS_GATEWAY_TOKEN") or "")
        self.timeout = float(config.get("NOTIFY_HTTP_TIMEOUT_SECONDS") or 10)

    def send(self, message: Message) -> None:
        if not self.url:
            raise ChannelError("no SMS gateway is configured (NOTIFY_SMS_GATEWAY_URL)")
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        post_json(
            self.url,
            {"to": message.address, "text": message.body, "reference": message.delivery_id},
            timeout=self.timeout,
            headers=headers,
        )


class WeComChannel:
    """A WeChat Work (企业微信) group robot: the address is the robot's webhook URL.

    The robot answers HTTP 200 even when it refuses a message; ``errcode`` in
    the JSON answer is what says whether it was accepted.
    """

    name = "wecom"

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.timeout = float(config.get("NOTIFY_HTTP_TIMEOUT_SECONDS") or 10)

    def send(self, message: Message) -> None:
        answer = post_json(
            message.address,
            {"msgtype": "text", "text": {"content": message.body}},
            timeout=self.timeout,
        )
        try:
            errcode = json.loads(answer or b"{}").get("errcode", 0)
        except (ValueError, AttributeError):
            raise ChannelError("the robot's answer is not JSON") from None
        if errcode != 0:
            raise ChannelError(f"the robot refused the message (errcode {errcode})")


def load_channels(config: Mapping[str, Any]) -> dict[str, Channel]:
    """Every channel plugin installed, by name, built with notify's config."""
    found: dict[str, Channel] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            found[entry.name] = entry.load()(config)
        except Exception:
            log.exception("channel plugin %s could not be loaded", entry.name)
    return found
