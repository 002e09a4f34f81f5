"""Configuration: one YAML file per service with ``${VAR:default}`` placeholders.

Every service reads the same environment variables (``SHEQU_AMQP_URI``,
``SHEQU_MONGO_URI``, ...), so one ConfigMap configures a whole deployment and
the defaults work on a laptop. Values are resolved once, when a service
process starts; providers then read the resulting nameko config dict in their
``setup()``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

_PLACEHOLDER = re.compile(r"\$\{(?P<name>[A-Z0-9_]+)(?::(?P<default>[^}]*))?\}")

DEFAULT_AMQP_URI = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_MONGO_URI = "mongodb://127.0.0.1:27017/?directConnection=true"


class ConfigError(ValueError):
    """A configuration value is missing or malformed."""


def interpolate(value: Any, environ: Mapping[str, str] | None = None) -> Any:
    """Replace ``${VAR:default}`` in every string of a nested structure.

    A placeholder without a default whose variable is unset is an error:
    silently running with an empty broker URI helps nobody.
    """
    env = os.environ if environ is None else environ
    if isinstance(value, str):
        whole = _PLACEHOLDER.fullmatch(value)

        def replace(match: re.Match[str]) -> str:
            name, default = match.group("name"), match.group("default")
            if name in env:
                return env[name]
            if default is None:
                raise ConfigError(f"environment variable {name} is not set and has no default")
            return default

        result = _PLACEHOLDER.sub(replace, value)
        if whole and value != result:
            try:
                return yaml.safe_load(result) if result else result
            except yaml.YAMLError as exc:
                # Not the value itself: it may be a credential.
                mark = getattr(exc, "problem_mark", None)
                where = f" at column {mark.column + 1}" if mark is not None else ""
                raise ConfigError(
                    f"environment variable {whole.group('name')} does not parse as "
                    f"YAML or JSON{where}"
                ) from None
        return result
    if isinstance(value, Mapping):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    return value


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Read a service's ``config.yaml`` and resolve its placeholders."""
    with path.open(encoding="utf-8") as handle:
        raw = yaml.safe_load(handle) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return interpolate(raw, environ)
