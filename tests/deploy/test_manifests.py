"""Every overlay renders, its core kinds validate, and the house rules hold.

Rendering uses ``kubectl kustomize``; validation uses ``kubernetes-validate``
against the Kubernetes version below, strictly (unknown fields are errors).
Kinds defined by operators' CRDs have no schema there and are listed in
``CRD_KINDS``: a kind in neither list fails the test, so nothing is skipped
silently.
"""

from __future__ import annotations

import re
from typing import Any

import kubernetes_validate
import pytest

from tests.deploy.conftest import K8S, OVERLAYS, SERVICES, named, of_kind, rendered

pytestmark = pytest.mark.deploy

KUBERNETES_VERSION = "1.34.0"

CORE_KINDS = {
    "ConfigMap",
    "CronJob",
    "Deployment",
    "HorizontalPodAutoscaler",
    "Ingress",
    "Job",
    "Namespace",
    "NetworkPolicy",
    "PersistentVolumeClaim",
    "PodDisruptionBudget",
    "Service",
    "ServiceAccount",
}
#: Operator kinds, not validated here (no schema without their CRDs).
CRD_KINDS = {
    "MongoDBCommunity",  # MongoDB Controllers for Kubernetes
    "Permission",  # RabbitMQ Messaging Topology Operator
    "Policy",
    "TopicPermission",
    "RabbitmqCluster",  # RabbitMQ Cluster Operator
    "ScaledObject",  # KEDA
    "PodMonitor",  # Prometheus Operator
    "PrometheusRule",
    "ServiceMonitor",
    "TriggerAuthentication",
    "User",
    "Vhost",
}


def pod_specs(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for doc in docs:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] in ("Deployment", "Job"):
            found.append((where, doc["spec"]["template"]["spec"]))
        elif doc["kind"] == "CronJob":
            found.append((where, doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]))
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_kind_is_known(overlay: str) -> None:
    kinds = {doc["kind"] for doc in rendered(overlay)}
    assert kinds <= CORE_KINDS | CRD_KINDS, kinds - CORE_KINDS - CRD_KINDS


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_core_kinds_validate_against_kubernetes(overlay: str) -> None:
    problems = []
    for doc in rendered(overlay):
        if doc["kind"] in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_probes_limits_and_runs_locked_down(overlay: str) -> None:
    for where, spec in pod_specs(rendered(overlay)):
        pod_security = spec["securityContext"]
        assert pod_security["runAsNonRoot"] is True, where
        assert pod_security["runAsUser"] != 0, where
        assert spec["automountServiceAccountToken"] is False, where
        for container in spec.get("initContainers", []) + spec["containers"]:
            name = f"{where} {container['name']}"
            limits = container["resources"]["limits"]
            requests = container["resources"]["requests"]
            assert {"cpu", "memory"} <= limits.keys() and {"cpu", "memory"} <= requests.keys(), name
            security = container["securityContext"]
            assert security["runAsNonRoot"] is True, name
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
        if where.startswith("Deployment/"):
            (container,) = spec["containers"]
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", where
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", where
            assert container["startupProbe"]["httpGet"]["path"] == "/healthz", where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_has_its_deployment_service_pdb_and_network_policy(overlay: str) -> None:
    docs = rendered(overlay)
    for service in SERVICES:
        name = f"shequ-{service}"
        deployment = named(docs, "Deployment", name)
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["template"]["spec"]["containers"][0]["args"][0] == service
        for kind in ("Service", "PodDisruptionBudget", "ServiceAccount"):
            named(docs, kind, name)
        pdb = named(docs, "PodDisruptionBudget", name)
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
        policy = named(docs, "NetworkPolicy", name)
        assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
        assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}


@pytest.mark.parametrize("overlay", ("prod", "example-district"))
def test_prod_like_overlays_are_highly_available_and_autoscaled(overlay: str) -> None:
    docs = rendered(overlay)
    assert named(docs, "RabbitmqCluster", "shequ-rabbitmq")["spec"]["replicas"] == 3
    assert named(docs, "PodDisruptionBudget", "shequ-rabbitmq")["spec"]["maxUnavailable"] == 1
    assert named(docs, "MongoDBCommunity", "shequ-mongodb")["spec"]["members"] == 3
    (vhost,) = of_kind(docs, "Vhost")
    assert vhost["spec"]["defaultQueueType"] == "quorum"
    minimum = {
        d["metadata"]["name"]: d["spec"]["minReplicaCount"] for d in of_kind(docs, "ScaledObject")
    }
    minimum |= {
        d["metadata"]["name"]: d["spec"]["minReplicas"]
        for d in of_kind(docs, "HorizontalPodAutoscaler")
    }
    for service in SERVICES:
        name = f"shequ-{service}"
        assert minimum.get(name, 0) >= 2, f"{name} is not autoscaled from 2 replicas in {overlay}"
        spec = named(docs, "Deployment", name)["spec"]
        # The autoscaler owns the count; an applied number would fight it.
        assert "replicas" not in spec, name
        assert spec["template"]["spec"]["topologySpreadConstraints"], name
        named(docs, "ServiceMonitor", name)


