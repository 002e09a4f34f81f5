"""The demo's scripted morning, played against the test platform."""

import pytest

from shequ.demo import SCRIPT, run_scenario, summary
from tests.conftest import Platform

pytestmark = pytest.mark.e2e


def test_the_demo_scenario_finds_every_expected_effect(platform: Platform) -> None:
    outcomes = run_scenario(platform.url, platform.stack.jwt_secret(), timeout=60)
    assert len(outcomes) == len(SCRIPT)
    by_category = {outcome.category: outcome for outcome in outcomes}
    assert set(by_category["neighbour_dispute"].hops) == {"notify", "disclosure", "mediation"}
    assert set(by_category["alley_unclean"].hops) == {"notify", "disclosure", "volunteer"}
    assert all(hop is not None for outcome in outcomes for hop in outcome.hops.values())
    text = summary(outcomes)
    assert "missing effects: 0" in text
    assert "-> mediation" in text and "-> volunteer" in text
