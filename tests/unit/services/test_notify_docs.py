"""The receiver's verification snippet published in docs/notify.md works as documented."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shequ_services.notify import signing

DOC = Path(__file__).resolve().parents[3] / "docs" / "notify.md"


@pytest.fixture(scope="module")
def verify() -> Callable[..., bool]:
    text = DOC.read_text(encoding="utf-8")
    block = re.search(r"<!-- verify-snippet.*?-->\n```python\n(.*?)```", text, re.S)
    assert block, "docs/notify.md lost its verification snippet"
    namespace: dict[str, Any] = {}
    exec(compile(block.group(1), str(DOC), "exec"), namespace)  # noqa: S102 - our own docs
    return namespace["verify"]  # type: ignore[no-any-return]


BODY = b'{"id": "e1", "type": "shequ.grid.incident.reported"}'


def test_a_fresh_delivery_signed_with_the_secret_verifies(verify: Callable[..., bool]) -> None:
    headers = signing.signed_headers("whsec_a", int(time.time()), BODY)
    assert verify("whsec_a", headers, BODY)


def test_another_secret_or_an_altered_body_does_not_verify(verify: Callable[..., bool]) -> None:
    headers = signing.signed_headers("whsec_a", int(time.time()), BODY)
    assert not verify("whsec_b", headers, BODY)
    assert not verify("whsec_a", headers, BODY.replace(b"e1", b"e2"))


def test_a_delivery_older_than_the_window_is_refused(verify: Callable[..., bool]) -> None:
    old = int(time.time()) - 301
    assert not verify("whsec_a", signing.signed_headers("whsec_a", old, BODY), BODY)


def test_a_missing_or_malformed_timestamp_is_refused(verify: Callable[..., bool]) -> None:
    headers = signing.signed_headers("whsec_a", int(time.time()), BODY)
    headers["X-Shequ-Timestamp"] = "soon"
    assert not verify("whsec_a", headers, BODY)
    assert not verify("whsec_a", {}, BODY)
