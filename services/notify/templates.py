"""Templates: Jinja2 in a sandbox, checked when saved so they cannot fail when sent.

A template is compiled and then rendered against a sample context built from
the declared payload fields of every event type whose rules use it, with
``StrictUndefined``: a typo in a field name, a syntax error or a call the
sandbox forbids is a 422 with the language and line at save time. At send
time the same template meets a payload of the same schema.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment

from shequ_services.notify.domain import LANGUAGES, Template, template_language

ENVIRONMENT = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


def check(template: Template, samples: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Per-field errors of a template against sample contexts by event type ({} when fine)."""
    errors: dict[str, Any] = {}
    if not template.body:
        errors["body"] = ["give the text in zh-CN, en or both"]
    for part in ("body", "subject"):
        texts = getattr(template, part)
        for language, text in texts.items():
            if language not in LANGUAGES:
                errors.setdefault(part, {})[language] = [
                    f"unknown language; one of {', '.join(LANGUAGES)}"
                ]
                continue
            problem = _problem(text, samples)
            if problem:
                errors.setdefault(part, {})[language] = [problem]
    return errors


def _problem(text: str, samples: Mapping[str, Mapping[str, Any]]) -> str | None:
    try:
        compiled = ENVIRONMENT.from_string(text)
    except TemplateSyntaxError as exc:
        return f"line {exc.lineno}: {exc.message}"
    for event_type, context in samples.items():
        try:
            compiled.render(**context)
        except TemplateError as exc:
            return f"rendering for {event_type} failed: {exc}"
        except Exception as exc:  # noqa: BLE001 - any failure of user code is the template's
            return f"rendering for {event_type} failed: {type(exc).__name__}: {exc}"
    return None


def render(template: Template, context: Mapping[str, Any], language: str) -> tuple[str, str]:
    """(subject, body) in the recipient's language, falling back to zh-CN, then English."""
    chosen = template_language(template, language)
    body = ENVIRONMENT.from_string(template.body[chosen]).render(**context)
    subject_text = template.subject.get(chosen) or next(iter(template.subject.values()), "")
    subject = ENVIRONMENT.from_string(subject_text).render(**context) if subject_text else ""
    return subject, body
