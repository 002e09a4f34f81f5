"""What the grid's gauges say, counted from the store's facts (plain Python).

Gauges of open work and of the rates are recomputed from the incidents at
every scrape rather than counted up and down in memory: a count kept in
memory starts from zero after a restart and drifts between replicas, while a
count of the store is right on every replica at every moment. The rates'
numerators and denominators are those of ``rates`` over the default period
(the last ``rates.DEFAULT_PERIOD_DAYS`` local days), per community, so
summing them over communities gives the district's rate exactly as
``GET /api/v1/grid/rates`` does, and PromQL can divide them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from shequ_services.grid import rates
from shequ_services.grid.rates import Facts

RATES = ("response", "resolution", "satisfaction")


@dataclass(frozen=True)
class OpenWork:
    """Open incidents counted three ways."""

    by_category: dict[str, int]
    by_community_state: dict[tuple[str, str], int]
    #: (community, clock name) → open incidents with that clock running past its deadline.
    overdue: dict[tuple[str, str], int]


def open_work(facts: Iterable[Facts], now: datetime) -> OpenWork:
    """Count open incidents (the facts given are all open) by category, state and lateness.

    An incident with two late clocks of the same name (a co-handler's sub-task
    and another's) counts once for that clock name.
    """
    by_category: Counter[str] = Counter()
    by_state: Counter[tuple[str, str]] = Counter()
    overdue: Counter[tuple[str, str]] = Counter()
    for item in facts:
        by_category[item.category] += 1
        by_state[(item.community, item.status)] += 1
        late = {c.name for c in item.clocks.values() if c.running and now > c.deadline}
        for name in late:
            overdue[(item.community, name)] += 1
    return OpenWork(dict(by_category), dict(by_state), dict(overdue))


def rate_counts(facts: Sequence[Facts], now: datetime) -> dict[tuple[str, str], rates.Ratio]:
    """(rate, community) → the rate's numerator and denominator, as ``rates`` counts them."""
    by_community: dict[str, list[Facts]] = {}
    for item in facts:
        by_community.setdefault(item.community, []).append(item)
    counts: dict[tuple[str, str], rates.Ratio] = {}
    for community, items in by_community.items():
        counts[("response", community)] = rates.response(items, now)
        counts[("resolution", community)] = rates.resolution(items)
        counts[("satisfaction", community)] = rates.satisfaction(items)
    return counts
