"""The whole OpenAPI document, run property-based with Schemathesis (pinned: 4.32.5, whose
Python API is `schemathesis.openapi.from_asgi`): no answer is a 5xx, and every answer matches
the document (status, content type, body, headers).

The app runs on a database and broker namespace of this module's own, on the real services. A
few examples per operation keep the suite fast; tenant routes get a tenant's token, the
operators' an operator's.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from api.settings import ApiSettings
from ops.tokens import create_token
from shared.logging import configure_logging
from shared.messaging import Broker
from shared.store import Store
from shared.topology import Topology
from tests.apiclient import seed_tenant
from tests.conftest import delete_topology
from tests.services import load_local_env

pytestmark = pytest.mark.integration
load_local_env()
NAMESPACE = f"t{uuid.uuid4().hex[:10]}"
_base = ApiSettings()
SETTINGS = ApiSettings(
    mongo_url=_base.mongo_url.get_secret_value().split("?")[0].rsplit("/", 1)[0] + "/" + NAMESPACE,
    namespace=NAMESPACE,
    api_max_wait_seconds=0.2,
    api_poll_seconds=0.05,
)
STORE = Store(SETTINGS.mongo_url.get_secret_value(), SETTINGS.mongo_database)
schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(SETTINGS, STORE))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
HEADERS: dict[str, dict[str, str]] = {}


@pytest.fixture(scope="module", autouse=True)
def _services() -> Iterator[None]:
    """The module's database (with a tenant's data and tokens) and queues; removed after."""
    configure_logging(SETTINGS.log_format, SETTINGS.log_level)  # to this run's stderr
    seed_tenant(STORE, "t-a")
    now = datetime.now(UTC)
    for who, tenant in (("tenant", "t-a"), ("operator", None)):
        token = create_token(STORE, tenant_id=tenant, name="schemathesis", now=now)
        HEADERS[who] = {"Authorization": f"Bearer {token}"}
    broker = Broker(SETTINGS.amqp_url.get_secret_value(), Topology(NAMESPACE, 3))
    broker.connect()
    broker.declare()
    yield
    delete_topology(broker)
    broker.close()
    STORE.client.drop_database(SETTINGS.mongo_database)
    STORE.close()


@schema.parametrize()
@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_every_operation_answers_as_documented(case: schemathesis.Case) -> None:
    who = "operator" if case.path.startswith("/operator/") else "tenant"
    case.call_and_validate(headers=HEADERS[who], checks=CHECKS)
