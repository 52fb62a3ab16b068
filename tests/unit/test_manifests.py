"""The deploy manifests parse and carry what operators rely on: probes, resources, secrets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
STAGES = ("fetcher", "binder", "assigner", "notifier")
SECRET_KEYS = {
    "MAILINTAKE_AMQP_URL": "amqp-url",
    "MAILINTAKE_MONGO_URL": "mongo-url",
    "MAILINTAKE_SECRET_KEY": "secret-key",
}


def k8s_documents() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def of_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in k8s_documents() if d.get("kind") == kind}


def test_every_stage_has_a_deployment() -> None:
    assert set(of_kind("Deployment")) == {f"mailintake-{s}" for s in (*STAGES, "api")}


def test_the_api_is_served_probed_on_its_port_and_scaled_on_cpu() -> None:
    spec = of_kind("Deployment")["mailintake-api"]["spec"]["template"]["spec"]
    [container] = spec["containers"]
    assert container["args"] == ["api"]
    env = {e["name"]: e for e in container["env"]}
    assert env["MAILINTAKE_API_ADDR"]["value"] == "0.0.0.0:8080"
    for name, key in SECRET_KEYS.items():
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "mailintake-secrets", "key": key}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["ports"] == [{"name": "http", "containerPort": 8080}]
    service = of_kind("Service")["mailintake-api"]["spec"]
    assert service["ports"][0]["targetPort"] == "http"
    hpa = of_kind("HorizontalPodAutoscaler")["mailintake-api"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == "mailintake-api" and hpa["minReplicas"] >= 2


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
    refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in container["env"]
        if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]
    }
    for name, key in SECRET_KEYS.items():
        assert refs[name] == {"name": "mailintake-secrets", "key": key}
    plain = {e["name"] for e in container["env"] if "value" in e}
    assert not plain & set(SECRET_KEYS)  # no URL or key in plain text


def test_the_secret_holds_every_key_the_deployments_use() -> None:
    secret = of_kind("Secret")["mailintake-secrets"]
    assert {*SECRET_KEYS.values(), "rabbitmq-management-url"} <= set(secret["stringData"])


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


def test_compose_runs_the_broker_the_store_and_scalable_stages() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
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


def test_one_image_runs_any_stage() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["python", "-m"]' in dockerfile
    assert "USER 10001" in dockerfile
