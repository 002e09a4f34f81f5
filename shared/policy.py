"""Authorisation as data: who may do what, to which objects (``access.yaml`` per service).

Each service keeps its table in ``access.yaml`` next to its ``config.yaml``
(a bureau's own service brings its own), because a service is deployed and
changed on its own and its actions are its own; the roles and scopes the
tables use are the platform's (``shequ.auth.ROLES``, ``SCOPES``). The name
is not ``policy.yaml`` because the grid and mediation already use that for
their time limits.

A table lists the service's actions (``grid.incident.dispatch``). Each
action has rules, one per role that may do it, and each rule says how far
the role reaches (its object scope):

* ``own``: objects whose owner (reporter, volunteer, subscriber) is the caller;
* ``cell``: objects in one of the caller's grid cells (token claim ``cells``);
* ``department``: objects one of whose departments is the caller's;
* ``community``: objects in one of the caller's communities;
* ``district``: every object.

A rule may also name a ``purpose``: it then applies only to a token that
declares that purpose (the ``purpose`` claim), so access to sensitive
records is tied to a stated reason. An action marked ``sensitive`` reads
personal data that needs one; every allowed use of it is logged with the
purpose (``shequ.policy.access`` logger: action, object, roles and purpose,
no personal data).

Machine clients (role ``bureau``: a bureau's system, with a client-credential
token or an API key, ``shequ.apikeys``) are limited further by OAuth scopes.
An action with a ``bureau`` rule names the scope(s) such a client must hold
(``client_scope: notify.subscriptions``, or a list: any one will do), and the
bureau rule applies only to a caller whose ``scopes`` include one of them.
The scopes are the platform's contract with its clients, so they are data
here, beside the rules they unlock: ``<service>.<objects>`` (every scope
begins with its service's name). A table giving ``bureau`` a rule without a
``client_scope`` is refused at start, so no bureau grant is unscoped by
accident; so is a ``client_scope`` on an action no bureau rule uses.

Enforcement has two steps. The runtime (``shequ.http.Route``) checks every
non-public route's ``action=`` before the handler runs: a caller none of
whose roles has a rule for the action gets 403 naming the roles that may.
A handler that has loaded an object then calls ``require(identity,
action, Target(...))`` (or ``allows``) with the object's attributes, and for
listings ``reach(identity, action)`` says which objects to select.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import yaml

from shequ.auth import PURPOSES, ROLES, valid_scope
from shequ.errors import Forbidden

log = logging.getLogger("shequ.policy.access")

#: Object scopes, narrowest first.
SCOPES = ("own", "cell", "department", "community", "district")
FILE_NAME = "access.yaml"
#: The role of machine clients, whose rules need a client scope (``client_scope``).
MACHINE_ROLE = "bureau"


class PolicyError(ValueError):
    """A table that cannot be used: the service refuses to start and says why."""


class Caller(Protocol):
    """What the policy reads of a caller; ``shequ.auth.Identity`` has this shape."""

    @property
    def sub(self) -> str: ...
    @property
    def roles(self) -> frozenset[str]: ...
    @property
    def communities(self) -> tuple[str, ...]: ...
    @property
    def department(self) -> str | None: ...
    @property
    def purpose(self) -> str | None: ...


def _client_scopes(caller: Caller) -> frozenset[str]:
    """The caller's OAuth scopes (``Identity.scopes``); a caller without the claim has none."""
    return frozenset(getattr(caller, "scopes", ()) or ())


@dataclass(frozen=True)
class Rule:
    role: str
    scope: str
    purpose: str | None = None
    #: For a machine client's rule: the caller must hold one of these OAuth scopes.
    client_scopes: frozenset[str] = frozenset()

    def applies(self, caller: Caller) -> bool:
        return (
            self.role in caller.roles
            and (self.purpose is None or caller.purpose == self.purpose)
            and (not self.client_scopes or bool(self.client_scopes & _client_scopes(caller)))
        )


