"""Signed checkpoints of the disclosure log, and witnesses' cosignatures.

A checkpoint commits the district to the log as it stood: its origin (the
log's name), its size and its root hash, signed with the district's Ed25519
key. Whoever keeps a checkpoint can later demand a consistency proof to the
next one; a log that dropped or changed an entry cannot produce it.

The signed bytes follow the transparency-log community's formats, so they
are not ours to get subtly wrong (C2SP, https://c2sp.org/tlog-checkpoint and
https://c2sp.org/tlog-cosignature):

* checkpoint body: ``<origin>\\n<size>\\n<base64 root hash>\\n``;
* the log signs the body;
* a witness signs ``cosignature/v1\\ntime <unix seconds>\\n`` followed by the
  body, after checking the new checkpoint is consistent with the last one it
  cosigned, so a log showing different histories to different people is caught.

Keys travel as base64: a private key as its 32-byte Ed25519 seed, a public
key as its 32 raw bytes. The key id is the one signed notes use (C2SP
signed-note): the first four bytes of SHA-256(name ‖ 0x0A ‖ 0x01 ‖ key).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ALGORITHM = "Ed25519"
_ED25519_KEY_TYPE = b"\x01"
WITNESS_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class InvalidKey(ValueError):
    """A configured key is not a base64 Ed25519 key."""


@dataclass(frozen=True)
class Cosignature:
    witness: str
    timestamp: int
    signature: bytes


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root_hash: bytes
    signature: bytes
    signed_at: datetime
    cosignatures: tuple[Cosignature, ...] = field(default=())

    @property
    def body(self) -> bytes:
        return checkpoint_body(self.origin, self.size, self.root_hash)


def checkpoint_body(origin: str, size: int, root_hash: bytes) -> bytes:
    if not origin or "\n" in origin:
        raise ValueError("a log origin is one non-empty line")
    return f"{origin}\n{size}\n{b64(root_hash)}\n".encode()


def cosignature_message(body: bytes, timestamp: int) -> bytes:
    return f"cosignature/v1\ntime {timestamp}\n".encode() + body


def new_private_key() -> str:
    """A fresh signing key, as base64 of its seed (for configuration)."""
    seed = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    return b64(seed)


def load_private_key(value: str) -> Ed25519PrivateKey:
    seed = _decode_key(value, "private")
    return Ed25519PrivateKey.from_private_bytes(seed)


def public_key_of(private_key: Ed25519PrivateKey) -> bytes:
    return private_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


def load_public_key(value: str) -> bytes:
    return _decode_key(value, "public")


def key_id(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + _ED25519_KEY_TYPE + public_key).digest()[:4]


def sign(private_key: Ed25519PrivateKey, message: bytes) -> bytes:
    return private_key.sign(message)


def signature_valid(public_key: bytes, message: bytes, signature: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def parse_witnesses(value: str) -> dict[str, bytes]:
    """``name=base64key,name=base64key`` from configuration: the witnesses we accept."""
    witnesses: dict[str, bytes] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        name, sep, key = item.partition("=")
        if not sep or not name.strip():
            raise InvalidKey(f"a witness is written name=base64-public-key, not {item!r}")
        if not WITNESS_NAME.match(name.strip()):
            raise InvalidKey(f"a witness name is letters, digits, - and _, not {name!r}")
        witnesses[name.strip()] = load_public_key(key.strip())
    return witnesses


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def unb64(text: str) -> bytes:
    """Strict base64: a proof with a stray character is malformed, not silently trimmed."""
    return base64.b64decode(text.encode("ascii"), validate=True)


def _decode_key(value: str, which: str) -> bytes:
    try:
        raw = unb64(value.strip())
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise InvalidKey(f"the {which} key is not base64") from None
    if len(raw) != 32:
        raise InvalidKey(f"an Ed25519 {which} key is 32 bytes, this one is {len(raw)}")
    return raw


class UnknownWitness(ValueError):
    """A cosignature from a key the district did not configure as a witness."""


class BadSignature(ValueError):
    """A signature that does not verify over the message it claims to sign."""


@dataclass(frozen=True)
class LogSigner:
    """The district's log key and the witnesses it accepts; signing is pure and deterministic.

    Ed25519 signatures are deterministic, so replicas signing the same size
    and root produce the same checkpoint.
    """

    origin: str
    private_key: Ed25519PrivateKey
    witnesses: Mapping[str, bytes] = field(default_factory=dict)

    @property
    def public_key(self) -> bytes:
        return public_key_of(self.private_key)

    @property
    def key_id(self) -> bytes:
        return key_id(self.origin, self.public_key)

    def sign_checkpoint(self, size: int, root_hash: bytes, now: datetime) -> Checkpoint:
        body = checkpoint_body(self.origin, size, root_hash)
        return Checkpoint(self.origin, size, root_hash, sign(self.private_key, body), now)

    def check_cosignature(
        self, checkpoint: Checkpoint, witness: str, timestamp: int, signature: bytes
    ) -> Cosignature:
        key = self.witnesses.get(witness)
        if key is None:
            raise UnknownWitness(f"{witness!r} is not a witness of this log")
        if not signature_valid(key, cosignature_message(checkpoint.body, timestamp), signature):
            raise BadSignature(
                f"the signature is not {witness}'s cosignature of checkpoint {checkpoint.size} "
                f"at time {timestamp}"
            )
        return Cosignature(witness, timestamp, signature)
