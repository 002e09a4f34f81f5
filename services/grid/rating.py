"""The reporter's rating (评) of a closed incident: who may rate, when, and how often.

Plain Python like ``domain`` and ``workflow``. A rating is not a lifecycle
step: it changes no state and stops no clock, so it is not a row of
``workflow.RULES``; it is still versioned like a step, because it changes the
incident (its history and its ratings) and a stale form must not rate twice.

The rules, in the order they are checked so a caller's error is stable:

1. ``expected_version`` must be the incident's version (``StaleVersion``).
2. The incident must be closed, resolved or not (``RatingNotOpen``): there is
   nothing to judge before the on-site check.
3. Only the reporter, acting as a resident, may rate (``NotTheReporter``).
   Grid workers and staff report on patrol and then check and close the same
   cases; letting them grade their own work would inflate the satisfaction
   rate. This is the same rule as the reporter's reopen.
4. The score is a whole number from 1 to 5 and the comment, optional, at most
   ``MAX_COMMENT`` characters (``InvalidRating``); a blank comment is no comment.
5. One rating per closure (``AlreadyRated``). A case reopened and closed
   again is a new closure and may be rated again: the reporter judges the
   work done since. The satisfaction rate counts each incident's latest
   rating only (see ``rates``).

There is no time limit on rating while the case stays closed: a late
judgement is still the reporter's judgement, and it cannot reopen anything.
"""

from __future__ import annotations

from datetime import datetime

from shequ_services.grid.domain import CLOSED_STATES, GridError, Incident, Rating
from shequ_services.grid.workflow import StaleVersion

SCORES = range(1, 6)
RATER_ROLE = "resident"
MAX_COMMENT = 1000


class RatingError(GridError):
    """Base of rating refusals, so the service maps them in one place."""


class RatingNotOpen(RatingError):
    """The incident is not closed, so there is no closure to rate."""

    def __init__(self, state: str) -> None:
        self.state = state
        super().__init__(f"an incident can be rated only once it is closed; it is {state!r}")


class NotTheReporter(RatingError):
    """Someone other than the reporting resident tried to rate."""


class InvalidRating(RatingError):
    """The score is not a whole number from 1 to 5, or the comment is too long."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


class AlreadyRated(RatingError):
    """The reporter already rated this closure."""

    def __init__(self, closure: int) -> None:
        self.closure = closure
        super().__init__(
            "this closure of the incident is already rated; a rating is possible again "
            "only after the case is reopened and closed again"
        )


def closures(incident: Incident) -> int:
    """How many times the incident was closed (the current closure's number)."""
    return sum(1 for entry in incident.history if entry.get("to") in CLOSED_STATES)


def rate(
    incident: Incident,
    *,
    expected_version: int,
    actor: str,
    roles: frozenset[str],
    score: int,
    comment: str | None,
    at: datetime,
) -> Rating:
    """Decide a rating, or raise the first rule it breaks (see the module doc)."""
    if expected_version != incident.version:
        raise StaleVersion(expected=expected_version, actual=incident.version)
    if incident.status not in CLOSED_STATES:
        raise RatingNotOpen(incident.status)
    if RATER_ROLE not in roles or actor != incident.reporter:
        raise NotTheReporter("only the resident who reported the incident may rate it")
    if isinstance(score, bool) or not isinstance(score, int) or score not in SCORES:
        raise InvalidRating("score", f"the score must be a whole number from 1 to 5, got {score!r}")
    text = comment.strip() if comment else ""
    if len(text) > MAX_COMMENT:
        raise InvalidRating("comment", f"the comment may have at most {MAX_COMMENT} characters")
    closure = closures(incident)
    if any(previous.closure == closure for previous in incident.ratings):
        raise AlreadyRated(closure)
    return Rating(score=score, at=at, closure=closure, comment=text or None)
