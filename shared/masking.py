"""Masking of personal data for responses to callers who may not see it in the clear.

One set of rules for every service, so a resident's phone reads the same
``138****5678`` in mediation's case and volunteer's registry. Each helper
keeps only what a caller needs to tell two people apart in a list (a
surname, a phone's ends, an address's compound) and never more than the
original: a value too short to keep anything is starred entirely.
"""

from __future__ import annotations

import re

#: What ends the compound part of a Chinese address (小区, 新村, 苑, 院, 里, ...).
_COMPOUND = re.compile(r"^.*?(小区|新村|花园|家园|公寓|大院|社区|苑|院|里|号)")


def mask_name(name: str) -> str:
    """The surname's first character only: 张三 → 张*, 欧阳娜娜 → 欧***."""
    name = name.strip()
    return name[:1] + "*" * max(len(name) - 1, 1) if name else ""


def mask_phone(phone: str) -> str:
    """The first three and last four digits: 138-1234-5678 → 138****5678."""
    digits = "".join(ch for ch in phone if ch.isdigit())
    if len(digits) < 8:
        return "*" * len(digits)
    return digits[:3] + "*" * (len(digits) - 7) + digits[-4:]


def mask_id_number(number: str) -> str:
    """The region's first four and the last four characters: 1101**********8515."""
    number = number.strip()
    if len(number) < 9:
        return "*" * len(number)
    return number[:4] + "*" * (len(number) - 8) + number[-4:]


def mask_address(address: str) -> str:
    """Down to the compound: 清源里3幢2单元501 → 清源里***."""
    address = address.strip()
    match = _COMPOUND.match(address)
    if match:
        shown = match.group(0)
        return shown + "***" if shown != address else shown
    # No compound to stop at: at most half of it, so a short street is not shown whole.
    return address[: min(4, len(address) // 2)] + "***" if address else ""


def mask_email(email: str) -> str:
    """The local part's first character and the domain: zhang.san@example.cn → z***@example.cn."""
    email = email.strip()
    local, at, domain = email.rpartition("@")
    if not at or not local:
        return "*" * len(email)
    return f"{local[:1]}***@{domain}"