def test_the_keda_scalers_watch_each_services_own_handler_queues() -> None:
    for scaled in of_kind(rendered("prod"), "ScaledObject"):
        service = scaled["metadata"]["name"].removeprefix("shequ-")
        for trigger in scaled["spec"]["triggers"]:
            if trigger["type"] != "rabbitmq":
                continue
            pattern = re.compile(trigger["metadata"]["queueName"])
            assert pattern.match(f"evt-grid-incident.reported--{service}.on_incident_reported")
            other = "grid" if service != "grid" else "notify"
            assert not pattern.match(f"evt-grid-incident.reported--{other}.on_incident_reported")


def test_dev_runs_one_replica_of_everything() -> None:
    docs = rendered("dev")
    assert {d["spec"]["replicas"] for d in of_kind(docs, "Deployment")} == {1}
    assert named(docs, "RabbitmqCluster", "shequ-rabbitmq")["spec"]["replicas"] == 1
    assert named(docs, "MongoDBCommunity", "shequ-mongodb")["spec"]["members"] == 1
    assert not of_kind(docs, "ScaledObject") and not of_kind(docs, "HorizontalPodAutoscaler")


def images(docs: list[dict[str, Any]]) -> list[str]:
    found = []
    for _where, spec in pod_specs(docs):
        for container in spec.get("initContainers", []) + spec["containers"]:
            found.append(container["image"])
    found += [d["spec"]["image"] for d in of_kind(docs, "RabbitmqCluster") if "image" in d["spec"]]
    return found


@pytest.mark.parametrize("overlay", ("prod", "example-district"))
def test_no_moving_image_tags_in_production(overlay: str) -> None:
    for image in images(rendered(overlay)):
        name, _, tag = image.rpartition(":")
        assert name and "/" not in tag, f"{image} has no tag"
        assert tag not in ("latest", "dev", ""), f"{image} is not a released version"


def test_the_mongodb_users_each_reach_only_their_own_database() -> None:
    spec = named(rendered("prod"), "MongoDBCommunity", "shequ-mongodb")["spec"]
    users = {u["name"]: u for u in spec["users"]}
    for service in SERVICES:
        user = users[f"shequ-{service}"]
        assert user["roles"] == [{"name": "readWrite", "db": service}]
        assert user["connectionStringSecretName"] == f"shequ-mongodb-{service}"
    # The audit anchor job reads every service's database and writes none.
    assert users["shequ-auditor"]["roles"] == [{"name": "read", "db": s} for s in SERVICES]
    assert spec["additionalConnectionStringConfig"]["w"] == "majority"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_audit_anchors_are_kept_on_a_volume_only_their_job_mounts(overlay: str) -> None:
    docs = rendered(overlay)
    job = named(docs, "CronJob", "shequ-audit-anchor")["spec"]
    pod = job["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"][:3] == ["shequ", "audit", "anchor"]
    (mongo_uri,) = [e for e in container["env"] if e["name"] == "SHEQU_MONGO_URI"]
    assert mongo_uri["valueFrom"]["secretKeyRef"]["name"] == "shequ-mongodb-auditor"
    claim = named(docs, "PersistentVolumeClaim", "shequ-audit-anchors")["metadata"]["name"]
    mounting = [
        where
        for where, spec in pod_specs(docs)
        for volume in spec.get("volumes", [])
        if volume.get("persistentVolumeClaim", {}).get("claimName") == claim
    ]
    assert mounting == ["CronJob/shequ-audit-anchor"]
    assert job["concurrencyPolicy"] == "Forbid"


ACCOUNT_KINDS = ("User", "Permission", "TopicPermission")
SERVICE_USERS = tuple(f"shequ-{service}" for service in SERVICES)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_has_the_broker_account_its_code_derives(overlay: str) -> None:
    """broker-accounts.yaml is ``python -m shequ.accounts``'s output for today's services."""
    from shequ.accounts import k8s_resources
    from shequ.discovery import load_service

    expected = k8s_resources([load_service(name) for name in SERVICES])
    docs = rendered(overlay)

    def by_name(found: list[dict[str, Any]]) -> dict[tuple[str, str], Any]:
        return {
            (d["kind"], d["metadata"]["name"]): d["spec"]
            for d in found
            if d["kind"] in ACCOUNT_KINDS and d["metadata"]["name"].startswith(SERVICE_USERS)
        }

    assert by_name(docs) == by_name(expected), (
        "deploy/k8s/base/broker-accounts.yaml is stale: python -m shequ.accounts > it"
    )
    # Only the install job's user may do everything.
    for permission in of_kind(docs, "Permission"):
        if ".*" in permission["spec"]["permissions"].values():
            assert permission["metadata"]["name"] == "shequ-init", permission


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_connects_with_its_own_broker_credentials(overlay: str) -> None:
    docs = rendered(overlay)
    for service in SERVICES:
        spec = named(docs, "Deployment", f"shequ-{service}")["spec"]["template"]["spec"]
        for container, secret in [
            *((c, "shequ-rabbitmq-init") for c in spec.get("initContainers", [])),
            *((c, f"shequ-rabbitmq-{service}") for c in spec["containers"]),
        ]:
            refs = {
                env["valueFrom"]["secretKeyRef"]["name"]
                for env in container.get("env", [])
                if env["name"].startswith("SHEQU_RABBITMQ_") and "valueFrom" in env
            }
            assert refs == {secret}, (service, container["name"], refs)


