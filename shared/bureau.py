"""Read-only AMQP access for another bureau, provisioned on RabbitMQ's management API.

A bureau gets a broker user of its own whose permissions are three regexes
and, per allowed exchange, a topic permission:

* configure ``^bureau\\.<name>\\..*$``: it may declare (and delete) only queues
  named ``bureau.<name>.*``;
* write, the same: binding a queue needs write on the queue, and publishing
  needs write on the exchange, which no ``*.events`` exchange nor the default
  exchange (``amq.default``) matches; so it can bind but never publish;
* read ``^(bureau\\.<name>\\..*|<service>\\.events|...)$``: consuming needs read on
  the queue, binding needs read on the exchange, so it consumes only its own
  queues and binds only to the exchanges its patterns name;
* a topic permission on each of those exchanges whose read regex admits only
  the routing keys its patterns allow (RabbitMQ checks a binding's key against
  it), so ``grid.incident.*`` cannot be widened to a ``grid`` event it was not
  given.

``add`` also declares the queue ``bureau.<name>.events`` with a binding per
pattern, so the bureau can consume at once and needs no topology of its own.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import secrets
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from shequ.contracts import REGISTRY

NAME = re.compile(r"^[a-z][a-z0-9-]{1,30}$")
_SEGMENT = re.compile(r"^[a-z_]+$")
USER_PREFIX = "bureau-"
QUEUE_SUFFIX = "events"


class BureauError(Exception):
    """Bad input or an unreachable broker; the message never contains a password."""


@dataclass(frozen=True)
class Pattern:
    """``<service>.<entity|*>.<verb|*>``, a ``shequ.`` prefix allowed; ``<service>.*`` is all."""

    service: str
    entity: str
    verb: str

    @property
    def exchange(self) -> str:
        return f"{self.service}.events"

    @property
    def routing_key(self) -> str:
        return f"{self.entity}.{self.verb}"

    def key_regex(self) -> str:
        """Matches this pattern's binding keys: a ``*`` may stay a wildcard or name a word."""
        parts = [r"(\*|[a-z_]+)" if part == "*" else re.escape(part) for part in
                 (self.entity, self.verb)]  # fmt: skip
        return r"\.".join(parts)

    def matches(self, service: str, name: str) -> bool:
        entity, _, verb = name.partition(".")
        return service == self.service and self.entity in ("*", entity) and self.verb in ("*", verb)


def parse_pattern(text: str) -> Pattern:
    parts = text.removeprefix("shequ.").split(".")
    if len(parts) == 2 and parts[1] == "*":
        parts = [parts[0], "*", "*"]
    if (
        len(parts) != 3
        or not _SEGMENT.match(parts[0])
        or not all(part == "*" or _SEGMENT.match(part) for part in parts[1:])
    ):
        raise BureauError(
            f"bad event pattern {text!r}: write <service>.<entity>.<verb>, where entity and "
            "verb may be *, e.g. grid.incident.* or grid.incident.reported"
        )
    pattern = Pattern(*parts)
    if not any(pattern.matches(spec.service, spec.name) for spec in REGISTRY.published()):
        known = sorted({f"{spec.service}.{spec.name}" for spec in REGISTRY.published()})
        raise BureauError(
            f"event pattern {text!r} matches no known event type; known: {', '.join(known)}"
        )
    return pattern


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise BureauError(
            f"bad bureau name {name!r}: 2 to 31 characters, lower-case letters, digits and "
            "hyphens, starting with a letter (e.g. civil-affairs)"
        )
    return name


def permissions(name: str, patterns: list[Pattern]) -> dict[str, Any]:
    """The user's vhost permissions and its topic permissions per exchange."""
    own = rf"bureau\.{re.escape(name)}\..*"
    exchanges = sorted({p.exchange for p in patterns})
    read = "|".join([own, *(re.escape(e) for e in exchanges)])
    topics = []
    for exchange in exchanges:
        keys = "|".join(p.key_regex() for p in patterns if p.exchange == exchange)
        topics.append({"exchange": exchange, "write": "^$", "read": f"^({keys})$"})
    return {
        "configure": f"^{own}$",
        "write": f"^{own}$",
        "read": f"^({read})$",
        "topics": topics,
    }


def queue_name(name: str) -> str:
    return f"bureau.{name}.{QUEUE_SUFFIX}"


