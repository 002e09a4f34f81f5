"""The grid's gauges on the rates' hand-counted fixture (tests/unit/services/test_grid_rates.py).

Open among the eight: #5 and #6 (reported, hx-liushu; #6's acknowledge clock
is two days old, past its 4 h limit, #5's one hour old, within it) and #7
(reopened, hx-liushu; its dispatch clock runs, started at T0 with a one-day
limit, so it is late at NOW, three days later).
"""

from datetime import timedelta

from shequ_services.grid import gauges, rates
from shequ_services.grid.rates import Ratio
from tests.unit.services.test_grid_rates import CLOCKS, FIXTURE, LS, NOW, QY, SHANGHAI

OPEN = [item for item in FIXTURE if item.status in ("reported", "reopened")]


def test_open_work_counts_by_category_state_and_late_clock() -> None:
    work = gauges.open_work(OPEN, NOW)
    assert work.by_category == {"alley": 1, "facility": 2}
    assert work.by_community_state == {(LS, "reported"): 2, (LS, "reopened"): 1}
    assert work.overdue == {(LS, "acknowledge"): 1, (LS, "dispatch"): 1}


def test_a_clock_exactly_at_its_deadline_is_not_yet_overdue() -> None:
    late = OPEN[1]  # #6: only its acknowledge clock, running, two days old
    assert list(late.clocks) == ["acknowledge"] and late.clocks["acknowledge"].running
    at_deadline = late.clocks["acknowledge"].deadline
    assert gauges.open_work([late], at_deadline).overdue == {}
    later = at_deadline + timedelta(seconds=1)
    assert gauges.open_work([late], later).overdue == {(LS, "acknowledge"): 1}


def test_rate_counts_per_community_are_the_rates_apis_and_sum_to_the_district() -> None:
    counts = gauges.rate_counts(FIXTURE, NOW)
    assert counts[("response", QY)] == Ratio(3, 4)
    assert counts[("resolution", QY)] == Ratio(2, 3)
    assert counts[("satisfaction", QY)] == Ratio(2, 3)
    assert counts[("response", LS)] == Ratio(2, 3)
    assert counts[("resolution", LS)] == Ratio(1, 1)
    assert counts[("satisfaction", LS)] == Ratio(0, 1)
    (district,) = rates.summarise(FIXTURE, now=NOW, clocks=CLOCKS, tz=SHANGHAI)
    for name, ratio in (
        ("response", district.response_rate),
        ("resolution", district.resolution_rate),
        ("satisfaction", district.satisfaction_rate),
    ):
        parts = [counts[(name, community)] for community in (QY, LS)]
        assert Ratio(sum(p.numerator for p in parts), sum(p.denominator for p in parts)) == ratio


def test_no_incidents_no_series() -> None:
    assert gauges.rate_counts([], NOW) == {}
    assert gauges.open_work([], NOW) == gauges.OpenWork({}, {}, {})
