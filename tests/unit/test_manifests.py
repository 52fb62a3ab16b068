"""The deploy manifests parse and carry what operators rely on: probes, resources, secrets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.brokeraccess import USERS

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
STAGES = ("fetcher", "binder", "assigner", "notifier")
SECRET_KEYS = {"MAILINTAKE_AMQP_URL": "amqp-url", "MAILINTAKE_MONGO_URL": "mongo-url"}
FERNET = {"MAILINTAKE_SECRET_KEY": "secret-key"}
DECRYPTS = {"fetcher", "notifier"}  # mailbox passwords; webhook signing secrets


def own_keys(stage: str) -> dict[str, str]:
    """The secret keys a stage's process gets: its URLs, and the Fernet key if it decrypts."""
    return SECRET_KEYS | (FERNET if stage in DECRYPTS else {})


def k8s_documents() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def of_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in k8s_documents() if d.get("kind") == kind}


def test_every_stage_has_a_deployment() -> None:
    assert set(of_kind("Deployment")) == {f"mailintake-{s}" for s in (*STAGES, "api")}


def test_the_api_is_served_probed_on_its_port_and_scaled_on_its_request_rate() -> None:
    spec = of_kind("Deployment")["mailintake-api"]["spec"]["template"]["spec"]
    [container] = spec["containers"]
    assert container["args"] == ["api"]
    env = {e["name"]: e for e in container["env"]}
    assert env["MAILINTAKE_API_ADDR"]["value"] == "0.0.0.0:8080"
    api_keys = (
        SECRET_KEYS | FERNET | {"MAILINTAKE_RABBITMQ_MANAGEMENT_URL": "rabbitmq-management-url"}
    )
    secret = of_kind("Secret")["mailintake-api"]["stringData"]
    for name, key in api_keys.items():
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "mailintake-api", "key": key}
        assert key in secret
    assert secret["amqp-url"].startswith("amqp://mailintake-operator:")
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["ports"] == [{"name": "http", "containerPort": 8080}]
    service = of_kind("Service")["mailintake-api"]["spec"]
    assert service["ports"][0]["targetPort"] == "http"
    scaled = of_kind("ScaledObject")["mailintake-api"]["spec"]
    assert scaled["scaleTargetRef"]["name"] == "mailintake-api" and scaled["minReplicaCount"] >= 2
    [rate] = [t for t in scaled["triggers"] if t["type"] == "prometheus"]
    assert "mailintake_api_requests_total" in rate["metadata"]["query"]


@pytest.mark.parametrize("stage", STAGES)
def test_each_deployment_has_probes_resources_secrets_and_a_long_grace(stage: str) -> None:
    spec = of_kind("Deployment")[f"mailintake-{stage}"]["spec"]["template"]["spec"]
    assert spec["terminationGracePeriodSeconds"] >= 60
    [container] = spec["containers"]
    assert container["args"] == [stage]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind])
    plain = {e["name"] for e in container["env"] if "value" in e}
    assert not plain & {*SECRET_KEYS, *FERNET}  # no URL or key in plain text


def secret_refs(container: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in container["env"]
        if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]
    }


def deployment_container(stage: str) -> dict[str, Any]:
    spec = of_kind("Deployment")[f"mailintake-{stage}"]["spec"]["template"]["spec"]
    [container] = spec["containers"]
    return dict(container)


@pytest.mark.parametrize("stage", STAGES)
def test_each_deployment_gets_only_its_own_secret_and_keys(stage: str) -> None:
    refs = secret_refs(deployment_container(stage))
    own = {"name": f"mailintake-{stage}"}
    assert refs == {name: own | {"key": key} for name, key in own_keys(stage).items()}
    secret = of_kind("Secret")[f"mailintake-{stage}"]["stringData"]
    assert set(secret) == set(own_keys(stage).values())  # nothing in it the stage does not use
    assert secret["amqp-url"].startswith(f"amqp://mailintake-{stage}:")  # its own broker user


@pytest.mark.parametrize("stage", sorted(set(STAGES) - DECRYPTS))
def test_a_pod_that_decrypts_nothing_has_no_fernet_key(stage: str) -> None:
    container = deployment_container(stage)
    assert "MAILINTAKE_SECRET_KEY" not in {e["name"] for e in container["env"]}
    assert "secret-key" not in of_kind("Secret")[f"mailintake-{stage}"]["stringData"]


def test_no_stage_gets_the_management_api_and_keda_reads_it_as_the_monitor() -> None:
    for stage in STAGES:
        assert "MAILINTAKE_RABBITMQ_MANAGEMENT_URL" not in secret_refs(deployment_container(stage))
    [ref] = of_kind("TriggerAuthentication")["mailintake-rabbitmq"]["spec"]["secretTargetRef"]
    url = of_kind("Secret")[ref["name"]]["stringData"][ref["key"]]
    assert url.startswith("http://mailintake-monitor:")


