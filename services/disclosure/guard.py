"""The personal-data guard that stands in front of every append to the public log.

Whatever reaches the disclosure log is public and can never be edited away
(corrections are new entries; the old one stays), so personal data has to be
stopped before the append, not cleaned up after. The service calls this
module in two ways: an event-fed entry is redacted and the redactions are
counted (:func:`redact_fields`); a staff-entered entry is refused with 422
naming the field and the kind of data (:func:`check_fields`,
:func:`field_errors`). The module is pure (regular expressions and checksums
only), so it is tested without any server.

Kinds (``KINDS``, in the order that breaks ties, most specific first):

* ``resident_id``: 18 characters, a 6-digit region code, a real birth date
  (YYYYMMDD, 1800-2099), a 3-digit sequence and the GB 11643 check character
  (ISO 7064 MOD 11-2; ``X``/``x`` for ten). A single space or hyphen may split
  it 6-8-4.
* ``bank_card``: 13-19 digits passing the Luhn check, first digit not 0;
  written as one run, in groups of four (the last group 1-4 digits) or 4-6-5,
  groups joined by one kind of separator (space or hyphen).
* ``mobile``: ``1[3-9]`` + 9 digits, plain or 3-4-4 with spaces or hyphens,
  optionally after ``+86``, ``0086``, ``86`` or ``(+86)``.
* ``landline``: an area code ``0`` + 2-3 digits (optionally in parentheses),
  an optional space or hyphen, a local number of 7-8 digits not starting with
  0 or 1 (whole, or split 3-4 or 4-4), and an optional extension (``-``,
  ``转``, ``分机``, ``ext``, ``x``).
* ``email``: local part, ``@``, dotted domain with a 2+ letter top level.
* ``licence_plate``: a province abbreviation, a letter (either may be
  followed by a middle dot, space or hyphen), then five characters with at
  least three digits, a new-energy six (``D``/``F`` + 5 or 5 digits +
  ``D``/``F``), or four characters and one of 使/领/警/学/挂.
* ``party_name``: exact occurrences (ASCII case ignored) of the names the
  producer knows; names shorter than two characters are ignored because
  they would blank out ordinary words.
* ``house_number``: building, unit, floor and room numbers (``3号楼2单元501室``,
  ``5栋1单元302``, ``12号院3号楼``, ``3号楼501``, ``3-2-501``, ``501室``) and a street number
  after a road name (``柳树路12号``).

Boundary rule. Digit-based kinds (everything but e-mail, plate and name) are
recognised only as whole numbers: the character before a finding is neither
an ASCII digit nor a hyphen that follows a digit, and the character after it
is neither a digit nor a hyphen that precedes one. ``2026-11-23`` or
``I-20261123-0001`` is therefore one number and none of its parts is looked at
alone; an 18-digit run that is not an ID is not searched for a mobile inside
it. Letters, CJK characters, punctuation, spaces and commas may touch a
finding: ``电话13812345678，13912345678`` yields two mobiles. A house number
that ends in a word (``501室``) may be followed by anything. A plate is not
followed by a digit; an e-mail extends as far as e-mail characters go on
both sides; names have no boundary (Chinese has no spaces between words).
Full-width digits, letters and punctuation count as their ASCII forms.

Overlaps: every kind proposes candidates independently; the longest wins,
then the earlier kind in ``KINDS``, so an ID that also passes Luhn is an ID,
and a mobile inside an e-mail address goes with the address. Digit groups
joined by single spaces are read both together and apart (a list of numbers
may hold a card), so two cards parted by a mere space can be read across the
gap; overlapping card readings are merged into one finding.

Redaction replaces a finding with ``【已隐去：<label>】`` (``PLACEHOLDERS``), a
marker no reader mistakes for content and that the guard never matches again.
A house number that follows the name of a compound or a street (the character
before it is one such as 区, 苑, 园, 村, 路, 街) is removed, leaving that name
(``和兴小区3号楼2单元501室`` → ``和兴小区``); with nothing of the kind before
it, it becomes the placeholder. Removing text can join what was around it
into a new datum (``柳树路501室12号`` → ``柳树路12号``), so redaction scans its
own output again; its last pass (the fourth) uses placeholders only, and a
placeholder joins nothing, so the result never holds a finding.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

RESIDENT_ID = "resident_id"
MOBILE = "mobile"
LANDLINE = "landline"
EMAIL = "email"
BANK_CARD = "bank_card"
LICENCE_PLATE = "licence_plate"
PARTY_NAME = "party_name"
HOUSE_NUMBER = "house_number"

KINDS: tuple[str, ...] = (
    RESIDENT_ID,
    BANK_CARD,
    MOBILE,
    LANDLINE,
    EMAIL,
    LICENCE_PLATE,
    HOUSE_NUMBER,
    PARTY_NAME,
)

MESSAGES: dict[str, str] = {
    RESIDENT_ID: "a Chinese resident ID number (居民身份证号码)",
    MOBILE: "a mobile phone number (手机号码)",
    LANDLINE: "a landline telephone number (固定电话号码)",
    EMAIL: "an e-mail address (电子邮箱地址)",
    BANK_CARD: "a bank card number (银行卡号)",
    LICENCE_PLATE: "a vehicle licence plate (机动车号牌)",
    PARTY_NAME: "the name of a party to the matter (当事人姓名)",
    HOUSE_NUMBER: "an exact house number (门牌号、楼栋单元房号)",
}

LABELS: dict[str, str] = {
    RESIDENT_ID: "身份证号",
    MOBILE: "手机号",
    LANDLINE: "固定电话",
    EMAIL: "电子邮箱",
    BANK_CARD: "银行卡号",
    LICENCE_PLATE: "车牌号",
    PARTY_NAME: "当事人姓名",
    HOUSE_NUMBER: "门牌号",
}

PLACEHOLDERS: dict[str, str] = {kind: f"【已隐去：{label}】" for kind, label in LABELS.items()}

MIN_NAME_LENGTH = 2

_RANK = {kind: rank for rank, kind in enumerate(KINDS)}
_MAX_PASSES = 4


@dataclass(frozen=True)
class Finding:
    kind: str
    start: int
    end: int


@dataclass(frozen=True)
class Redaction:
    text: str
    counts: Mapping[str, int]


@dataclass(frozen=True)
class FieldFinding:
    field: str
    kind: str


# Full-width ASCII (digits, letters, ＋－（）＠．) and the ideographic space fold
# to ASCII one code point for one, so offsets in the folded text are offsets in
# the original. Hyphen-like dashes fold to "-" for the same reason.
_FOLD: dict[int, int] = {code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)}
_FOLD[0x3000] = 0x20
_FOLD.update({code: 0x2D for code in (0x2010, 0x2011, 0x2012, 0x2013)})

_BEFORE = r"(?<![0-9])(?<![0-9]-)"
_AFTER = r"(?![0-9])(?!-[0-9])"


def _overlapping(pattern: str) -> re.Pattern[str]:
    """A pattern tried at every position: candidates may overlap, resolution picks."""
    return re.compile(rf"(?=(?P<m>{pattern}))")


_RESIDENT_ID = _overlapping(
    _BEFORE + r"[1-9][0-9]{5}(?P<s>[ -]?)(?:18|19|20)[0-9]{6}(?P=s)[0-9]{3}[0-9Xx]" + _AFTER
)
_MOBILE = _overlapping(
    _BEFORE
    + r"(?:(?:\+|00)?86[ -]?|\(\+?86\) ?)?1[3-9][0-9](?P<s>[ -]?)[0-9]{4}(?P=s)[0-9]{4}"
    + _AFTER
)
_LANDLINE = _overlapping(
    _BEFORE
    + r"(?:\(0[1-9][0-9]{1,2}\) ?|0[1-9][0-9]{1,2}[ -]?)"
    + r"(?:[2-9][0-9]{6,7}|[2-9][0-9]{2,3}[ -][0-9]{4})"
    + r"(?: ?(?:-|转|分机|[Ee][Xx][Tt]\.?|[Xx]) ?[0-9]{1,6})?"
    + _AFTER
)
_EMAIL = re.compile(
    r"(?<![A-Za-z0-9_.%+-])[A-Za-z0-9_.%+-]+@"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}"
)
PROVINCES = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼"
_PLATE = _overlapping(
    rf"[{PROVINCES}][ ·•・.-]?[A-Za-z][ ·•・.-]?"
    r"(?:(?P<ev>[DFdf][A-Za-z0-9][0-9]{4}|[0-9]{5}[DFdf])"
    r"|(?P<special>[A-Za-z0-9]{4}[使领警学挂])"
    r"|(?P<serial>[A-Za-z0-9]{5}))"
    r"(?![0-9])"
)
_DIGIT_RUN = re.compile(r"(?<![0-9])[0-9]+(?:[ -][0-9]+)*")

_BUILDING = r"[0-9]{1,4}(?:号院|号楼|栋(?![楼房住建民])|幢(?![楼房住建民]))"
_UNIT = r"[0-9]{1,3}单元"
_FLOOR = r"[0-9]{1,3}[层楼]"
_ROOM = r"[0-9]{1,5}(?:室|号房)"
_BARE_ROOM = r"[0-9]{2,5}(?![0-9])"
# 3号楼501: a room straight after the building, unless the digits are a year,
# a date, an amount or a count.
_ROOM_AFTER_BUILDING = r"[0-9]{3,4}(?![0-9.年月日号元件人户次个%])"
_AFTER_UNIT = rf"(?: ?{_FLOOR})?(?: ?(?:{_ROOM}|{_BARE_ROOM}))?"
_FROM_BUILDING = (
    rf"{_BUILDING}(?: ?{_BUILDING})*"
    rf"(?: ?{_UNIT}{_AFTER_UNIT}| ?{_FLOOR}(?: ?(?:{_ROOM}|{_BARE_ROOM}))?| ?{_ROOM}"
    rf"|{_ROOM_AFTER_BUILDING})?"
)
_FROM_UNIT = rf"{_UNIT}{_AFTER_UNIT}"
_LONE_ROOM = r"[0-9]{3,5}(?:室|号房)"
_DASHED = r"[0-9]{1,3}-[0-9]{1,3}-[0-9]{3,4}[室号]?"
_STREET_NUMBER = (
    r"(?<=[路街道巷弄同里村])[0-9]{1,5}号(?![院楼])(?:之[0-9]{1,3})?"
    rf"(?: ?(?:{_FROM_BUILDING}|{_FROM_UNIT}|{_ROOM}))?"
)
# A house number that ends in a word (室, 号楼) may be followed by anything;
# one that ends in a digit keeps the digit boundary.
_HOUSE_AFTER = rf"(?:(?<=[0-9]){_AFTER}|(?<![0-9]))"
_HOUSE = _overlapping(
    _BEFORE
    + rf"(?:{_STREET_NUMBER}|{_FROM_BUILDING}|{_FROM_UNIT}|{_LONE_ROOM}|{_DASHED})"
    + _HOUSE_AFTER
)
# The last character of a compound or street name: a house number after one is
# removed and the name stays; anywhere else it becomes the placeholder.
_PLACE_ENDINGS = frozenset("区苑园村里路街道巷弄同庄坊城府湾邸居期院厦寓寨屯")

_PLACEHOLDER = re.compile("|".join(re.escape(p) for p in PLACEHOLDERS.values()))

_ID_WEIGHTS = tuple(pow(2, 17 - i, 11) for i in range(17))
_ID_CHECK = "10X98765432"


def is_resident_id(candidate: str) -> bool:
    """Whether 18 characters (separators ignored) form a valid resident ID number."""
    digits = re.sub(r"[ -]", "", candidate).upper()
    if not re.fullmatch(r"[1-9][0-9]{16}[0-9X]", digits):
        return False
    try:
        date(int(digits[6:10]), int(digits[10:12]), int(digits[12:14]))
    except ValueError:
        return False
    if not 1800 <= int(digits[6:10]) <= 2099:
        return False
    total = sum(int(d) * w for d, w in zip(digits[:17], _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11] == digits[17]


def luhn_valid(digits: str) -> bool:
    """The Luhn check that every bank card number passes (and one in ten random numbers)."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def scan(text: str, known_names: Iterable[str] = ()) -> list[Finding]:
    """The personal data in ``text``: non-overlapping findings in order of position."""
    folded = text.translate(_FOLD)
    candidates = [
        *_resident_ids(folded),
        *_bank_cards(folded),
        *_phones(folded),
        *_emails(folded),
        *_plates(folded),
        *_house_numbers(folded),
        *_party_names(folded, known_names),
    ]
    return _resolve(candidates, _placeholder_spans(text))