@dataclass(frozen=True)
class Action:
    name: str
    summary: str
    rules: tuple[Rule, ...]
    sensitive: bool = False
    #: The OAuth scopes (any one) a machine client needs for its rule (``client_scope``).
    client_scopes: tuple[str, ...] = ()

    def roles(self) -> tuple[str, ...]:
        """The roles with a rule for this action, sorted."""
        return tuple(sorted({rule.role for rule in self.rules}))

    def describe_roles(self) -> str:
        parts = []
        for role in self.roles():
            rules = [r for r in self.rules if r.role == role]
            scopes = "/".join(
                f"{r.scope}{f' with purpose {r.purpose}' if r.purpose else ''}" for r in rules
            )
            if role == MACHINE_ROLE and self.client_scopes:
                scopes += f" with client scope {' or '.join(self.client_scopes)}"
            parts.append(f"{role} ({scopes})")
        return ", ".join(parts)

    def missing_client_scopes(self, caller: Caller) -> tuple[str, ...]:
        """The scopes a machine client lacks for its rule here; empty if it lacks none.

        Empty too for a caller who is not a machine client or an action without
        a machine rule: then no scope would change the answer.
        """
        if MACHINE_ROLE not in caller.roles or not self.client_scopes:
            return ()
        if set(self.client_scopes) & _client_scopes(caller):
            return ()
        return self.client_scopes


@dataclass(frozen=True)
class Target:
    """The attributes of one object an action is applied to.

    ``owners`` are the subjects it belongs to (a reporter, a volunteer, a
    subscriber); ``departments`` every department handling it (a lead and
    co-handlers). Leave out what the object does not have: a missing
    attribute matches no scope that needs it.
    """

    kind: str
    id: str | None = None
    owners: tuple[str, ...] = ()
    cell: str | None = None
    departments: tuple[str, ...] = ()
    community: str | None = None


@dataclass(frozen=True)
class Reach:
    """Which objects a caller may apply an action to, for a listing's query.

    ``everything`` is true for a district rule; otherwise an object qualifies
    when its owner is ``owner``, or its cell, department or community is
    among those listed. Nothing listed and not ``everything``: no object.
    """

    everything: bool = False
    owner: str | None = None
    cells: tuple[str, ...] = ()
    departments: tuple[str, ...] = ()
    communities: tuple[str, ...] = ()

    @property
    def nothing(self) -> bool:
        return not (
            self.everything or self.owner or self.cells or self.departments or self.communities
        )


@dataclass(frozen=True)
class Policy:
    """One service's table, validated."""

    service: str
    actions: Mapping[str, Action] = field(default_factory=dict)

    def action(self, name: str) -> Action:
        try:
            return self.actions[name]
        except KeyError:
            raise PolicyError(
                f"{self.service}: action {name!r} has no entry in its {FILE_NAME}"
            ) from None

    def permits(self, caller: Caller, name: str) -> bool:
        """Whether any of the caller's roles may do ``name`` to some object (the route gate)."""
        return any(rule.applies(caller) for rule in self.action(name).rules)

    def reach(self, caller: Caller, name: str) -> Reach:
        action = self.action(name)
        scopes = {rule.scope for rule in action.rules if rule.applies(caller)}
        if action.sensitive and scopes:
            _log_sensitive(caller, name, Target("listing"))
        if "district" in scopes:
            return Reach(everything=True)
        return Reach(
            owner=caller.sub if "own" in scopes else None,
            cells=_cells(caller) if "cell" in scopes else (),
            departments=(caller.department,)
            if "department" in scopes and caller.department
            else (),
            communities=tuple(caller.communities) if "community" in scopes else (),
        )

    def allows(self, caller: Caller, name: str, target: Target) -> bool:
        action = self.action(name)
        for rule in action.rules:
            if rule.applies(caller) and _within(rule.scope, caller, target):
                if action.sensitive:
                    _log_sensitive(caller, action.name, target)
                return True
        return False


def _cells(caller: Caller) -> tuple[str, ...]:
    """The caller's grid cells (``Identity.cells``); a caller without the claim has none."""
    return tuple(getattr(caller, "cells", ()) or ())


