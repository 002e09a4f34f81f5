"""Field-level encryption of personal data at rest, and blind indexes for equality checks.

Shared by every service that stores personal data (mediation's parties,
volunteer's names and phones, notify's contact addresses), so there is one
format, one key configuration and one rotation story.

Each sealed value is ``{"kid", "nonce", "ct", "f"}``: AES-256-GCM under the key
``kid`` with a fresh 96-bit nonce, and associated data binding the ciphertext
to its service, its record and its field (``f``, e.g. ``parties.P1.name``). A
reader opens a value with the label it *expects* at that place, so a
ciphertext copied to another field or record fails authentication instead of
showing the wrong person's data. The associated data is
``shequ.<service>\\x1f<record id>\\x1f<label>``: exactly what mediation wrote
before this module was shared, so its existing documents still open.

Lookups that need equality (is this mediator a party? the same building?)
use a keyed HMAC-SHA256 of the normalised value: stable, so it can be
compared, and useless without the index key. The index key is separate from
the encryption keys, so rotating the latter leaves the indexes valid. A
service that needs no lookup may run without one.

Keys come from configuration only, per service: ``<SERVICE>_KEYS`` is
``kid:base64key,kid:base64key`` (32-byte keys), ``<SERVICE>_ACTIVE_KEY``
names the one new values are sealed with, ``<SERVICE>_INDEX_KEY`` is the
base64 HMAC key. Old keys stay listed until the service's rotation timer has
re-sealed every document under the active one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SEALED_KEYS = frozenset({"kid", "nonce", "ct", "f"})


class KeyConfigError(ValueError):
    """The key configuration is missing or malformed; the service must not start."""


class UnsealError(Exception):
    """A sealed value could not be opened: unknown key, wrong place, or tampered."""


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KeyConfigError(f"{what} is not valid base64") from exc


def new_key() -> str:
    """A fresh 32-byte key as base64, for ``shequ up`` and tests."""
    return _b64(os.urandom(32))


def settings(service: str) -> tuple[str, str, str]:
    """The names of a service's three key settings: ``VOLUNTEER_KEYS``, ..."""
    prefix = service.upper()
    return f"{prefix}_KEYS", f"{prefix}_ACTIVE_KEY", f"{prefix}_INDEX_KEY"


