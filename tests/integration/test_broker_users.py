"""Each stage's RabbitMQ user, as deploy/local creates it, may do what its stage does, no more.

The users and their rules are the running broker's (deploy/local/lib.sh `rabbitmq_users`, from
shared/brokeraccess.py); their URLs come from env.sh (MAILINTAKE_LOCAL_AMQP_URL_<ROLE>). The
rules fit any namespace, so each test holds them to its own.
"""

from __future__ import annotations

import base64
import os
import shlex
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import pytest

from shared.brokeraccess import apply
from shared.contracts import Event
from shared.errors import BrokerUnavailableError, PermanentError, TransientError
from shared.messaging import Broker
from shared.settings import Settings
from shared.topology import Topology
from shared.wire import H_ATTEMPT, H_ERROR, Outgoing, encode_event
from shared.worker import RetryPolicy, StageWorker
from tests.integration.test_broker import bound, drain
from tests.services import REPO, missing

pytestmark = pytest.mark.integration

LIB_SH = REPO / "deploy" / "local" / "lib.sh"


def role_url(role: str) -> str:
    name = f"MAILINTAKE_LOCAL_AMQP_URL_{role.upper()}"
    url = os.environ.get(name)
    if not url:
        missing("RabbitMQ's mailintake users", f"{name} is not set: run deploy/local/up.sh")
    assert url is not None
    return url


def lib_sh(*command: str) -> None:
    """Run a function of deploy/local/lib.sh, as up.sh does."""
    script = f'set -euo pipefail; . "$1"; {shlex.join(command)}'
    subprocess.run(["bash", "-c", script, "-", str(LIB_SH)], check=True, timeout=120)


@pytest.fixture(scope="module")
def shared_namespace(amqp_url: str) -> Iterator[Topology]:
    """One namespace for the module: its topology (declared as an administrator) and its topic
    rules, granted as deploy/local grants them (RabbitMQ keys them by exchange name)."""
    topology = Topology(f"t{uuid.uuid4().hex[:10]}", delivery_limit=3)
    admin = Broker(amqp_url, topology)
    admin.connect()
    admin.declare()
    lib_sh("rabbitmq_topic_rules", topology.namespace)
    yield topology
    lib_sh("rabbitmq_topic_rules", topology.namespace, "clear")
    drop_topology(admin)


def drop_topology(admin: Broker) -> None:
    """Delete the queues and exchanges of the administrator's namespace, and close."""
    admin.connect()
    for queue in admin.topology.all_queues():
        admin.channel.queue_delete(queue)
    admin.channel.exchange_delete(admin.topology.exchange)
    admin.channel.exchange_delete(admin.topology.failures_exchange)
    admin.close()


@pytest.fixture
def broker(amqp_url: str, shared_namespace: Topology) -> Iterator[Broker]:
    """An administrator's Broker on the module's namespace, its queues empty."""
    admin = Broker(amqp_url, shared_namespace)
    admin.connect()
    for queue in shared_namespace.all_queues():
        admin.purge(queue)
    yield admin
    admin.close()


@pytest.fixture
def as_role(broker: Broker) -> Iterator[Callable[[str], Broker]]:
    """A connected Broker as a role's own user, in the namespace of `broker`."""
    opened: list[Broker] = []

    def connect(role: str) -> Broker:
        own = Broker(role_url(role), broker.topology)
        own.connect()
        opened.append(own)
        return own

    yield connect
    for own in opened:
        own.close()


def refusal(action: Callable[[], object]) -> str | None:
    """None when `action` is allowed, else RabbitMQ's refusal (an ACCESS_REFUSED only)."""
    try:
        action()
    except BrokerUnavailableError as exc:
        refused = str(exc)
    else:
        return None
    assert "403" in refused and "ACCESS_REFUSED" in refused, refused
    return refused


