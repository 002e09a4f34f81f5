"""Signatures of bureau webhook deliveries (HMAC-SHA256 over timestamp and body).

``X-Shequ-Timestamp`` is the Unix time of the attempt in seconds and
``X-Shequ-Signature`` is ``sha256=<hex HMAC(secret, timestamp + "." + body)>``.
Binding the timestamp into the MAC lets a receiver refuse replays older than
its window; docs/notify.md publishes the receiver's side.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

TIMESTAMP_HEADER = "X-Shequ-Timestamp"
SIGNATURE_HEADER = "X-Shequ-Signature"


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def signed_headers(secret: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature(secret, timestamp, body),
        "Content-Type": "application/cloudevents+json",
    }