def test_the_set_up_job_creates_every_broker_user_before_the_stages() -> None:
    job = of_kind("Job")["mailintake-broker-setup"]["spec"]["template"]["spec"]
    [container] = job["containers"]
    assert container["args"] == ["shared.brokeraccess", "apply"]
    [source] = container["envFrom"]
    setup = of_kind("Secret")[source["secretRef"]["name"]]["stringData"]
    roles = {u.role.upper() for u in USERS}
    assert {f"MAILINTAKE_BROKER_PASSWORD_{r}" for r in roles} <= set(setup)
    assert {"MAILINTAKE_RABBITMQ_ADMIN_URL", "MAILINTAKE_AMQP_URL_OPERATOR"} <= set(setup)


def test_the_store_urls_are_the_app_user_with_credentials() -> None:
    for name, secret in of_kind("Secret").items():
        url = secret["stringData"].get("mongo-url")
        if url is not None:
            assert url.startswith("mongodb://mailintake:"), name
            assert "authSource=" in url, name


@pytest.mark.parametrize("stage", ["binder", "assigner", "notifier"])
def test_keda_scales_the_consumers_on_queue_length_from_the_management_api(stage: str) -> None:
    scaled = of_kind("ScaledObject")[f"mailintake-{stage}"]["spec"]
    assert scaled["scaleTargetRef"]["name"] == f"mailintake-{stage}"
    [trigger] = scaled["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "rabbitmq" and meta["protocol"] == "http"  # unacked counts too
    assert meta["mode"] == "QueueLength" and meta["queueName"] == f"mailintake.{stage}.in"
    auth = of_kind("TriggerAuthentication")[trigger["authenticationRef"]["name"]]
    assert auth["spec"]["secretTargetRef"][0]["key"] == "rabbitmq-management-url"


def test_the_fetcher_is_not_scaled_on_queues() -> None:
    assert "mailintake-fetcher" not in of_kind("ScaledObject")


def test_kustomization_lists_every_manifest() -> None:
    listed = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())["resources"]
    on_disk = {p.name for p in (DEPLOY / "k8s").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(listed) == on_disk


def compose_services() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    return services


def test_compose_runs_the_broker_the_store_and_scalable_stages() -> None:
    services = compose_services()
    assert "management" in services["rabbitmq"]["image"]
    assert services["mongodb"]["image"].startswith("mongo")
    for stage in STAGES:
        service = services[stage]
        assert service["command"] == [stage]
        assert service["healthcheck"]["test"][0] == "CMD"
        assert set(SECRET_KEYS) <= set(service["environment"])
    for stage in ("binder", "assigner", "notifier"):
        assert services[stage]["deploy"]["replicas"] >= 2
    api = services["api"]
    assert api["command"] == ["api"] and api["ports"] == ["127.0.0.1:8080:8080"]
    assert api["environment"]["MAILINTAKE_API_ADDR"] == "0.0.0.0:8080"
    assert set(SECRET_KEYS) <= set(api["environment"])


@pytest.mark.parametrize("stage", STAGES)
def test_compose_gives_each_stage_its_own_broker_user_and_the_key_only_where_used(
    stage: str,
) -> None:
    service = compose_services()[stage]
    env = service["environment"]
    assert env["MAILINTAKE_AMQP_URL"].startswith(f"amqp://mailintake-{stage}:")
    assert ("MAILINTAKE_SECRET_KEY" in env) == (stage in DECRYPTS)
    assert "MAILINTAKE_RABBITMQ_MANAGEMENT_URL" not in env
    assert env["MAILINTAKE_MONGO_URL"].startswith("mongodb://mailintake:")
    assert service["depends_on"]["broker-setup"] == {"condition": "service_completed_successfully"}


def test_compose_store_has_a_root_user_and_creates_the_app_user() -> None:
    services = compose_services()
    mongo = services["mongodb"]
    assert {"MONGO_INITDB_ROOT_USERNAME", "MONGO_INITDB_ROOT_PASSWORD"} <= set(mongo["environment"])
    [init] = [v for v in mongo["volumes"] if "docker-entrypoint-initdb.d" in v]
    assert (DEPLOY / init.split(":")[0]).resolve().is_file()
    assert services["rabbitmq"]["environment"]["RABBITMQ_DEFAULT_USER"] != "guest"
    setup = services["broker-setup"]
    assert setup["command"] == ["shared.brokeraccess", "apply"]
    roles = {u.role.upper() for u in USERS}
    assert {f"MAILINTAKE_BROKER_PASSWORD_{r}" for r in roles} <= set(setup["environment"])


def test_one_image_runs_any_stage() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["python", "-m"]' in dockerfile
    assert "USER 10001" in dockerfile


def test_every_secret_a_pod_reads_is_defined_with_that_key() -> None:
    secrets = {name: set(d.get("stringData", {})) for name, d in of_kind("Secret").items()}
    refs = []
    for kind in ("Deployment", "Job"):
        for name, doc in of_kind(kind).items():
            for container in doc["spec"]["template"]["spec"]["containers"]:
                for env in container.get("env", []):
                    ref = env.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        refs.append((name, ref["name"], ref["key"]))
                for source in container.get("envFrom", []):
                    if "secretRef" in source:
                        refs.append((name, source["secretRef"]["name"], None))
    assert refs
    for pod, secret, key in refs:
        assert secret in secrets, f"{pod} reads Secret {secret}, which is not defined"
        assert key is None or key in secrets[secret], f"{pod} reads {secret}/{key}: no such key"
