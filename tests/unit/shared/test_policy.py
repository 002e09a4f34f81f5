"""The authorisation tables: validated at load, complete against the routes, applied by scope."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from shequ import policy
from shequ.auth import Identity
from shequ.errors import Forbidden
from shequ.http import Route
from shequ.policy import PolicyError, Target, parse_policy

ROOT = Path(__file__).resolve().parents[3]
TABLES = policy.service_tables()


def who(*roles: str, sub: str = "u-1", **claims: Any) -> Identity:
    return Identity(sub=sub, roles=frozenset(roles), **claims)


def table(actions: dict[str, Any]) -> policy.Policy:
    return parse_policy("demo", {"actions": actions})


# -- loading ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("actions", "message"),
    [
        ({"demo.x": {"summary": "s", "rules": {"janitor": "district"}}}, "unknown role 'janitor'"),
        ({"demo.x": {"summary": "s", "rules": {"admin": "planet"}}}, "unknown scope 'planet'"),
        (
            {"demo.x": {"summary": "s", "rules": {"admin": {"scope": "own", "purpose": "fun"}}}},
            "unknown purpose 'fun'",
        ),
        ({"other.x": {"summary": "s", "rules": {"admin": "own"}}}, "begins with the service's"),
        ({"demo.x": {"summary": "s", "rules": {}}}, "needs 'rules'"),
        ({"demo.x": {"rules": {"admin": "own"}}}, "needs a 'summary'"),
        ({"demo.x": {"summary": "s", "rules": {"admin": "own"}, "who": 1}}, "unknown key(s) who"),
        (
            {"demo.x": {"summary": "s", "rules": {"bureau": "own"}}},
            "gives bureau a rule but names no 'client_scope'",
        ),
        (
            {"demo.x": {"summary": "s", "client_scope": "demo.x", "rules": {"admin": "own"}}},
            "'client_scope' without a bureau rule",
        ),
        (
            {"demo.x": {"summary": "s", "client_scope": "other.x", "rules": {"bureau": "own"}}},
            "client_scope 'other.x' begins with the service's",
        ),
        (
            {"demo.x": {"summary": "s", "client_scope": "demo x", "rules": {"bureau": "own"}}},
            "client_scope 'demo x' is not an OAuth scope name",
        ),
        (
            {"demo.x": {"summary": "s", "client_scope": [], "rules": {"bureau": "own"}}},
            "'client_scope' names no scope",
        ),
    ],
)
def test_a_broken_table_is_refused_at_load_saying_where(
    actions: dict[str, Any], message: str
) -> None:
    with pytest.raises(PolicyError) as refused:
        table(actions)
    assert message in str(refused.value)


def test_every_problem_of_a_table_is_reported_at_once() -> None:
    with pytest.raises(PolicyError) as refused:
        table(
            {
                "demo.a": {"summary": "s", "rules": {"janitor": "own"}},
                "demo.b": {"summary": "s", "rules": {"admin": "planet"}},
            }
        )
    assert "demo.a" in str(refused.value) and "demo.b" in str(refused.value)


def test_a_route_naming_an_action_the_table_lacks_is_an_error() -> None:
    with pytest.raises(PolicyError, match="demo.nothing"):
        table({"demo.x": {"summary": "s", "rules": {"admin": "own"}}}).action("demo.nothing")


def _container(service_cls: type, name: str) -> SimpleNamespace:
    return SimpleNamespace(config={}, service_name=name, service_cls=service_cls)


def test_a_service_with_a_non_public_route_without_an_action_does_not_start() -> None:
    from shequ_services.disclosure.service import DisclosureService

    route = Route("POST", "/api/v1/disclosure/anything", summary="s")
    route.container = _container(DisclosureService, "disclosure")  # type: ignore[assignment]
    with pytest.raises(PolicyError, match="names no action"):
        route.setup()


def test_a_service_whose_route_names_an_unknown_action_does_not_start() -> None:
    from shequ_services.disclosure.service import DisclosureService

    route = Route("POST", "/api/v1/disclosure/x", action="disclosure.nothing", summary="s")
    route.container = _container(DisclosureService, "disclosure")  # type: ignore[assignment]
    with pytest.raises(PolicyError, match="disclosure.nothing"):
        route.setup()


# -- completeness against the routes ---------------------------------------------------------


@pytest.mark.parametrize(("service", "tbl", "routes"), TABLES, ids=[t[0] for t in TABLES])
def test_every_non_public_route_names_an_action_of_its_table(
    service: str, tbl: policy.Policy, routes: list[policy.ServiceRoute]
) -> None:
    for method, url, action, public in routes:
        if public:
            continue
        assert action, f"{service}: {method} {url} names no action"
        assert tbl.action(action).rules, f"{service}: {action} has no rule"


@pytest.mark.parametrize(("service", "tbl", "routes"), TABLES, ids=[t[0] for t in TABLES])
def test_every_action_of_a_table_is_used_by_a_route_or_the_services_code(
    service: str, tbl: policy.Policy, routes: list[policy.ServiceRoute]
) -> None:
    named = {action for _, _, action, _ in routes if action}
    code = "\n".join(
        path.read_text(encoding="utf-8") for path in (ROOT / "services" / service).glob("*.py")
    )
    unused = [name for name in tbl.actions if name not in named and f'"{name}"' not in code]
    assert not unused, f"{service}: actions nothing checks: {unused}"


def test_the_published_matrix_is_up_to_date() -> None:
    committed = (ROOT / "docs" / "authorisation.md").read_text(encoding="utf-8")
    assert committed == policy.authorisation_markdown(), "run `make authorisation`"


# -- applying a table ------------------------------------------------------------------------

SAMPLE = table(
    {
        "demo.read": {
            "summary": "read",
            "sensitive": True,
            "rules": {
                "resident": "own",
                "grid_worker": "cell",
                "department": "department",
                "community_staff": ["own", {"scope": "community", "purpose": "casework"}],
                "admin": "district",
            },
        }
    }
)
OBJECT = Target("thing", "t-1", owners=("u-9",), cell="c-1", departments=("d-1",), community="A")


@pytest.fixture(autouse=True)
def _sample_registered() -> None:
    policy.register(SAMPLE)


@pytest.mark.parametrize(
    ("caller", "allowed"),
    [
        (who("resident", sub="u-9"), True),
        (who("resident"), False),
        (who("grid_worker", cells=("c-1",)), True),
        (who("grid_worker", cells=("c-2",)), False),
        (who("department", department="d-1"), True),
        (who("department", department="d-2"), False),
        (who("department"), False),
        (who("community_staff", communities=("A",), purpose="casework"), True),
        (who("community_staff", communities=("A",)), False),
        (who("community_staff", communities=("B",), purpose="casework"), False),
        (who("admin"), True),
        (who("auditor"), False),
    ],
)
def test_each_scope_reaches_the_objects_it_names(caller: Identity, allowed: bool) -> None:
    assert policy.allows(caller, "demo.read", OBJECT) is allowed


def test_require_refuses_saying_which_roles_reach_what() -> None:
    with pytest.raises(Forbidden) as refused:
        policy.require(who("resident"), "demo.read", OBJECT)
    assert "resident (own)" in refused.value.detail
    assert "community with purpose casework" in refused.value.detail


def test_the_route_gate_passes_any_role_with_a_rule_and_no_other() -> None:
    assert SAMPLE.permits(who("resident"), "demo.read")
    assert not SAMPLE.permits(who("auditor", "bureau"), "demo.read")


def test_reach_is_what_a_listing_selects() -> None:
    assert policy.reach(who("admin"), "demo.read").everything
    staff = policy.reach(
        who("community_staff", communities=("A",), purpose="casework"), "demo.read"
    )
    assert staff.communities == ("A",) and staff.owner == "u-1" and not staff.everything
    assert policy.reach(who("community_staff", communities=("A",)), "demo.read").communities == ()
    assert policy.reach(who("auditor"), "demo.read").nothing


def test_a_use_of_sensitive_data_is_logged_with_the_purpose_and_ids_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caller = who("community_staff", communities=("A",), purpose="casework")
    with caplog.at_level(logging.INFO, logger="shequ.policy.access"):
        assert policy.allows(caller, "demo.read", OBJECT)
    (record,) = caplog.records
    assert record.action == "demo.read"  # type: ignore[attr-defined]
    assert record.purpose == "casework"  # type: ignore[attr-defined]
    assert record.object_id == "t-1"  # type: ignore[attr-defined]
    assert "casework" in record.getMessage()


def test_a_refused_use_is_not_logged_as_a_use(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="shequ.policy.access"):
        assert not policy.allows(who("resident"), "demo.read", OBJECT)
    assert not caplog.records


# -- machine clients: client scopes ---------------------------------------------------------

MACHINE = table(
    {
        "demo.subscribe": {
            "summary": "subscribe",
            "client_scope": ["demo.subscriptions", "demo.all"],
            "rules": {"bureau": "own", "admin": "district"},
        },
        "demo.peek": {"summary": "peek", "client_scope": "demo.peek", "rules": {"bureau": "own"}},
    }
)
MINE = Target("subscription", "s-1", owners=("bureau:water",))


def client(*scopes: str, roles: tuple[str, ...] = ("bureau",)) -> Identity:
    return who(*roles, sub="bureau:water", scopes=frozenset(scopes))


@pytest.mark.parametrize(
    ("caller", "allowed"),
    [
        (client("demo.subscriptions"), True),
        (client("demo.all"), True),
        (client("demo.peek"), False),
        (client(), False),
        # A scope grants nothing without the role whose rule it unlocks.
        (client("demo.subscriptions", roles=("resident",)), False),
        # Another role's rule is not limited by the machine client's scopes.
        (client(roles=("bureau", "admin")), True),
    ],
)
def test_a_bureau_rule_applies_only_to_a_client_holding_one_of_its_scopes(
    caller: Identity, allowed: bool
) -> None:
    policy.register(MACHINE)
    assert MACHINE.permits(caller, "demo.subscribe") is allowed
    assert policy.allows(caller, "demo.subscribe", MINE) is allowed
    assert policy.reach(caller, "demo.subscribe").nothing is not allowed


def test_the_missing_scope_is_named_only_when_it_is_why() -> None:
    action = MACHINE.action("demo.subscribe")
    assert action.missing_client_scopes(client("demo.peek")) == ("demo.all", "demo.subscriptions")
    assert action.missing_client_scopes(client("demo.all")) == ()
    assert action.missing_client_scopes(who("resident")) == ()
    assert "bureau (own with client scope demo.all or demo.subscriptions)" in (
        policy.forbidden_detail(action)
    )


def test_every_bureau_rule_of_every_service_names_its_scope_after_the_service() -> None:
    for service, tbl, _ in TABLES:
        for action in tbl.actions.values():
            if "bureau" in action.roles():
                assert action.client_scopes, action.name
                assert all(s.startswith(f"{service}.") for s in action.client_scopes)


def test_the_grid_refuses_a_sensitive_read_scope_unlike_the_read_scope() -> None:
    from shequ_services.grid import domain
    from shequ_services.grid.access import TABLE

    raw = {"actions": {name: _raw(a) for name, a in TABLE.actions.items()}}
    raw["actions"]["grid.incident.read_sensitive"]["client_scope"] = "grid.sensitive"
    with pytest.raises(ValueError, match="client_scope must be grid.incident.read's"):
        domain.read_rules_from(parse_policy("grid", raw))


def _raw(action: policy.Action) -> dict[str, Any]:
    """An action back in its ``access.yaml`` form."""
    rules: dict[str, list[Any]] = {}
    for rule in action.rules:
        item = {"scope": rule.scope, "purpose": rule.purpose} if rule.purpose else rule.scope
        rules.setdefault(rule.role, []).append(item)
    out: dict[str, Any] = {"summary": action.summary, "rules": rules}
    if action.client_scopes:
        out["client_scope"] = list(action.client_scopes)
    if action.sensitive:
        out["sensitive"] = True
    return out


# -- the services' own tables ----------------------------------------------------------------


def test_only_the_assigned_mediator_and_admins_see_parties_in_the_clear() -> None:
    from shequ_services.mediation.service import MediationService

    policy.policy_of(MediationService, "mediation")
    case = Target("case", "C-1", owners=("med-1",), community="A")
    action = "mediation.case.read_parties"
    assert policy.allows(who("mediator", sub="med-1"), action, case)
    assert policy.allows(who("admin", sub="anyone"), action, case)
    assert not policy.allows(who("mediator", sub="med-2"), action, case)
    assert not policy.allows(who("community_staff", sub="med-1", communities=("A",)), action, case)
    assert not policy.allows(who("auditor", sub="aud"), action, case)


def test_the_grid_transition_gate_admits_exactly_the_roles_of_the_workflow_table() -> None:
    from shequ_services.grid import workflow
    from shequ_services.grid.access import TABLE

    in_workflow = set().union(*(rule.roles for rule in workflow.RULES.values()))
    assert set(TABLE.action("grid.incident.transition").roles()) == in_workflow


def test_a_service_without_a_table_has_only_the_platforms_actions(tmp_path: Path) -> None:
    loaded = policy.load_policy("plain", tmp_path / "access.yaml")
    assert set(loaded.actions) == {"plain.audit.read"}
    assert loaded.permits(who("auditor"), "plain.audit.read")
    with pytest.raises(PolicyError, match="plain.own.thing"):
        loaded.action("plain.own.thing")


def test_a_table_that_is_not_yaml_stops_the_service(tmp_path: Path) -> None:
    broken = tmp_path / "access.yaml"
    broken.write_text("actions: [unclosed", encoding="utf-8")
    with pytest.raises(PolicyError, match="not valid YAML"):
        policy.load_policy("plain", broken)
