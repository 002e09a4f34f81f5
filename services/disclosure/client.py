"""A client of the log's public API: download a copy, and cosign as a witness.

This is what a mirror, an auditor or another office runs (through ``shequ
disclosure fetch`` and ``shequ disclosure witness``); it reads only the
public routes and checks every answer itself before acting on it.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from shequ_services.disclosure import merkle
from shequ_services.disclosure.checkpoint import (
    b64,
    checkpoint_body,
    cosignature_message,
    load_private_key,
    load_public_key,
    sign,
    signature_valid,
    unb64,
)

API = "/api/v1/disclosure"
PAGE = 1000


class LogClientError(Exception):
    """The log answered something a witness or mirror must not accept (or did not answer)."""


def get_json(base_url: str, path: str, **params: Any) -> Any:
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    url = f"{base_url.rstrip('/')}{API}{path}{query}"
    try:
        with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - operator's URL
            return json.load(response)
    except urllib.error.HTTPError as exc:
        raise LogClientError(
            f"GET {url}: {exc.code} {exc.read().decode(errors='replace')}"
        ) from exc
    except (urllib.error.URLError, OSError) as exc:
        raise LogClientError(f"GET {url}: {exc}") from exc


def download(base_url: str) -> dict[str, Any]:
    """The latest checkpoint, the keys and every entry it covers."""
    checkpoint = get_json(base_url, "/checkpoint")
    public_key = get_json(base_url, "/public-key")
    entries: list[dict[str, Any]] = []
    while len(entries) < checkpoint["size"]:
        start = len(entries)
        end = min(start + PAGE, checkpoint["size"])
        page = get_json(base_url, "/entries", start=start, end=end, limit=PAGE)["items"]
        if not page:
            raise LogClientError(f"the log served no entries from {start} (checkpoint {end})")
        entries.extend(page)
    return {"checkpoint": checkpoint, "public_key": public_key, "entries": entries}


def cosign(
    base_url: str, *, witness: str, key: str, state_file: Path, log_key: str | None = None
) -> dict[str, Any]:
    """Check the latest checkpoint against the last one this witness signed, then cosign.

    Refuses a checkpoint not signed by the log's key, a smaller tree than
    the one last cosigned, a different root at the same size, and a tree
    whose consistency proof from the last cosigned one does not verify:
    each of these means the log rewrote what it had already shown.
    """
    checkpoint = get_json(base_url, "/checkpoint")
    public_key = (
        load_public_key(log_key)
        if log_key
        else unb64(get_json(base_url, "/public-key")["public_key"])
    )
    size, root = int(checkpoint["size"]), unb64(checkpoint["root_hash"])
    body = checkpoint_body(checkpoint["origin"], size, root)
    if not signature_valid(public_key, body, unb64(checkpoint["signature"])):
        raise LogClientError(f"the checkpoint of size {size} is not signed by the log's key")
    last = json.loads(state_file.read_text(encoding="utf-8")) if state_file.exists() else None
    if last is not None:
        last_size, last_root = int(last["size"]), unb64(last["root_hash"])
        if size < last_size:
            raise LogClientError(f"the log shrank: {size} entries after {last_size} were cosigned")
        if size == last_size and root != last_root:
            raise LogClientError(f"two different roots for size {size}: the log forked")
        if size > last_size:
            path = [
                unb64(h)
                for h in get_json(base_url, "/consistency", first=last_size, second=size)[
                    "consistency_path"
                ]
            ]
            if not merkle.verify_consistency(last_size, size, path, last_root, root):
                raise LogClientError(
                    f"the tree of size {size} is not consistent with the cosigned size {last_size}"
                )
    timestamp = int(time.time())
    signature = sign(load_private_key(key), cosignature_message(body, timestamp))
    request = urllib.request.Request(  # noqa: S310 - operator's URL
        f"{base_url.rstrip('/')}{API}/checkpoints/{size}/cosignatures",
        data=json.dumps(
            {"witness": witness, "timestamp": timestamp, "signature": b64(signature)}
        ).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            stored = json.load(response)
    except urllib.error.HTTPError as exc:
        raise LogClientError(
            f"the log refused the cosignature: {exc.code} {exc.read().decode(errors='replace')}"
        ) from exc
    _write_atomically(state_file, {"size": size, "root_hash": checkpoint["root_hash"]})
    return stored


def _write_atomically(path: Path, content: dict[str, Any]) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(content), encoding="utf-8")
    os.replace(temporary, path)