def redact(text: str, known_names: Iterable[str] = ()) -> Redaction:
    """``text`` with every finding replaced (see the module doc), and counts per kind."""
    names = tuple(known_names)
    counts: Counter[str] = Counter()
    for passes in range(1, _MAX_PASSES + 1):
        findings = scan(text, names)
        if not findings:
            break
        counts.update(finding.kind for finding in findings)
        text = _replace(text, findings, reduce_houses=passes < _MAX_PASSES)
    return Redaction(text=text, counts=dict(counts))


def check_fields(values: Mapping[str, Any], known_names: Iterable[str] = ()) -> list[FieldFinding]:
    """Which fields of a nested document hold which kinds of personal data.

    Fields are dotted paths (``body.summary``, ``references.0``); a dict key
    that itself holds personal data appears in paths in its redacted form, so
    a path can be shown to the person who sent it without repeating the datum.
    Each (field, kind) is reported once, in order of first occurrence.
    """
    names = tuple(known_names)
    found: dict[FieldFinding, None] = {}
    for path, text in _leaves(values, "", names):
        for finding in scan(text, names):
            found.setdefault(FieldFinding(field=path, kind=finding.kind))
    return list(found)


def redact_fields(
    values: Mapping[str, Any], known_names: Iterable[str] = ()
) -> tuple[dict[str, Any], Counter[str]]:
    """The document with every string (and dict key) redacted, and the counts per kind.

    Integers are checked as their decimal text and replaced by the redacted
    text only when they hold personal data; other values come back as they are.
    """
    names = tuple(known_names)
    counts: Counter[str] = Counter()
    redacted = _redact_value(dict(values), names, counts)
    return redacted, counts


