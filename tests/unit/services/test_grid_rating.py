from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shequ_services.grid import rating
from shequ_services.grid.domain import Incident, Rating
from shequ_services.grid.workflow import StaleVersion

REPORTED = datetime(2026, 11, 20, 1, 0, tzinfo=UTC)
AT = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
RESIDENT = frozenset({"resident"})


def incident(status: str = "closed_resolved", closures: int = 1, **overrides: Any) -> Incident:
    """An incident reported by resident ``r-1`` and closed ``closures`` times."""
    history: list[dict[str, Any]] = [{"at": REPORTED, "action": "reported", "to": "reported"}]
    for n in range(closures):
        history.append({"at": REPORTED + timedelta(days=n + 1), "action": "check", "to": status})
        if n + 1 < closures:
            history.append({"at": REPORTED, "action": "reopen", "to": "reopened"})
    base = Incident(
        id="INC-1",
        category="facility_damaged",
        grid_cell="qy-01",
        community="hx-qingyuan",
        description="井盖松动",
        location=None,
        reporter="r-1",
        channel="resident_app",
        urgency="simple",
        status=status,
        reported_at=REPORTED,
        version=7,
        history=history,
    )
    return replace(base, **overrides)


def rate(target: Incident, **overrides: Any) -> Rating:
    args: dict[str, Any] = {
        "expected_version": target.version,
        "actor": "r-1",
        "roles": RESIDENT,
        "score": 4,
        "comment": None,
        "at": AT,
    }
    args.update(overrides)
    return rating.rate(target, **args)


@pytest.mark.parametrize("status", ["closed_resolved", "closed_unresolved"])
def test_the_reporter_rates_a_closed_incident_resolved_or_not(status: str) -> None:
    given = rate(incident(status), score=5, comment="  修得很快 ")
    assert given == Rating(score=5, at=AT, closure=1, comment="修得很快")


@pytest.mark.parametrize(
    "status", ["reported", "accepted", "dispatched", "in_progress", "handled", "reopened"]
)
def test_an_open_incident_cannot_be_rated(status: str) -> None:
    with pytest.raises(rating.RatingNotOpen) as refused:
        rate(incident(status))
    assert refused.value.state == status


def test_a_rejected_report_cannot_be_rated() -> None:
    with pytest.raises(rating.RatingNotOpen):
        rate(incident("rejected"))


def test_only_the_reporter_may_rate() -> None:
    with pytest.raises(rating.NotTheReporter):
        rate(incident(), actor="r-2")


def test_staff_who_reported_a_case_cannot_rate_their_own_work() -> None:
    own_report = incident(reporter="gw-1")
    with pytest.raises(rating.NotTheReporter):
        rate(own_report, actor="gw-1", roles=frozenset({"grid_worker", "community_staff"}))


@pytest.mark.parametrize("score", [0, 6, -1, 4.5, "5", True, None])
def test_a_score_outside_one_to_five_is_refused(score: Any) -> None:
    with pytest.raises(rating.InvalidRating) as refused:
        rate(incident(), score=score)
    assert refused.value.field == "score"


def test_every_whole_score_from_one_to_five_is_accepted() -> None:
    assert [rate(incident(), score=s).score for s in range(1, 6)] == [1, 2, 3, 4, 5]


def test_a_blank_comment_is_no_comment_and_an_overlong_one_is_refused() -> None:
    assert rate(incident(), comment="   ").comment is None
    with pytest.raises(rating.InvalidRating) as refused:
        rate(incident(), comment="好" * (rating.MAX_COMMENT + 1))
    assert refused.value.field == "comment"


def test_a_closure_is_rated_once() -> None:
    rated = incident(ratings=[Rating(score=3, at=AT, closure=1)])
    with pytest.raises(rating.AlreadyRated):
        rate(rated)


def test_a_case_reopened_and_closed_again_may_be_rated_again() -> None:
    again = incident(closures=2, ratings=[Rating(score=2, at=AT, closure=1)])
    assert rate(again, score=5).closure == 2


def test_a_rating_in_the_history_is_not_a_closure() -> None:
    rated = incident(ratings=[Rating(score=3, at=AT, closure=1)])
    rated.history.append({"at": AT, "action": "rate", "fields": {"score": 3}})
    assert rating.closures(rated) == 1
    with pytest.raises(rating.AlreadyRated):
        rate(rated)


def test_a_stale_version_is_refused_first() -> None:
    with pytest.raises(StaleVersion):
        rate(incident("reported"), expected_version=3, actor="someone-else", score=9)


def test_the_state_is_checked_before_the_caller() -> None:
    with pytest.raises(rating.RatingNotOpen):
        rate(incident("handled"), actor="r-2")
