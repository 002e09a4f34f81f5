"""The agreement as a printable zh-CN document (人民调解协议书).

HTML with print CSS rather than PDF: every browser prints it to A4 and to
PDF, and no PDF library is a dependency. Jinja2 with autoescape on, because
every value in it was typed by someone (a party's name could contain markup).
"""

from __future__ import annotations

from datetime import date
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from shequ_services.mediation.domain import Case

ROLE_NAMES = {"applicant": "申请人", "respondent": "被申请人", "third_party": "第三人"}

_env = Environment(
    loader=PackageLoader("shequ_services.mediation", "templates"),
    autoescape=select_autoescape(["html"], default=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _zh_date(value: str | date | None) -> str:
    """2026-11-23 → 2026年11月23日."""
    if value is None:
        return ""
    day = date.fromisoformat(value) if isinstance(value, str) else value
    return f"{day.year}年{day.month}月{day.day}日"


_env.filters["zh_date"] = _zh_date


def render_agreement(case: Case, *, committee: str) -> str:
    """The agreement of an agreed (or closed-agreed) case; the caller checked it has one."""
    if case.agreement is None:
        raise ValueError(f"case {case.id} has no agreement")
    parties = {p.id: p for p in case.parties}
    context: dict[str, Any] = {
        "case": case,
        "committee": committee,
        "agreement": case.agreement,
        "parties": case.parties,
        "party_name": lambda pid: parties[pid].name if pid in parties else pid,
        "role_names": ROLE_NAMES,
    }
    return _env.get_template("agreement.html").render(**context)