def field_errors(findings: Iterable[FieldFinding]) -> dict[str, list[str]]:
    """Per-field messages for a 422 problem: which kind of personal data each field holds."""
    errors: dict[str, list[str]] = {}
    for finding in findings:
        errors.setdefault(finding.field, []).append(
            f"contains {MESSAGES[finding.kind]}; personal data cannot be published"
        )
    return errors


def _resident_ids(text: str) -> Iterator[Finding]:
    for match in _RESIDENT_ID.finditer(text):
        if is_resident_id(match["m"]):
            yield Finding(RESIDENT_ID, *match.span("m"))


def _bank_cards(text: str) -> Iterator[Finding]:
    """Cards are found from digit runs, trying every span of whole groups.

    A run is digits joined by single spaces or hyphens. A span may not cut a
    hyphen-joined number (the boundary rule), but a space-separated list of
    numbers may hold a card among other numbers. Card readings that overlap
    (two cards separated by a mere space can also be read across the gap) are
    merged into one finding: a miscount is better than half a card left in
    public text.
    """
    for run in _DIGIT_RUN.finditer(text):
        groups = [(m.start(), m.end()) for m in re.finditer(r"[0-9]+", run[0])]
        seps = [run[0][end] for _, end in groups[:-1]]
        spans: list[tuple[int, int]] = []
        for first in range(len(groups)):
            if first and seps[first - 1] == "-":
                continue
            for last in range(first, len(groups)):
                if last < len(groups) - 1 and seps[last] == "-":
                    continue
                span = run[0][groups[first][0] : groups[last][1]]
                lengths = [end - start for start, end in groups[first : last + 1]]
                if sum(lengths) > 19:
                    break
                if _card_layout(span, lengths, set(seps[first:last])):
                    spans.append((run.start() + groups[first][0], run.start() + groups[last][1]))
        for start, end in _merge(spans):
            yield Finding(BANK_CARD, start, end)


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _card_layout(span: str, lengths: list[int], seps: set[str]) -> bool:
    digits = re.sub(r"[ -]", "", span)
    if not 13 <= len(digits) <= 19 or digits[0] == "0" or len(seps) > 1:
        return False
    fours = all(n == 4 for n in lengths[:-1]) and 1 <= lengths[-1] <= 4
    if len(lengths) > 1 and not (fours or lengths == [4, 6, 5]):
        return False
    return luhn_valid(digits)