def publish(broker: Broker, routing_key: str, exchange: str | None = None) -> Callable[[], None]:
    return lambda: broker.publish([Outgoing(routing_key, b"{}", exchange=exchange)])


def take(broker: Broker, stage_queue: str) -> Callable[[], object]:
    topology = broker.topology
    queue = topology.resolve(stage_queue)
    return lambda: broker.get(queue)


PUBLISHES = {  # role -> routing keys its stage publishes on the events exchange
    "fetcher": ["mail.fetched.acc-1", "account.failed", "account.warning"],
    "binder": ["mail.bound", "mail.routed", "mail.skipped"],
    "assigner": ["mail.routed"],
    "notifier": ["notification.created"],
}
REFUSED_KEYS = {
    "fetcher": ["mail.bound", "mail.routed", "notification.created"],
    "binder": ["mail.fetched.x", "account.failed", "notification.created"],
    "assigner": ["mail.bound", "mail.skipped", "mail.fetched.x"],
    "notifier": ["mail.bound", "mail.routed", "account.failed"],
    "operator": ["mail.fetched.x", "mail.bound"],
}
CONSUMES = {
    "binder": ["binder.in"],
    "assigner": ["assigner.in"],
    "notifier": ["notifier.in", "webhook.in"],
    "operator": ["binder.in.dlq", "notifier.in.dlq", "webhook.in.dlq", "assigner.in"],
}
REFUSED_QUEUES = {
    "fetcher": ["binder.in", "notifier.in"],
    "binder": ["notifier.in", "assigner.in", "binder.in.dlq"],
    "assigner": ["binder.in", "notifier.in", "assigner.in.dlq"],
    "notifier": ["binder.in", "assigner.in", "notifier.in.dlq"],
}


@pytest.mark.parametrize(("role", "key"), [(r, k) for r, ks in PUBLISHES.items() for k in ks])
def test_a_stage_publishes_its_own_routing_keys(
    broker: Broker, as_role: Callable[[str], Broker], role: str, key: str
) -> None:
    assert refusal(publish(as_role(role), key)) is None
    queues = broker.topology.work_queues()
    assert sum(broker.queue_counts(q)[0] for q in queues) == 1  # routed to its stage


@pytest.mark.parametrize(("role", "key"), [(r, k) for r, ks in REFUSED_KEYS.items() for k in ks])
def test_a_stage_may_not_publish_another_stages_routing_keys(
    broker: Broker, as_role: Callable[[str], Broker], role: str, key: str
) -> None:
    refused = refusal(publish(as_role(role), key))
    assert refused is not None and f"'{key}'" in refused
    for stage in ("binder", "assigner", "notifier", "webhook"):
        assert broker.queue_counts(broker.topology.work_queue(stage))[0] == 0


@pytest.mark.parametrize(("role", "queue"), [(r, q) for r, qs in CONSUMES.items() for q in qs])
def test_a_stage_takes_from_its_own_queues(
    broker: Broker, as_role: Callable[[str], Broker], role: str, queue: str
) -> None:
    name = broker.topology.resolve(queue)
    broker.publish([Outgoing(name, b"{}", exchange="")])
    got = as_role(role).get(name)
    assert got is not None and got[0].body == b"{}"


@pytest.mark.parametrize(
    ("role", "queue"), [(r, q) for r, qs in REFUSED_QUEUES.items() for q in qs]
)
def test_a_stage_may_not_take_from_another_stages_queue(
    broker: Broker, as_role: Callable[[str], Broker], role: str, queue: str
) -> None:
    name = broker.topology.resolve(queue)
    broker.publish([Outgoing(name, b"{}", exchange="")])
    refused = refusal(take(as_role(role), queue))
    assert refused is not None and name in refused
    assert broker.queue_counts(name)[0] == 1  # still there


