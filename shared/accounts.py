"""A broker account per service, provisioned on RabbitMQ's management API.

Each service connects as its own user whose permissions
``shequ.topology.broker_permissions`` derives from the service class: its own
exchanges and queues, the source exchanges it binds to, the routing keys it
may use. A compromised or buggy service can then neither publish another
service's events, nor read, bind, declare or delete another service's
queues. The operators' tools (``shequ deadletters``, ``shequ reconcile``,
``shequ bureau``, ``shequ init``) keep the administrator's account.

The development stack calls ``provision`` at every start; in Kubernetes the
same permissions are RabbitMQ ``User``/``Permission``/``TopicPermission``
resources (deploy/k8s/base/rabbitmq.yaml, checked against this derivation by
tests/deploy).
"""

from __future__ import annotations

import contextlib
import secrets
import urllib.parse
from collections.abc import Callable, Iterable
from typing import Any

import pymongo

from shequ.bureau import BureauError, Management, uri_with
from shequ.store import database_name
from shequ.topology import broker_permissions, broker_use

USER_PREFIX = "shequ-"


def user_name(service: str, suffix: str = "") -> str:
    """``shequ-<service>``, and ``-<suffix>`` when several stacks share one broker."""
    return f"{USER_PREFIX}{service}-{suffix}" if suffix else f"{USER_PREFIX}{service}"


def _q(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def grant(management: Management, vhost: str, user: str, perms: dict[str, Any]) -> None:
    """Set a user's vhost permissions and replace its topic permissions with ``perms``'."""
    management.call(
        "PUT",
        f"permissions/{_q(vhost)}/{_q(user)}",
        {k: perms[k] for k in ("configure", "write", "read")},
    )
    management.call("DELETE", f"topic-permissions/{_q(vhost)}/{_q(user)}", missing_ok=True)
    for topic in perms["topics"]:
        management.call("PUT", f"topic-permissions/{_q(vhost)}/{_q(user)}", topic)


def provision(
    management: Management,
    vhost: str,
    amqp_uri: str,
    service_classes: Iterable[type],
    suffix: str = "",
) -> dict[str, str]:
    """Create (or reset) each service's user with a fresh password; return its AMQP URI.

    A user that exists already gets the new password and exactly the derived
    permissions, so a restarted stack never keeps rights from an older
    version of a service.
    """
    return {
        service_cls.name: create_user(
            management,
            vhost,
            amqp_uri,
            user_name(service_cls.name, suffix),
            broker_permissions(broker_use(service_cls)),
        )
        for service_cls in service_classes
    }


def create_user(
    management: Management, vhost: str, amqp_uri: str, user: str, perms: dict[str, Any]
) -> str:
    """Create or reset ``user`` with a fresh password and ``perms``; return its AMQP URI."""
    password = secrets.token_urlsafe(24)
    management.call("PUT", f"users/{_q(user)}", {"password": password, "tags": ""})
    grant(management, vhost, user, perms)
    return uri_with(amqp_uri, user, password)


def remove(management: Management, services: Iterable[str], suffix: str = "") -> None:
    """Delete the services' users, their permissions with them; best effort (at shutdown)."""
    for service in services:
        with contextlib.suppress(BureauError):
            management.call("DELETE", f"users/{_q(user_name(service, suffix))}", missing_ok=True)


def provision_database_users(
    admin_uri: str,
    services: Iterable[str],
    prefix: str,
    uri_for: Callable[[str, str], str],
) -> dict[str, str]:
    """A database user per service, ``readWrite`` on its own database only; its URI each.

    As the Kubernetes manifests do with the MongoDB operator
    (deploy/k8s/base/mongodb.yaml); here on the development stack's own
    SecantusDB, which enforces them when started with authentication.
    Existing users get a fresh password and exactly that role.
    """
    uris: dict[str, str] = {}
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        admin_uri, serverSelectionTimeoutMS=10000
    )
    try:
        for service in services:
            user = user_name(service)
            password = secrets.token_urlsafe(24)
            roles = [{"role": "readWrite", "db": database_name(service, prefix)}]
            known = client.admin.command("usersInfo", user)["users"]
            command = "updateUser" if known else "createUser"
            client.admin.command(command, user, pwd=password, roles=roles)
            uris[service] = uri_for(user, password)
    finally:
        client.close()
    return uris


#: The Kubernetes names (deploy/k8s/base): the broker cluster and the vhost.
K8S_CLUSTER = "shequ-rabbitmq"
K8S_VHOST = "shequ"


def k8s_resources(
    service_classes: Iterable[type], vhost: str = K8S_VHOST, cluster: str = K8S_CLUSTER
) -> list[dict[str, Any]]:
    """The Messaging Topology Operator's ``User``, ``Permission`` and ``TopicPermission``
    resources giving each service its account, with the same derived permissions.

    The user's name and password come from the Secret ``shequ-rabbitmq-<service>``
    (``deploy/k8s/create-secrets.sh``), never from the manifests.
    """
    api = "rabbitmq.com/v1beta1"
    reference = {"name": cluster}
    docs: list[dict[str, Any]] = []
    for service_cls in sorted(service_classes, key=lambda cls: cls.name):
        user = user_name(service_cls.name)
        perms = broker_permissions(broker_use(service_cls))
        docs.append({
            "apiVersion": api, "kind": "User", "metadata": {"name": user},
            "spec": {
                "importCredentialsSecret": {"name": f"shequ-rabbitmq-{service_cls.name}"},
                "rabbitmqClusterReference": reference,
            },
        })  # fmt: skip
        docs.append({
            "apiVersion": api, "kind": "Permission", "metadata": {"name": user},
            "spec": {
                "vhost": vhost, "userReference": {"name": user},
                "permissions": {k: perms[k] for k in ("configure", "write", "read")},
                "rabbitmqClusterReference": reference,
            },
        })  # fmt: skip
        for topic in perms["topics"]:
            docs.append({
                "apiVersion": api, "kind": "TopicPermission",
                "metadata": {"name": f"{user}-{topic['exchange'].replace('.', '-')}"},
                "spec": {
                    "vhost": vhost, "userReference": {"name": user},
                    "permissions": dict(topic),
                    "rabbitmqClusterReference": reference,
                },
            })  # fmt: skip
    return docs


K8S_HEADER = """\
# Generated by `python -m shequ.accounts` from the services' code
# (shequ.topology.broker_permissions); do not edit by hand. tests/deploy
# fails when it no longer matches. One broker account per service: its own
# exchanges and queues, the source exchanges it binds to, and on the shared
# ones only the routing keys it uses (docs/security.md).
"""


def main() -> None:
    """Print the Kubernetes resources of every registered service's account."""
    import yaml

    from shequ.discovery import discover_services, load_service

    classes = [load_service(name) for name in sorted(discover_services())]
    print(K8S_HEADER + yaml.safe_dump_all(k8s_resources(classes), sort_keys=False), end="")


if __name__ == "__main__":
    main()