def _phones(text: str) -> Iterator[Finding]:
    for pattern, kind in ((_MOBILE, MOBILE), (_LANDLINE, LANDLINE)):
        for match in pattern.finditer(text):
            yield Finding(kind, *match.span("m"))


def _emails(text: str) -> Iterator[Finding]:
    for match in _EMAIL.finditer(text):
        yield Finding(EMAIL, *match.span())


def _plates(text: str) -> Iterator[Finding]:
    for match in _PLATE.finditer(text):
        serial = match["serial"] or match["special"]
        if serial is not None:
            needed = 3 if match["serial"] else 2
            if sum(char.isdigit() for char in serial) < needed:
                continue
        yield Finding(LICENCE_PLATE, *match.span("m"))


def _house_numbers(text: str) -> Iterator[Finding]:
    for match in _HOUSE.finditer(text):
        yield Finding(HOUSE_NUMBER, *match.span("m"))


def _party_names(text: str, known_names: Iterable[str]) -> Iterator[Finding]:
    names = {name.strip().translate(_FOLD) for name in known_names}
    names = {name for name in names if len(name) >= MIN_NAME_LENGTH}
    if not names:
        return
    alternatives = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    for match in re.finditer(rf"(?=(?P<m>{alternatives}))", text, re.IGNORECASE):
        yield Finding(PARTY_NAME, *match.span("m"))


