"""The real RabbitMQ: confirms, dead-lettering with reasons, delayed retries, broker restarts."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

import pytest

from shared.contracts import AccountOptions, Event, MailBound, MailSummary
from shared.errors import PermanentError, PublishNotConfirmedError, TransientError
from shared.messaging import Broker
from shared.settings import Settings
from shared.topology import Topology
from shared.wire import H_ATTEMPT, H_ERROR, H_ERROR_CLASS, Outgoing, encode_event
from shared.worker import RetryPolicy, StageWorker
from tests.services import rabbitmqctl

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 27, tzinfo=UTC)


def bound(n: int) -> MailBound:
    return MailBound(
        event_id=f"ev-{n}",
        tenant_id="t",
        account_id="a",
        email_id=f"e{n}",
        occurred_at=NOW,
        options=AccountOptions(owner_id="o"),
        summary=MailSummary(),
        matched_by="sender",
        customer_id=f"c{n}",
    )


def wait_for(predicate: object, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def drain(broker: Broker, queue: str) -> list[object]:
    got = []
    while (item := broker.get(queue)) is not None:
        message, tag = item
        broker.ack(tag)
        got.append(message)
    return got


@pytest.fixture
def run_worker(settings: Settings) -> Iterator[object]:
    workers: list[tuple[StageWorker, threading.Thread]] = []

    def start(handler: object, policy: RetryPolicy | None = None) -> StageWorker:
        b = Broker(
            settings.amqp_url.get_secret_value(),
            Topology(settings.namespace, settings.delivery_limit),
            prefetch=10,
        )
        worker = StageWorker("assigner", b, handler, policy=policy)  # type: ignore[arg-type]
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        workers.append((worker, thread))
        wait_for(worker.consuming.is_set, what="consumer start")
        return worker

    yield start
    for worker, thread in workers:
        worker.stop.set()
        thread.join(timeout=30)


def test_confirmed_publish_reaches_the_bound_queue(broker: Broker) -> None:
    broker.publish([encode_event(bound(1)), encode_event(bound(2))])
    queue = broker.topology.work_queue("assigner")
    assert broker.queue_counts(queue) == (2, 0)


def test_unroutable_publish_is_not_confirmed(broker: Broker) -> None:
    with pytest.raises(PublishNotConfirmedError):
        broker.publish([Outgoing(routing_key="nobody.listens", body=b"{}")])


def test_permanent_failure_lands_in_the_dlq_with_its_reason(
    broker: Broker, run_worker: object
) -> None:
    def handler(event: Event, _payload: bytes | None) -> Sequence[Event]:
        raise PermanentError(f"cannot handle {event.email_id}")

    run_worker(handler)  # type: ignore[operator]
    broker.publish([encode_event(bound(1))])
    dlq = Topology.dead_letter_queue(broker.topology.work_queue("assigner"))
    wait_for(lambda: broker.queue_counts(dlq)[0] == 1, what="dead letter")
    [message] = drain(broker, dlq)
    assert message.headers[H_ERROR] == "cannot handle e1"  # type: ignore[attr-defined]
    assert message.headers[H_ERROR_CLASS] == "PermanentError"  # type: ignore[attr-defined]
    assert message.message_id == "ev-1"  # type: ignore[attr-defined]


def test_poison_message_is_dead_lettered_after_the_delivery_limit(
    broker: Broker, settings: Settings
) -> None:
    """A message whose consumer dies every time (never acked) ends in the DLQ, not a loop."""
    queue = broker.topology.work_queue("assigner")
    broker.publish([encode_event(bound(1))])
    for _ in range(settings.delivery_limit + 1):
        taken = Broker(settings.amqp_url.get_secret_value(), broker.topology)
        if taken.get(queue) is None:
            break
        taken.close()  # dies holding it: RabbitMQ requeues and counts the delivery
    dlq = Topology.dead_letter_queue(queue)
    wait_for(lambda: broker.queue_counts(dlq)[0] == 1, what="poison in the DLQ")
    assert broker.queue_counts(queue)[0] == 0
    [message] = drain(broker, dlq)
    death = message.headers["x-death"][0]  # type: ignore[attr-defined]
    assert death["queue"] == queue
    assert death["reason"] in ("delivery_limit", "rejected")


def test_transient_failure_is_retried_later_not_hot_looped(
    broker: Broker, run_worker: object
) -> None:
    attempts: list[tuple[float, int]] = []

    def handler(event: Event, _payload: bytes | None) -> Sequence[Event]:
        attempts.append((time.monotonic(), len(attempts)))
        if len(attempts) < 3:
            raise TransientError("store briefly down")
        return []

    run_worker(handler, RetryPolicy(max_retries=5, base_seconds=0.3, max_seconds=5))  # type: ignore[operator]
    broker.publish([encode_event(bound(1))])
    wait_for(lambda: len(attempts) >= 3, what="three attempts")
    time.sleep(1.0)
    assert len(attempts) == 3
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(attempts)]
    assert gaps[0] >= 0.25 and gaps[1] >= 0.55, gaps  # 0.3 s, then 0.6 s
    queue = broker.topology.work_queue("assigner")
    assert broker.queue_counts(Topology.dead_letter_queue(queue))[0] == 0


def test_retries_run_out_into_the_dlq(broker: Broker, run_worker: object) -> None:
    def handler(event: Event, _payload: bytes | None) -> Sequence[Event]:
        raise TransientError("always down")

    run_worker(handler, RetryPolicy(max_retries=2, base_seconds=0.1, max_seconds=1))  # type: ignore[operator]
    broker.publish([encode_event(bound(1))])
    dlq = Topology.dead_letter_queue(broker.topology.work_queue("assigner"))
    wait_for(lambda: broker.queue_counts(dlq)[0] == 1, what="exhausted retries")
    [message] = drain(broker, dlq)
    assert message.headers[H_ATTEMPT] == 2  # type: ignore[attr-defined]
    assert message.headers[H_ERROR].startswith("retries exhausted (2)")  # type: ignore[attr-defined]


@pytest.mark.slow
def test_nothing_is_lost_across_a_broker_app_restart(broker: Broker, run_worker: object) -> None:
    seen: set[str] = set()
    lock = threading.Lock()

    def handler(event: Event, _payload: bytes | None) -> Sequence[Event]:
        time.sleep(0.005)
        with lock:
            seen.add(event.event_id)
        return []

    run_worker(handler)  # type: ignore[operator]
    broker.publish([encode_event(bound(n)) for n in range(300)])
    wait_for(lambda: len(seen) >= 30, what="consumption to start")
    rabbitmqctl("stop_app")
    time.sleep(1.0)
    rabbitmqctl("start_app")
    rabbitmqctl("await_startup")
    broker.connect()
    broker.publish([encode_event(bound(n)) for n in range(300, 400)])
    wait_for(lambda: len(seen) == 400, timeout=90, what="all 400 events")
    assert seen == {f"ev-{n}" for n in range(400)}