FAILURES = {  # role -> the queues whose failures it sends (its own)
    "binder": ["binder"],
    "assigner": ["assigner"],
    "notifier": ["notifier", "webhook"],
}
REFUSED_FAILURES = {  # role -> failure queues of other stages
    "binder": ["notifier.in.dlq", "notifier.in.retry", "assigner.in.dlq"],
    "assigner": ["binder.in.dlq", "notifier.in.retry"],
    "notifier": ["binder.in.retry", "assigner.in.dlq"],
    "fetcher": ["binder.in.dlq", "notifier.in.retry"],
    "operator": ["binder.in.dlq"],
}
DEFAULT_EXCHANGE_TARGETS = {  # role -> queues it tries to reach by name
    "binder": ["notifier.in", "binder.in.dlq", "binder.in.retry"],
    "assigner": ["notifier.in", "assigner.in.dlq"],
    "notifier": ["binder.in", "notifier.in.retry", "webhook.in.dlq"],
    "fetcher": ["binder.in"],
}


@pytest.mark.parametrize(("role", "stage"), [(r, s) for r, ss in FAILURES.items() for s in ss])
def test_a_stage_sends_its_failures_to_its_own_retry_and_dead_letter_queues(
    broker: Broker, as_role: Callable[[str], Broker], role: str, stage: str
) -> None:
    """Through the failures exchange, each landing in the queue its routing key names."""
    own, failures = as_role(role), broker.topology.failures_exchange
    for queue in broker.topology.failure_queues(stage):
        assert refusal(publish(own, queue, exchange=failures)) is None
        assert broker.queue_counts(queue)[0] == 1
    others = [
        q for q in broker.topology.all_queues() if q not in broker.topology.failure_queues(stage)
    ]
    assert sum(broker.queue_counts(q)[0] for q in others) == 0


@pytest.mark.parametrize(
    ("role", "queue"), [(r, q) for r, qs in REFUSED_FAILURES.items() for q in qs]
)
def test_a_stage_may_not_send_failures_to_another_stages_queues(
    broker: Broker, as_role: Callable[[str], Broker], role: str, queue: str
) -> None:
    """The failures exchange's topic rules name each stage's own queues only."""
    name = broker.topology.resolve(queue)
    own = as_role(role)
    refused = refusal(publish(own, name, exchange=broker.topology.failures_exchange))
    assert refused is not None and broker.topology.failures_exchange in refused
    if role in FAILURES:  # it may write to the exchange: its topic rules refuse the key
        assert f"topic '{name}'" in refused
    assert broker.queue_counts(name)[0] == 0


@pytest.mark.parametrize(
    ("role", "queue"), [(r, q) for r, qs in DEFAULT_EXCHANGE_TARGETS.items() for q in qs]
)
def test_a_stage_may_not_address_a_queue_through_the_default_exchange(
    broker: Broker, as_role: Callable[[str], Broker], role: str, queue: str
) -> None:
    """Not another stage's queue, and not its own failure queues either: the default exchange
    reaches every queue by name, so no stage may write to it."""
    name = broker.topology.resolve(queue)
    refused = refusal(publish(as_role(role), name, exchange=""))
    assert refused is not None and "amq.default" in refused
    assert broker.queue_counts(name)[0] == 0


def test_the_operator_replays_through_the_default_exchange(
    broker: Broker, as_role: Callable[[str], Broker]
) -> None:
    queue = broker.topology.work_queue("binder")
    assert refusal(publish(as_role("operator"), queue, exchange="")) is None
    assert broker.queue_counts(queue)[0] == 1


@pytest.mark.parametrize("role", ["fetcher", "binder", "assigner", "notifier"])
def test_a_stage_may_not_declare_but_finds_the_declared_topology(
    broker: Broker, as_role: Callable[[str], Broker], role: str
) -> None:
    own = as_role(role)
    own.declare()  # refused, then checked: all there
    with pytest.raises(Exception, match="ACCESS_REFUSED"):
        own.channel.exchange_declare(f"{own.topology.namespace}x.events", exchange_type="topic")