@dataclass(frozen=True)
class Keyring:
    """One service's keys; kept out of ``repr`` so a logged object shows no key material.

    ``context`` is the first part of every value's associated data
    (``shequ.<service>``): a ciphertext of one service does not open in
    another's records even if both were given the same keys.
    """

    keys: Mapping[str, bytes] = field(repr=False)
    active: str
    index_key: bytes | None = field(default=None, repr=False)
    context: str = "shequ.mediation"

    @classmethod
    def from_config(
        cls,
        keys: str,
        active: str,
        index_key: str,
        *,
        service: str = "mediation",
        index_required: bool = True,
    ) -> Keyring:
        """Parse the three settings of ``service``, refusing anything that would seal badly."""
        keys_name, active_name, index_name = settings(service)
        parsed: dict[str, bytes] = {}
        for item in (keys or "").split(","):
            item = item.strip()
            if not item:
                continue
            kid, sep, encoded = item.partition(":")
            if not sep or not kid:
                raise KeyConfigError(f"{keys_name} items must be kid:base64key")
            key = _unb64(encoded, f"key {kid!r}")
            if len(key) != 32:
                raise KeyConfigError(f"key {kid!r} must be 32 bytes, not {len(key)}")
            parsed[kid] = key
        if not parsed:
            raise KeyConfigError(f"{keys_name} is empty: personal data cannot be stored encrypted")
        active = (active or "").strip() or next(iter(parsed))
        if active not in parsed:
            raise KeyConfigError(f"{active_name} {active!r} is not among {keys_name}")
        index: bytes | None = None
        if index_key or index_required:
            index = _unb64(index_key or "", index_name)
            if len(index) < 32:
                raise KeyConfigError(f"{index_name} must be at least 32 bytes")
        return cls(keys=parsed, active=active, index_key=index, context=f"shequ.{service}")

    @classmethod
    def from_settings(
        cls, config: Mapping[str, Any], service: str, *, index_required: bool = False
    ) -> Keyring:
        """The keyring of ``service`` from a nameko config (``<SERVICE>_KEYS``, ...)."""
        names = settings(service)
        keys, active, index = (str(config.get(name) or "") for name in names)
        return cls.from_config(keys, active, index, service=service, index_required=index_required)

    def seal(self, value: str, *, record_id: str, label: str) -> dict[str, str]:
        """``value`` encrypted under the active key, bound to ``record_id`` and ``label``."""
        nonce = os.urandom(12)
        ct = AESGCM(self.keys[self.active]).encrypt(
            nonce, value.encode("utf-8"), self._aad(record_id, label)
        )
        return {"kid": self.active, "nonce": _b64(nonce), "ct": _b64(ct), "f": label}

    def unseal(self, sealed: Mapping[str, Any], *, record_id: str, label: str) -> str:
        """The plaintext, if ``sealed`` was sealed for exactly this record and label."""
        key = self.keys.get(sealed.get("kid", ""))
        if key is None:
            raise UnsealError(f"no key {sealed.get('kid')!r} is configured")
        try:
            nonce = base64.b64decode(sealed["nonce"])
            plain = AESGCM(key).decrypt(
                nonce, base64.b64decode(sealed["ct"]), self._aad(record_id, label)
            )
        except (InvalidTag, KeyError, binascii.Error, ValueError) as exc:
            raise UnsealError(f"the value at {label!r} does not open") from exc
        return plain.decode("utf-8")

    def open_stored(self, stored: Any, *, record_id: str, label: str) -> Any:
        """A stored field's value: sealed ones opened, anything else as it is.

        For services that stored a field in the clear before they sealed it:
        their old documents stay readable until the rotation timer re-writes
        them sealed (``None`` stays ``None``).
        """
        if is_sealed(stored):
            return self.unseal(stored, record_id=record_id, label=label)
        return stored

    def blind_index(self, kind: str, value: str) -> str:
        """HMAC of the normalised value, separated by kind (a name never matches a building)."""
        if self.index_key is None:
            raise KeyConfigError(f"no index key is configured for {self.context}")
        message = f"{kind}\x1f{normalise(kind, value)}".encode()
        return hmac.new(self.index_key, message, hashlib.sha256).hexdigest()

    def reseal(self, document: Any, *, record_id: str) -> Any:
        """The document with every sealed value re-encrypted under the active key."""
        if is_sealed(document):
            if document["kid"] == self.active:
                return document
            label = document["f"]
            plain = self.unseal(document, record_id=record_id, label=label)
            return self.seal(plain, record_id=record_id, label=label)
        if isinstance(document, Mapping):
            return {k: self.reseal(v, record_id=record_id) for k, v in document.items()}
        if isinstance(document, list):
            return [self.reseal(v, record_id=record_id) for v in document]
        return document

    def stale_kids(self) -> list[str]:
        """The configured key ids other than the active one (documents using them need work)."""
        return [kid for kid in self.keys if kid != self.active]

    def _aad(self, record_id: str, label: str) -> bytes:
        return f"{self.context}\x1f{record_id}\x1f{label}".encode()


def is_sealed(value: Any) -> bool:
    return isinstance(value, Mapping) and set(value) == SEALED_KEYS


def kids_in(document: Any) -> set[str]:
    """Every key id a stored document's sealed values use (kept on the document for rotation)."""
    if is_sealed(document):
        return {document["kid"]}
    if isinstance(document, Mapping):
        return set().union(*(kids_in(v) for v in document.values())) if document else set()
    if isinstance(document, list):
        return set().union(*(kids_in(v) for v in document)) if document else set()
    return set()


def normalise(kind: str, value: str) -> str:
    """Equal people compare equal: width and spacing folded, phones to digits."""
    text = unicodedata.normalize("NFKC", value).strip()
    if kind == "phone":
        return "".join(ch for ch in text if ch.isdigit())
    if kind == "id_number":
        return text.upper()
    return "".join(text.split()).casefold()
