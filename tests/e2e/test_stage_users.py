"""The pipeline runs with each stage as its own broker user; the operator declares the topology."""

from __future__ import annotations

import json
import os
import urllib.request
from base64 import b64encode
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from shared.messaging import Broker
from shared.settings import Settings
from shared.store import Store
from shared.topology import Topology
from tests.conftest import Mailbox, make_mail
from tests.e2e.test_skeleton import TENANT, add_account, seed
from tests.integration.test_broker_users import lib_sh, role_url
from tests.processes import StageProcesses, wait_until

pytestmark = pytest.mark.e2e

STAGES = ("fetcher", "binder", "assigner", "notifier")


@pytest.fixture
def operator_topology(settings: Settings) -> Iterator[Topology]:
    """The test namespace as a deployment sets it up: the topic rules granted, the topology
    declared by the operator's user (the stages' users may not declare)."""
    topology = Topology(settings.namespace, settings.delivery_limit)
    lib_sh("rabbitmq_topic_rules", topology.namespace)
    operator = Broker(role_url("operator"), topology)
    operator.declare()
    operator.close()
    yield topology
    lib_sh("rabbitmq_topic_rules", topology.namespace, "clear")


def connection_users() -> set[str]:
    """The users of the connections RabbitMQ has open now (management API)."""
    url = urlsplit(os.environ["MAILINTAKE_RABBITMQ_MANAGEMENT_URL"])
    request = urllib.request.Request(f"http://{url.hostname}:{url.port}/api/connections")
    token = b64encode(f"{url.username}:{url.password}".encode()).decode()
    request.add_header("authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return {c["user"] for c in json.load(response)}


def test_mail_flows_with_each_stage_as_its_own_broker_user(
    tmp_path: Path,
    cli: object,
    mailbox: Mailbox,
    store: Store,
    stages: StageProcesses,
    operator_topology: Topology,
) -> None:
    seed(tmp_path, cli)
    add_account(cli, mailbox)
    for stage in STAGES:
        stages.stage_env[stage] = {f"MAILINTAKE_AMQP_URL_{stage.upper()}": role_url(stage)}
    stages.start(*STAGES)
    mailbox.append(make_mail("Ann <ann@example.com>", "Where is my parcel?"))

    wait_until(
        lambda: store.notifications.find_one({"tenant_id": TENANT, "user_id": "m-ann"}),
        timeout=60,
        what="the manager's notification",
        on_timeout=stages.logs,
    )
    [email] = list(store.emails.find({"tenant_id": TENANT}))
    assert email["status"] == "bound" and email["customer_id"] == "cust-ann"
    wait_until(
        lambda: {f"mailintake-{s}" for s in STAGES} <= connection_users(),
        timeout=30,
        what="every stage connected as its own user",
    )
    assert all(stages.alive().values())
    assert stages.stop_all() == dict.fromkeys(STAGES, 0)