def _within(scope: str, caller: Caller, target: Target) -> bool:
    if scope == "district":
        return True
    if scope == "community":
        return target.community is not None and target.community in caller.communities
    if scope == "department":
        return caller.department is not None and caller.department in target.departments
    if scope == "cell":
        return target.cell is not None and target.cell in _cells(caller)
    return caller.sub in target.owners


_uses = threading.local()


Use = tuple[Caller, str, Target]


def begin_uses(recorder: Callable[[list[Use]], None]) -> None:
    """Collect this worker's uses of sensitive data for ``recorder`` (``shequ.store.Store``)."""
    _uses.pending = []
    _uses.recorder = recorder


def flush_uses(succeeded: bool) -> None:
    """Hand the collected uses to the recorder once, if the work succeeded.

    The route calls this before its response is released, so the record
    exists by the time the caller has the data; the store calls it again
    when the worker ends (a no-op after the first).
    """
    found: list[Use] = getattr(_uses, "pending", None) or []
    recorder = getattr(_uses, "recorder", None)
    _uses.pending = None
    _uses.recorder = None
    if succeeded and found and recorder is not None:
        recorder(found)


def _log_sensitive(caller: Caller, action: str, target: Target) -> None:
    """A structured line per allowed use of sensitive data: ids, roles and purpose only.

    In a worker with a store, the use also becomes a record of the service's
    audit trail once the worker succeeded (``shequ.store.Store.worker_result``).
    """
    pending = getattr(_uses, "pending", None)
    if pending is not None:
        pending.append((caller, action, target))
    log.info(
        "sensitive access %s %s %s purpose=%s",
        action,
        target.kind,
        target.id or "-",
        caller.purpose or "-",
        extra={
            "action": action,
            "object_kind": target.kind,
            "object_id": target.id,
            "actor": caller.sub,
            "roles": sorted(caller.roles),
            "purpose": caller.purpose,
        },
    )


# -- loading ---------------------------------------------------------------------------


def parse_policy(service: str, raw: Any, *, where: str = FILE_NAME) -> Policy:
    """A ``Policy`` from a parsed table; every problem found is in one ``PolicyError``."""
    problems: list[str] = []
    if not isinstance(raw, dict) or not isinstance(raw.get("actions"), dict):
        raise PolicyError(f"{where}: expected a mapping with an 'actions' mapping")
    actions: dict[str, Action] = {}
    for name, entry in raw["actions"].items():
        at = f"{where}: {name}"
        if not isinstance(name, str) or not name.startswith(f"{service}."):
            problems.append(f"{at}: an action's name begins with the service's, '{service}.'")
            continue
        if not isinstance(entry, dict):
            problems.append(f"{at}: expected a mapping with 'summary' and 'rules'")
            continue
        unknown_keys = set(entry) - {"summary", "rules", "sensitive", "client_scope"}
        if unknown_keys:
            problems.append(f"{at}: unknown key(s) {', '.join(sorted(unknown_keys))}")
        summary = entry.get("summary")
        if not isinstance(summary, str) or not summary.strip():
            problems.append(f"{at}: needs a 'summary'")
        sensitive = entry.get("sensitive", False)
        if not isinstance(sensitive, bool):
            problems.append(f"{at}: 'sensitive' is true or false")
        rules = _parse_rules(at, entry.get("rules"), problems)
        client_scopes = _parse_client_scopes(service, at, entry.get("client_scope"), problems)
        machine = any(rule.role == MACHINE_ROLE for rule in rules)
        if machine and not client_scopes and "client_scope" not in entry:
            problems.append(
                f"{at}: gives {MACHINE_ROLE} a rule but names no 'client_scope' "
                "(the OAuth scope a machine client needs for it)"
            )
        if client_scopes and not machine:
            problems.append(f"{at}: 'client_scope' without a {MACHINE_ROLE} rule to apply it to")
        rules = [
            Rule(r.role, r.scope, r.purpose, frozenset(client_scopes))
            if r.role == MACHINE_ROLE
            else r
            for r in rules
        ]
        actions[name] = Action(
            name, str(summary or ""), tuple(rules), bool(sensitive), client_scopes
        )
    if problems:
        raise PolicyError("invalid authorisation table:\n  " + "\n  ".join(problems))
    return Policy(service, actions)