def _redacted(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


class Management:
    """The few management API calls provisioning needs, authenticated as the broker's admin."""

    def __init__(self, url: str, user: str, password: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        self._auth = f"Basic {token}"

    def call(self, method: str, path: str, body: Any = None, missing_ok: bool = False) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - the operator's management URL
            f"{self.url}/api/{path}", data=data, method=method
        )
        request.add_header("Authorization", self._auth)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                raw = response.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 404 and missing_ok:
                return None
            reason = exc.read().decode(errors="replace")[:300]
            raise BureauError(
                f"the management API at {_redacted(self.url)} refused {method} {path}: "
                f"{exc.code} {reason}"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise BureauError(
                f"cannot reach the RabbitMQ management API at {_redacted(self.url)}: {reason}"
            ) from None
        return json.loads(raw) if raw else None


def _q(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def management_from(management_url: str, amqp_uri: str) -> tuple[Management, str]:
    """The management client and the vhost, from the admin's URIs.

    The management URL may carry its own credentials; otherwise the AMQP
    URI's user is used (the same broker user database).
    """
    mgmt = urllib.parse.urlsplit(management_url)
    amqp = urllib.parse.urlsplit(amqp_uri)
    user = urllib.parse.unquote(mgmt.username or amqp.username or "guest")
    password = urllib.parse.unquote(mgmt.password or amqp.password or "guest")
    base = _redacted(management_url)
    vhost = urllib.parse.unquote(amqp.path[1:]) if len(amqp.path) > 1 else "/"
    return Management(base, user, password), vhost


def add_bureau(
    management: Management,
    vhost: str,
    amqp_uri: str,
    name: str,
    patterns: list[str],
    public_address: str | None = None,
) -> dict[str, Any]:
    """Create the bureau's user, permissions, queue and bindings; return what it needs.

    ``public_address`` (``amqps://host:port``) is where bureaus reach the
    broker, when that is not the admin URI's host (a TLS listener, say).
    """
    name = check_name(name)
    if not patterns:
        raise BureauError("give at least one --events pattern")
    parsed = [parse_pattern(p) for p in patterns]
    user = f"{USER_PREFIX}{name}"
    if management.call("GET", f"users/{_q(user)}", missing_ok=True) is not None:
        raise BureauError(f"bureau {name} already exists; remove it first to re-provision")
    password = secrets.token_urlsafe(24)
    perms = permissions(name, parsed)
    management.call("PUT", f"users/{_q(user)}", {"password": password, "tags": ""})
    try:
        management.call(
            "PUT",
            f"permissions/{_q(vhost)}/{_q(user)}",
            {k: perms[k] for k in ("configure", "write", "read")},
        )
        for topic in perms["topics"]:
            management.call("PUT", f"topic-permissions/{_q(vhost)}/{_q(user)}", topic)
        queue = queue_name(name)
        management.call(
            "PUT", f"queues/{_q(vhost)}/{_q(queue)}", {"durable": True, "auto_delete": False}
        )
        bindings = []
        for pattern in parsed:
            management.call(
                "POST",
                f"bindings/{_q(vhost)}/e/{_q(pattern.exchange)}/q/{_q(queue)}",
                {"routing_key": pattern.routing_key},
            )
            bindings.append({"exchange": pattern.exchange, "routing_key": pattern.routing_key})
    except BureauError:
        # Leave nothing half-provisioned; the first error is the one to report.
        with contextlib.suppress(BureauError):
            remove_bureau(management, vhost, name)
        raise
    return {
        "bureau": name,
        "user": user,
        "amqp_uri": uri_with(amqp_uri, user, password, public_address),
        "vhost": vhost,
        "queue": queue,
        "bindings": bindings,
        "may_declare": f"bureau.{name}.*",
        "events": sorted(
            spec.type
            for spec in REGISTRY.published()
            if any(p.matches(spec.service, spec.name) for p in parsed)
        ),
    }


def remove_bureau(management: Management, vhost: str, name: str) -> dict[str, Any]:
    """Delete the bureau's user (its permissions go with it) and every queue it owns."""
    name = check_name(name)
    user = f"{USER_PREFIX}{name}"
    found = management.call("GET", f"users/{_q(user)}", missing_ok=True) is not None
    queues = management.call("GET", f"queues/{_q(vhost)}?columns=name") or []
    deleted = []
    for queue in queues:
        if queue["name"].startswith(f"bureau.{name}."):
            management.call("DELETE", f"queues/{_q(vhost)}/{_q(queue['name'])}", missing_ok=True)
            deleted.append(queue["name"])
    for connection in management.call("GET", "connections?columns=name,user") or []:
        if connection.get("user") == user:
            management.call("DELETE", f"connections/{_q(connection['name'])}", missing_ok=True)
    if found:
        management.call("DELETE", f"users/{_q(user)}", missing_ok=True)
    if not found and not deleted:
        raise BureauError(f"no bureau {name} is provisioned")
    return {"bureau": name, "user_removed": found, "queues_removed": sorted(deleted)}


def uri_with(amqp_uri: str, user: str, password: str, public_address: str | None = None) -> str:
    """The admin URI's vhost with another user's credentials, at the public address if given."""
    parts = urllib.parse.urlsplit(amqp_uri)
    where = urllib.parse.urlsplit(public_address) if public_address else parts
    host = where.hostname or "127.0.0.1"
    if where.port:
        host = f"{host}:{where.port}"
    netloc = f"{_q(user)}:{_q(password)}@{host}"
    return urllib.parse.urlunsplit((where.scheme, netloc, parts.path or "/", "", ""))
