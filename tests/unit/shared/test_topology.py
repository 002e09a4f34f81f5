import re

from shequ.topology import subscriptions
from shequ_services.disclosure.service import DisclosureService
from shequ_services.grid.service import GridService
from shequ_services.mediation.service import MediationService
from shequ_services.notify.service import NotifyService
from shequ_services.volunteer.service import VolunteerService

CONSUMERS = (NotifyService, DisclosureService, MediationService, VolunteerService)
#: nameko's own naming: evt-<source service>-<event type>--<consumer>.<handler method>
NAMEKO_QUEUE = re.compile(r"^evt-[a-z]+-[a-z_]+\.[a-z_]+--[a-z]+\.on_[a-z_]+$")


def test_every_consumer_of_incident_reported_has_a_nameko_compatible_queue() -> None:
    queues = {sub.queue for cls in CONSUMERS for sub in subscriptions(cls)}
    assert {
        f"evt-grid-incident.reported--{name}.on_incident_reported"
        for name in ("notify", "disclosure", "mediation", "volunteer")
    } <= queues
    assert all(NAMEKO_QUEUE.match(queue) for queue in queues), sorted(queues)


def test_the_grid_consumes_only_closed_mediation_cases() -> None:
    assert [sub.queue for sub in subscriptions(GridService)] == [
        "evt-mediation-case.closed--grid.on_mediation_case_closed"
    ]


def test_notify_has_one_queue_per_event_type_it_consumes_named_after_its_handler() -> None:
    found = {
        (sub.source_service, sub.event_name): sub.queue for sub in subscriptions(NotifyService)
    }
    assert found[("grid", "incident.overdue")] == (
        "evt-grid-incident.overdue--notify.on_incident_overdue"
    )
    assert found[("mediation", "case.opened")] == "evt-mediation-case.opened--notify.on_case_opened"
    assert len(set(found.values())) == len(found)