def test_a_stage_user_cannot_delete_a_queue(
    broker: Broker, as_role: Callable[[str], Broker]
) -> None:
    binder = as_role("binder")
    queue = broker.topology.work_queue("binder")
    with pytest.raises(Exception, match="ACCESS_REFUSED"):
        binder.channel.queue_delete(queue)
    assert broker.queue_exists(queue)


def own_broker(role: str, settings: Settings) -> Broker:
    broker = Broker(role_url(role), Topology(settings.namespace, settings.delivery_limit))
    broker.connect()
    return broker


def test_a_stage_user_waits_for_a_topology_nobody_declared(settings: Settings) -> None:
    binder = own_broker("binder", settings)
    try:
        with pytest.raises(BrokerUnavailableError, match="is not declared, and this user may"):
            binder.declare()
    finally:
        binder.close()


def test_the_operator_declares_the_whole_topology(settings: Settings) -> None:
    operator = own_broker("operator", settings)
    try:
        operator.declare()
        for queue in operator.topology.all_queues():
            assert operator.queue_exists(queue)
    finally:
        operator.close()


def test_the_set_up_job_grants_the_same_rules_through_the_management_api(broker: Broker) -> None:
    """What compose and k8s run (`python -m shared.brokeraccess apply`), on test users."""
    admin = os.environ.get("MAILINTAKE_RABBITMQ_MANAGEMENT_URL")
    if not admin:
        missing("RabbitMQ's management API", "MAILINTAKE_RABBITMQ_MANAGEMENT_URL is not set")
    assert admin is not None
    prefix, password = f"{broker.topology.namespace}-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    names = apply(admin, {"binder": password}, namespace=broker.topology.namespace, prefix=prefix)
    try:
        parts = urlsplit(role_url("binder"))
        url = parts._replace(netloc=f"{names[0]}:{password}@{parts.hostname}:{parts.port}")
        binder = Broker(url.geturl(), broker.topology)
        assert refusal(publish(binder, "mail.bound")) is None
        assert refusal(publish(binder, "mail.fetched.x")) is not None
        assert refusal(take(binder, "notifier.in")) is not None
        t = broker.topology
        retry, _ = t.failure_queues("binder")
        assert refusal(publish(binder, retry, exchange=t.failures_exchange)) is None
        _, notifier_dlq = t.failure_queues("notifier")
        assert refusal(publish(binder, notifier_dlq, exchange=t.failures_exchange)) is not None
        assert refusal(publish(binder, t.work_queue("notifier"), exchange="")) is not None
        binder.close()
    finally:
        for name in names:
            _delete_user(admin, name)


def test_the_set_up_job_holds_its_users_to_their_own_namespace(
    broker: Broker, amqp_url: str
) -> None:
    """Another namespace in the same virtual host, whose exchanges carry no topic rules for
    these users, is refused to them as a whole."""
    admin = os.environ.get("MAILINTAKE_RABBITMQ_MANAGEMENT_URL")
    if not admin:
        missing("RabbitMQ's management API", "MAILINTAKE_RABBITMQ_MANAGEMENT_URL is not set")
    assert admin is not None
    other = Topology(f"t{uuid.uuid4().hex[:10]}", delivery_limit=3)
    declaring = Broker(amqp_url, other)
    declaring.connect()
    declaring.declare()
    prefix, password = f"{broker.topology.namespace}-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    roles = {"binder": password, "fetcher": password}
    names = apply(admin, roles, namespace=broker.topology.namespace, prefix=prefix)
    try:
        parts = urlsplit(role_url("binder"))
        own = {}
        for role, name in zip(roles, names, strict=True):
            url = parts._replace(netloc=f"{name}:{password}@{parts.hostname}:{parts.port}")
            own[role] = url.geturl()
        fetcher = Broker(own["fetcher"], broker.topology)
        assert refusal(publish(fetcher, "mail.fetched.acc-1")) is None  # its own namespace
        fetcher.close()
        elsewhere = Broker(own["fetcher"], other)
        assert refusal(publish(elsewhere, "mail.fetched.acc-1")) is not None
        elsewhere.close()
        binder = Broker(own["binder"], other)
        assert refusal(take(binder, "binder.in")) is not None
        retry, _ = other.failure_queues("binder")
        assert refusal(publish(binder, retry, exchange=other.failures_exchange)) is not None
        binder.close()
    finally:
        for name in names:
            _delete_user(admin, name)
        drop_topology(declaring)