def test_the_ingress_routes_the_url_layout_of_the_front_door() -> None:
    from shequ.frontdoor import ROUTES

    ingress = named(rendered("prod"), "Ingress", "shequ")
    paths = {
        p["path"]: p["backend"]["service"]["name"]
        for p in ingress["spec"]["rules"][0]["http"]["paths"]
    }
    expected = {f"/api/v1/{s}/": f"shequ-{s}" for s in SERVICES}
    expected |= {prefix: f"shequ-{service}" for prefix, service in ROUTES.items()}
    assert paths == expected


SECRET_ENV = re.compile(r"(SECRET|PASSWORD|TOKEN|KEYS?|URI)$")
CREDENTIAL_REFS = re.compile(r"(\$\([A-Z_]+\))?(:\$\([A-Z_]+\))?")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_secret_values_in_the_manifests(overlay: str) -> None:
    docs = rendered(overlay)
    assert not of_kind(docs, "Secret"), "Secrets are created at install, not committed"
    for _where, spec in pod_specs(docs):
        for container in spec.get("initContainers", []) + spec["containers"]:
            for env in container.get("env", []):
                if "value" not in env:
                    continue
                if SECRET_ENV.search(env["name"]):
                    # A URI may be composed of other variables; its user and
                    # password are references, never literal values.
                    value = env["value"]
                    userinfo = value.split("://", 1)[-1].split("@", 1)[0] if "@" in value else value
                    assert CREDENTIAL_REFS.fullmatch(userinfo), env
    for config in of_kind(docs, "ConfigMap"):
        for key in config.get("data", {}):
            assert not SECRET_ENV.search(key) or key.endswith("_ISSUER"), (config, key)


def secret_references(docs: list[dict[str, Any]]) -> dict[str, bool]:
    """Every Secret the rendered manifests read, by name -> whether it is optional."""
    found: dict[str, bool] = {}
    for _where, spec in pod_specs(docs):
        for container in spec.get("initContainers", []) + spec["containers"]:
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    found[ref["name"]] = found.get(ref["name"], True) and ref.get("optional", False)
    for doc in docs:
        spec = doc.get("spec", {})
        for user in spec.get("users", []) if doc["kind"] == "MongoDBCommunity" else []:
            found[user["passwordSecretRef"]["name"]] = False
        if doc["kind"] == "User":
            found[spec["importCredentialsSecret"]["name"]] = False
        if doc["kind"] == "TriggerAuthentication":
            for ref in spec["secretTargetRef"]:
                found[ref["name"]] = False
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_required_secret_is_created_by_the_install_script_or_the_operator(
    overlay: str,
) -> None:
    docs = rendered(overlay)
    script = (K8S / "create-secrets.sh").read_text(encoding="utf-8")
    created = set(re.findall(r"^create (\S+)", script, re.MULTILINE))
    created |= {f"shequ-mongodb-{user}-password" for user in re.findall(
        r"for user in ([a-z ]+); do", script)[0].split()}  # fmt: skip
    created |= {f"shequ-rabbitmq-{service}" for service in re.findall(
        r"for service in ([a-z ]+); do", script)[0].split()}  # fmt: skip
    by_operator = {
        user["connectionStringSecretName"]
        for doc in of_kind(docs, "MongoDBCommunity")
        for user in doc["spec"]["users"]
    }
    for name, optional in secret_references(docs).items():
        assert optional or name in created | by_operator, f"nothing creates Secret {name}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_sealing_personal_data_reads_its_keys_from_a_required_secret(
    overlay: str,
) -> None:
    from shequ.stack import SEALING_SERVICES

    docs = rendered(overlay)
    for service in SEALING_SERVICES:
        (deployment,) = [
            d for d in of_kind(docs, "Deployment") if d["metadata"]["name"] == f"shequ-{service}"
        ]
        (container,) = [
            c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == service
        ]
        env = {e["name"]: e for e in container.get("env", [])}
        for name in (f"SHEQU_{service.upper()}_KEYS", f"SHEQU_{service.upper()}_ACTIVE_KEY"):
            ref = env[name]["valueFrom"]["secretKeyRef"]
            assert not ref.get("optional", False), (service, name)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_reads_the_bureau_api_keys_from_the_one_required_secret(
    overlay: str,
) -> None:
    """Every service checks bureau clients' keys itself (``shequ.apikeys``), so each needs them."""
    docs = rendered(overlay)
    for service in SERVICES:
        spec = named(docs, "Deployment", f"shequ-{service}")["spec"]["template"]["spec"]
        (container,) = [c for c in spec["containers"] if c["name"] == service]
        env = {e["name"]: e for e in container.get("env", [])}
        ref = env["SHEQU_API_KEYS"]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "shequ-bureau-api-keys" and ref["key"] == "api-keys", service
        assert not ref.get("optional", False), service
