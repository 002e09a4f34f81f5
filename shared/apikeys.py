"""API keys of bureau machine clients: ``Authorization: ApiKey <key>`` instead of a token.

A bureau whose system cannot get client-credential tokens from the district
identity provider gets a key instead (``shequ bureau key``). The deployment
lists the keys in ``SHEQU_API_KEYS`` (a Kubernetes Secret), as a JSON list
of ``{"client": NAME, "key_sha256": HEX, "scopes": [SCOPE, ...]}``, so every
service checks them on its own, without a shared database and without ever
holding a key itself: only its SHA-256. A plain hash is enough because a
key is 256 random bits; there is no password to guess, so a slow hash would
only slow every request.

A valid key becomes the identity a client-credential token would give:
subject ``bureau:<client>``, role ``bureau`` and the key's scopes, so the
same authorisation rules (``shequ.policy``, ``client_scope``) apply to both.
These keys are not the Open311 report keys (``shequ apikey add``), which
identify a reporting client in a report's body and live in the grid's
database.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from shequ.auth import Identity, valid_scope
from shequ.config import ConfigError
from shequ.errors import Unauthorized

#: Marks a string as a Shequ bureau key, so secret scanners can recognise a leaked one.
KEY_PREFIX = "shequ_bk_"
#: The role every key's identity has.
ROLE = "bureau"
#: The subject of a key's identity is this plus the client's name.
SUBJECT_PREFIX = "bureau:"
#: Client names: the same rule as ``shequ bureau add`` (``shequ.bureau.NAME``).
CLIENT_NAME = re.compile(r"^[a-z][a-z0-9-]{1,30}$")
_HEX_SHA256 = re.compile(r"^[0-9a-f]{64}$")
#: Longer than any key ``issue`` makes; a longer header is refused before hashing.
MAX_KEY_LENGTH = 256
_FIELDS = frozenset({"client", "key_sha256", "scopes"})


@dataclass(frozen=True)
class ClientKey:
    """One configured key: whose it is, its hash, and what it may do."""

    client: str
    digest: bytes
    scopes: frozenset[str]


@dataclass(frozen=True)
class ApiKeys:
    """The keys a deployment accepts (``SHEQU_API_KEYS``); empty accepts none."""

    entries: tuple[ClientKey, ...] = ()

    def identify(self, key: str) -> Identity:
        """The identity of the client whose key this is; ``Unauthorized`` for any other string.

        Every entry is compared, each in constant time, so the time taken does
        not tell how much of a guess matched nor which entry it came near.
        """
        if not key or len(key) > MAX_KEY_LENGTH:
            raise Unauthorized("invalid API key")
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
        found: ClientKey | None = None
        for entry in self.entries:
            if hmac.compare_digest(entry.digest, digest):
                found = entry
        if found is None:
            raise Unauthorized("invalid API key: not one this deployment accepts")
        return Identity(
            sub=f"{SUBJECT_PREFIX}{found.client}", roles=frozenset({ROLE}), scopes=found.scopes
        )


def parse_api_keys(raw: Any, *, where: str = "SHEQU_API_KEYS") -> ApiKeys:
    """``ApiKeys`` from the configured list; every problem found is in one ``ConfigError``.

    ``raw`` is the parsed list, or its JSON text. Messages name entries by
    position and client, never a hash.
    """
    if isinstance(raw, str):
        try:
            raw = json.loads(raw) if raw.strip() else []
        except ValueError as exc:
            raise ConfigError(f"{where}: not valid JSON ({exc.__class__.__name__})") from None
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: expected a JSON list of {{client, key_sha256, scopes}}")
    problems: list[str] = []
    entries: list[ClientKey] = []
    for index, item in enumerate(raw):
        at = f"{where}[{index}]"
        if not isinstance(item, dict):
            problems.append(f"{at}: expected an object with client, key_sha256 and scopes")
            continue
        client = item.get("client")
        if isinstance(client, str):
            at = f"{at} ({client})"
        missing = sorted(_FIELDS - set(item))
        if missing:
            problems.append(f"{at}: missing {', '.join(missing)}")
        unknown = sorted(set(map(str, item)) - _FIELDS)
        if unknown:
            problems.append(f"{at}: unknown field(s) {', '.join(unknown)}")
        if "client" in item and not (isinstance(client, str) and CLIENT_NAME.match(client)):
            problems.append(
                f"{at}: client is 2 to 31 lower-case letters, digits and hyphens, "
                "starting with a letter"
            )
        digest = item.get("key_sha256")
        if "key_sha256" in item and not (isinstance(digest, str) and _HEX_SHA256.match(digest)):
            problems.append(f"{at}: key_sha256 is the key's SHA-256, 64 lower-case hex digits")
        scopes = item.get("scopes")
        if "scopes" in item and not (
            isinstance(scopes, list)
            and scopes
            and all(isinstance(s, str) and valid_scope(s) for s in scopes)
        ):
            problems.append(f"{at}: scopes is a non-empty list of scope names")
        if not problems:
            entries.append(
                ClientKey(str(client), bytes.fromhex(str(digest)), frozenset(scopes or ()))
            )
    _duplicates([e.client for e in entries], "client", where, problems)
    _duplicates([e.digest.hex() for e in entries], "key_sha256", where, problems, show=False)
    if problems:
        raise ConfigError("invalid bureau API keys:\n  " + "\n  ".join(problems))
    return ApiKeys(tuple(entries))


def _duplicates(
    values: list[str], name: str, where: str, problems: list[str], *, show: bool = True
) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            shown = f" ({value})" if show else ""
            problems.append(f"{where}: two entries share a {name}{shown}")
        seen.add(value)


@cache
def _parsed(text: str) -> ApiKeys:
    return parse_api_keys(json.loads(text))


def api_keys_from_config(config: Mapping[str, Any]) -> ApiKeys:
    """The keys of a service's configuration (``API_KEYS``), parsed once per process."""
    raw = config.get("API_KEYS")
    if isinstance(raw, str):
        return parse_api_keys(raw)
    try:
        text = json.dumps(raw, sort_keys=True)
    except (TypeError, ValueError):
        raise ConfigError("SHEQU_API_KEYS: expected a JSON list") from None
    return _parsed(text)


def issue(client: str, scopes: Iterable[str]) -> tuple[str, dict[str, Any]]:
    """A new key for ``client`` and the ``SHEQU_API_KEYS`` entry that accepts it.

    The key is returned once, to hand to the client; the entry holds only its hash.
    """
    if not CLIENT_NAME.match(client):
        raise ValueError(
            f"bad client name {client!r}: 2 to 31 characters, lower-case letters, digits "
            "and hyphens, starting with a letter (e.g. civil-affairs)"
        )
    chosen = sorted(set(scopes))
    if not chosen or not all(valid_scope(scope) for scope in chosen):
        raise ValueError("give at least one scope; a scope is a name without spaces or quotes")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    entry = {
        "client": client,
        "key_sha256": hashlib.sha256(key.encode("utf-8")).hexdigest(),
        "scopes": chosen,
    }
    return key, entry