def _parse_client_scopes(service: str, at: str, raw: Any, problems: list[str]) -> tuple[str, ...]:
    """``client_scope``: one scope name or a list of them, each ``<service>.…``."""
    if raw is None:
        return ()
    names = raw if isinstance(raw, list) else [raw]
    good = []
    for name in names:
        if not isinstance(name, str) or not valid_scope(name):
            problems.append(f"{at}: client_scope {name!r} is not an OAuth scope name")
        elif not name.startswith(f"{service}."):
            problems.append(f"{at}: client_scope {name!r} begins with the service's, '{service}.'")
        else:
            good.append(name)
    if not names:
        problems.append(f"{at}: 'client_scope' names no scope")
    return tuple(sorted(set(good)))


def _parse_rules(at: str, raw: Any, problems: list[str]) -> list[Rule]:
    """``rules`` maps a role to a scope, or to ``{scope: ..., purpose: ...}``, or to a list."""
    if not isinstance(raw, dict) or not raw:
        problems.append(f"{at}: needs 'rules', a mapping of role to scope")
        return []
    rules = []
    for role, value in raw.items():
        if role not in ROLES:
            problems.append(f"{at}: unknown role {role!r}; roles: {', '.join(sorted(ROLES))}")
            continue
        for item in value if isinstance(value, list) else [value]:
            scope, purpose = (
                (item.get("scope"), item.get("purpose")) if isinstance(item, dict) else (item, None)
            )
            if isinstance(item, dict) and set(item) - {"scope", "purpose"}:
                problems.append(f"{at}: {role}: a rule has only 'scope' and 'purpose'")
            if scope not in SCOPES:
                problems.append(
                    f"{at}: {role}: unknown scope {scope!r}; scopes: {', '.join(SCOPES)}"
                )
                continue
            if purpose is not None and purpose not in PURPOSES:
                known = ", ".join(sorted(PURPOSES))
                problems.append(f"{at}: {role}: unknown purpose {purpose!r}; purposes: {known}")
                continue
            rules.append(Rule(str(role), str(scope), purpose))
    return rules


#: Actions of the routes every service has (``shequ.service.PlatformService``), with the
#: rules a table that does not name them gets.
PLATFORM_ACTIONS: Mapping[str, dict[str, Any]] = {
    "audit.read": {
        "summary": "Read the service's audit trail (ids, roles and hashes; no personal data)",
        "rules": {"auditor": "district", "admin": "district"},
    },
}


