"""The demo's scripted day, played against the test platform."""

import pytest

from shequ.demo import CASEWORK, SCRIPT, casework_summary, run_scenario, summary, work_cases
from tests.conftest import Platform

pytestmark = pytest.mark.e2e


def test_the_demo_scenario_finds_every_expected_effect_and_works_the_cases(
    platform: Platform,
) -> None:
    secret = platform.stack.jwt_secret()
    outcomes = run_scenario(platform.url, secret, timeout=60)
    assert len(outcomes) == len(SCRIPT)
    by_category = {outcome.category: outcome for outcome in outcomes}
    assert set(by_category["neighbour_dispute"].hops) == {"notify", "disclosure", "mediation"}
    assert set(by_category["alley_unclean"].hops) == {"notify", "disclosure", "volunteer"}
    assert all(hop is not None for outcome in outcomes for hop in outcome.hops.values())
    text = summary(outcomes)
    assert "missing effects: 0" in text
    assert "-> mediation" in text and "-> volunteer" in text

    work = {case.category: case for case in work_cases(platform.url, secret, outcomes)}
    assert set(work) == set(CASEWORK)
    assert work["safety_hazard"].path[-1] == "closed_resolved"
    assert work["facility_damaged"].path[-1] == "closed_unresolved"
    assert "returned→accepted" in work["facility_damaged"].path
    assert work["neighbour_dispute"].path[-1] == "in_progress"
    assert "dispatched(municipal)" in casework_summary(list(work.values()))