def _delete_user(management_url: str, name: str) -> None:
    parts = urlsplit(management_url)
    request = urllib.request.Request(
        f"http://{parts.hostname}:{parts.port}/api/users/{name}", method="DELETE"
    )
    token = base64.b64encode(f"{parts.username}:{parts.password}".encode()).decode()
    request.add_header("authorization", f"Basic {token}")
    urllib.request.urlopen(request, timeout=10).close()


def test_an_upgraded_deployment_gets_the_failures_exchange_and_its_retries_still_flow_back(
    amqp_url: str,
) -> None:
    """A topology declared before the failures exchange existed: the operator's declare adds
    it and its bindings, and a message already waiting in a retry queue (sent there through the
    default exchange) still goes back to its work queue when its delay is over."""
    topology = Topology(f"t{uuid.uuid4().hex[:10]}", delivery_limit=3)
    admin = Broker(amqp_url, topology)
    admin.connect()
    admin.declare()
    admin.channel.exchange_delete(topology.failures_exchange)  # what an older release declared
    lib_sh("rabbitmq_topic_rules", topology.namespace)
    work = topology.work_queue("binder")
    retry, dlq = topology.failure_queues("binder")
    try:
        admin.publish([Outgoing(retry, b"{}", exchange="", expiration_ms=1500)])
        operator = Broker(role_url("operator"), topology)
        operator.declare()
        operator.close()
        binder = Broker(role_url("binder"), topology)
        assert refusal(publish(binder, dlq, exchange=topology.failures_exchange)) is None
        binder.close()
        assert admin.queue_counts(dlq)[0] == 1
        _wait(lambda: admin.queue_counts(work)[0] == 1, "the retried message in its work queue")
        assert admin.queue_counts(retry)[0] == 0
    finally:
        lib_sh("rabbitmq_topic_rules", topology.namespace, "clear")
        admin.connect()
        for queue in topology.all_queues():
            admin.channel.queue_delete(queue)
        admin.channel.exchange_delete(topology.exchange)
        admin.channel.exchange_delete(topology.failures_exchange)
        admin.close()


def _wait(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_a_stage_worker_as_its_own_user_retries_then_dead_letters(broker: Broker) -> None:
    """The worker's failures, as the assigner's user: a transient one back through
    `.retry` to the work queue, then a permanent one into the `.dlq` with its reason."""
    failures: list[Exception] = [TransientError("store away"), PermanentError("bad event")]

    def handler(_event: Event, _payload: bytes | None) -> list[Event]:
        raise failures.pop(0)

    own = Broker(role_url("assigner"), broker.topology, prefetch=10)
    policy = RetryPolicy(max_retries=3, base_seconds=0.05)
    worker = StageWorker("assigner", own, handler, policy=policy)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        _wait(worker.consuming.is_set, "the worker consuming")
        broker.publish([encode_event(bound(1))])
        dlq = Topology.dead_letter_queue(worker.queue)
        _wait(lambda: broker.queue_counts(dlq)[0] == 1, "the dead letter")
    finally:
        worker.stop.set()
        thread.join(timeout=30)
    [message] = drain(broker, dlq)
    assert message.headers[H_ATTEMPT] == 1 and message.headers[H_ERROR] == "bad event"
    assert failures == []