def load_policy(service: str, path: Path) -> Policy:
    """The table in ``path``, validated; a broken file is a ``PolicyError``.

    A service without the file has only the platform's own actions
    (``PLATFORM_ACTIONS``): any route of its own that names an action then
    stops it at start, saying the action has no entry.
    """
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else None
    except OSError as exc:
        raise PolicyError(f"{service}: cannot read its authorisation table {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise PolicyError(f"{service}: {path} is not valid YAML: {exc}") from exc
    if raw is None:
        raw = {"actions": {}}
    if isinstance(raw, dict) and isinstance(raw.get("actions"), dict):
        for name, entry in PLATFORM_ACTIONS.items():
            raw["actions"].setdefault(f"{service}.{name}", entry)
    return parse_policy(service, raw, where=f"{service}/{path.name}")


_POLICIES: dict[str, Policy] = {}


@cache
def policy_of(service_cls: type, service: str) -> Policy:
    """The table next to a service class's module, loaded once per process and registered."""
    import inspect

    policy = load_policy(service, Path(inspect.getfile(service_cls)).with_name(FILE_NAME))
    _POLICIES[service] = policy
    return policy


def register(policy: Policy) -> None:
    """Make ``policy`` the one ``allows``/``require`` use for its service's actions."""
    _POLICIES[policy.service] = policy


def _policy_for(action: str) -> Policy:
    service = action.split(".", 1)[0]
    try:
        return _POLICIES[service]
    except KeyError:
        raise PolicyError(f"no authorisation table loaded for service {service!r}") from None


def permits(caller: Caller, action: str) -> bool:
    return _policy_for(action).permits(caller, action)


def allows(caller: Caller, action: str, target: Target) -> bool:
    """Whether ``caller`` may do ``action`` to the object ``target`` describes."""
    return _policy_for(action).allows(caller, action, target)


def require(caller: Caller, action: str, target: Target) -> None:
    """``allows``, or ``Forbidden`` saying which roles reach which objects."""
    if not allows(caller, action, target):
        raise Forbidden(forbidden_detail(_policy_for(action).action(action), target))


def reach(caller: Caller, action: str) -> Reach:
    """Which objects ``caller`` may do ``action`` to: the filter of a listing."""
    return _policy_for(action).reach(caller, action)


def log_sensitive_use(caller: Caller, action: str, target: Target) -> None:
    """Record a use of sensitive data that a service decided on itself (a derived view)."""
    _policy_for(action).action(action)
    _log_sensitive(caller, action, target)


def forbidden_detail(action: Action, target: Target | None = None) -> str:
    what = f" to this {target.kind}" if target is not None else ""
    return f"{action.name}{what} is allowed for: {action.describe_roles()}"


def route_actions(routes: Iterable[Any]) -> set[str]:
    """The actions a service's routes name (for the completeness test and the matrix)."""
    return {route.action for route in routes if getattr(route, "action", None)}


# -- the published matrix ----------------------------------------------------------------


ServiceRoute = tuple[str, str, str | None, bool]


def service_tables() -> list[tuple[str, Policy, list[ServiceRoute]]]:
    """Every registered service's table with its routes: (method, URL, action, public)."""
    from shequ.discovery import discover_services, load_service
    from shequ.openapi import routes_of

    tables = []
    for service in sorted(discover_services()):
        service_cls = load_service(service)
        table = policy_of(service_cls, service)
        routes = sorted(
            (route.method, route.rule_for(service), route.action_for(service), route.public)
            for _, route in routes_of(service_cls)
        )
        tables.append((service, table, routes))
    return tables


def _cell(action: Action, role: str) -> str:
    rules = [rule for rule in action.rules if rule.role == role]
    return ", ".join(f"{r.scope} ({r.purpose})" if r.purpose else r.scope for r in rules) or "·"


def authorisation_markdown() -> str:
    """``docs/authorisation.md``: every service's table and which route needs which action."""
    roles = sorted(ROLES)
    lines = [
        "# Authorisation matrix",
        "",
        "Generated from each service's `access.yaml` and its routes by",
        "`shequ authorisation -o docs/authorisation.md` (`make authorisation`);",
        "`tests/unit/shared/test_policy.py` fails when this file is out of date.",
        "How the tables work: docs/security.md.",
        "",
        "A cell is the object scope a role reaches for the action (`own`, `cell`,",
        "`department`, `community`, `district`; a purpose in brackets means the rule",
        "applies only to a token declaring it); `·` means the role may not do it",
        "and the route answers 403. Actions marked † read sensitive personal data:",
        "each use is logged with the caller's purpose. *client scope* is the OAuth",
        "scope a `bureau` machine client (token or API key) must hold for its rule.",
        "",
    ]
    for service, table, routes in service_tables():
        lines += [f"## {service}", ""]
        lines.append("| action | client scope | " + " | ".join(roles) + " |")
        lines.append("| --- | --- | " + " | ".join("---" for _ in roles) + " |")
        for name in sorted(table.actions):
            action = table.actions[name]
            mark = " †" if action.sensitive else ""
            cells = " | ".join(_cell(action, role) for role in roles)
            client = " or ".join(f"`{scope}`" for scope in action.client_scopes) or "·"
            lines.append(f"| `{name}`{mark} | {client} | {cells} |")
        lines += ["", "| route | action |", "| --- | --- |"]
        for method, url, action_name, _ in routes:
            if action_name is None:
                continue
            lines.append(f"| `{method} {url}` | `{action_name}` |")
        lines.append("")
    return "\n".join(lines)