def _placeholder_spans(text: str) -> list[tuple[int, int]]:
    return [match.span() for match in _PLACEHOLDER.finditer(text)]


def _resolve(candidates: list[Finding], reserved: list[tuple[int, int]]) -> list[Finding]:
    """Longest first, then the more specific kind; a candidate overlapping a taken one loses.

    ``reserved`` holds the guard's own placeholders: nothing inside one is a
    finding, which keeps redaction idempotent even for a known name such as
    "隐去".
    """
    taken: list[tuple[int, int]] = list(reserved)
    chosen: list[Finding] = []
    ordered = sorted(candidates, key=lambda f: (f.start - f.end, _RANK[f.kind], f.start))
    for candidate in ordered:
        if candidate.start == candidate.end:
            continue
        if all(candidate.end <= start or candidate.start >= end for start, end in taken):
            taken.append((candidate.start, candidate.end))
            chosen.append(candidate)
    return sorted(chosen, key=lambda f: f.start)


def _replace(text: str, findings: list[Finding], reduce_houses: bool) -> str:
    folded = text.translate(_FOLD)
    parts: list[str] = []
    position = 0
    for finding in findings:
        parts.append(text[position : finding.start])
        parts.append(_replacement(folded, finding, reduce_houses))
        position = finding.end
    parts.append(text[position:])
    return "".join(parts)


def _replacement(folded: str, finding: Finding, reduce_houses: bool) -> str:
    if finding.kind == HOUSE_NUMBER and reduce_houses:
        before = folded[: finding.start].rstrip(" ")
        if before and before[-1] in _PLACE_ENDINGS:
            return ""
    return PLACEHOLDERS[finding.kind]


def _leaves(value: Any, path: str, names: tuple[str, ...]) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int):
        yield path, str(value)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            key_text = str(key)
            child = _join(path, redact(key_text, names).text)
            yield child, key_text
            yield from _leaves(item, child, names)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _leaves(item, _join(path, str(index)), names)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _redact_value(value: Any, names: tuple[str, ...], counts: Counter[str]) -> Any:
    if isinstance(value, str):
        redaction = redact(value, names)
        counts.update(redaction.counts)
        return redaction.text
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        redaction = redact(str(value), names)
        counts.update(redaction.counts)
        return redaction.text if redaction.counts else value
    if isinstance(value, Mapping):
        result: dict[Any, Any] = {}
        for key, item in value.items():
            new_key = _redact_value(key, names, counts) if isinstance(key, str) else key
            suffix = 2
            unique = new_key
            while unique in result:
                unique = f"{new_key}（{suffix}）"
                suffix += 1
            result[unique] = _redact_value(item, names, counts)
        return result
    if isinstance(value, list | tuple):
        return type(value)(_redact_value(item, names, counts) for item in value)
    return value
