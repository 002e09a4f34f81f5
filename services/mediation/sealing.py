"""Field-level encryption of personal data, and blind indexes for equality checks.

Each sealed value is ``{"kid", "nonce", "ct", "f"}``: AES-256-GCM under the key
``kid`` with a fresh 96-bit nonce, and associated data binding the ciphertext
to its case and field (``f``, e.g. ``parties.P1.name``). A reader opens a
value with the label it *expects* at that place, so a ciphertext copied to
another field or case fails authentication instead of showing the wrong
person's data.

Lookups that need equality (is this mediator a party? the same building?)
use a keyed HMAC-SHA256 of the normalised value: stable, so it can be
compared, and useless without the index key. The index key is separate from
the encryption keys, so rotating the latter leaves the indexes valid.

Keys come from configuration only: ``MEDIATION_KEYS`` is
``kid:base64key,kid:base64key`` (32-byte keys), ``MEDIATION_ACTIVE_KEY``
names the one new values are sealed with, ``MEDIATION_INDEX_KEY`` is the
base64 HMAC key. Old keys stay listed until the rotation timer has
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


@dataclass(frozen=True)
class Keyring:
    """The configured keys; kept out of ``repr`` so a logged object shows no key material."""

    keys: Mapping[str, bytes] = field(repr=False)
    active: str
    index_key: bytes = field(repr=False)

    @classmethod
    def from_config(cls, keys: str, active: str, index_key: str) -> Keyring:
        """Parse the three settings, refusing anything that would seal badly."""
        parsed: dict[str, bytes] = {}
        for item in (keys or "").split(","):
            item = item.strip()
            if not item:
                continue
            kid, sep, encoded = item.partition(":")
            if not sep or not kid:
                raise KeyConfigError("MEDIATION_KEYS items must be kid:base64key")
            key = _unb64(encoded, f"key {kid!r}")
            if len(key) != 32:
                raise KeyConfigError(f"key {kid!r} must be 32 bytes, not {len(key)}")
            parsed[kid] = key
        if not parsed:
            raise KeyConfigError("MEDIATION_KEYS is empty: parties cannot be stored encrypted")
        active = (active or "").strip() or next(iter(parsed))
        if active not in parsed:
            raise KeyConfigError(f"MEDIATION_ACTIVE_KEY {active!r} is not among MEDIATION_KEYS")
        index = _unb64(index_key or "", "MEDIATION_INDEX_KEY")
        if len(index) < 32:
            raise KeyConfigError("MEDIATION_INDEX_KEY must be at least 32 bytes")
        return cls(keys=parsed, active=active, index_key=index)

    def seal(self, value: str, *, case_id: str, label: str) -> dict[str, str]:
        nonce = os.urandom(12)
        ct = AESGCM(self.keys[self.active]).encrypt(
            nonce, value.encode("utf-8"), _aad(case_id, label)
        )
        return {"kid": self.active, "nonce": _b64(nonce), "ct": _b64(ct), "f": label}

    def unseal(self, sealed: Mapping[str, Any], *, case_id: str, label: str) -> str:
        key = self.keys.get(sealed.get("kid", ""))
        if key is None:
            raise UnsealError(f"no key {sealed.get('kid')!r} is configured")
        try:
            nonce = base64.b64decode(sealed["nonce"])
            plain = AESGCM(key).decrypt(nonce, base64.b64decode(sealed["ct"]), _aad(case_id, label))
        except (InvalidTag, KeyError, binascii.Error, ValueError) as exc:
            raise UnsealError(f"the value at {label!r} does not open") from exc
        return plain.decode("utf-8")

    def blind_index(self, kind: str, value: str) -> str:
        """HMAC of the normalised value, separated by kind (a name never matches a building)."""
        message = f"{kind}\x1f{normalise(kind, value)}".encode()
        return hmac.new(self.index_key, message, hashlib.sha256).hexdigest()

    def reseal(self, document: Any, *, case_id: str) -> Any:
        """The document with every sealed value re-encrypted under the active key."""
        if is_sealed(document):
            if document["kid"] == self.active:
                return document
            label = document["f"]
            plain = self.unseal(document, case_id=case_id, label=label)
            return self.seal(plain, case_id=case_id, label=label)
        if isinstance(document, Mapping):
            return {k: self.reseal(v, case_id=case_id) for k, v in document.items()}
        if isinstance(document, list):
            return [self.reseal(v, case_id=case_id) for v in document]
        return document


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


def _aad(case_id: str, label: str) -> bytes:
    return f"shequ.mediation\x1f{case_id}\x1f{label}".encode()
