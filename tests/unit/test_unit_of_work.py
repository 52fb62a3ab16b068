"""Each stage handles a consumed batch as one unit of work: begun with the batch's events,
committed once; the batch's reads see its own writes; a failed commit retries all of it."""

from __future__ import annotations

from typing import Any

from assigner.__main__ import AssignerHandler
from binder.__main__ import BinderHandler
from notifier.__main__ import NotifierHandler
from notifier.ports import Party
from shared.contracts import Event, MailRouted
from shared.errors import StoreUnavailableError
from shared.messaging import Broker
from shared.topology import Topology
from shared.wire import Incoming, Outgoing, decode_event, encode_event
from shared.worker import EventHandler, RetryPolicy, StageWorker, UnitOfWork
from tests.conftest import make_mail
from tests.fakes import (
    FakeAssignmentBatch,
    FakeBindingBatch,
    FakeManagerRotation,
    FakeNotificationBatch,
    FakeWebhookDirectory,
)
from tests.unit.test_assigner_notifier import bound, managers
from tests.unit.test_binder_handler import fetched

POLICY = RetryPolicy(max_retries=3, base_seconds=1.0, max_seconds=5.0)


def delivered(stage: str, event: Event, payload: bytes | None = None) -> Incoming:
    out = encode_event(event, payload)
    return Incoming(
        queue=f"mi.{stage}.in",
        routing_key=out.routing_key,
        exchange="mi.events",
        body=out.body,
        content_type=out.content_type,
        message_id=out.message_id,
        correlation_id=out.correlation_id,
        type=out.type,
        headers=dict(out.headers or {}),
    )


def run_batch(
    stage: str, handler: EventHandler, unit_of_work: UnitOfWork, messages: list[Incoming]
) -> list[Outgoing]:
    broker = Broker("amqp://127.0.0.1:1/", Topology("mi"))  # never connected here
    worker = StageWorker(stage, broker, handler, policy=POLICY, unit_of_work=unit_of_work)
    return worker.handle_batch(messages)


def published(outputs: list[Outgoing]) -> list[Any]:
    """The events the batch publishes, decoded as the next stage decodes them."""
    return [
        decode_event(Incoming(
            queue="q", routing_key=o.routing_key, exchange=o.exchange, body=o.body,
            content_type=o.content_type, message_id=o.message_id,
            correlation_id=o.correlation_id, type=o.type, headers=dict(o.headers or {}),
        ))[0]
        for o in outputs
    ]  # fmt: skip


def two_mails_from_a_new_address() -> list[Incoming]:
    options = {"create_customer": True}
    return [
        delivered("binder", fetched(n, **options), make_mail("new@example.com", f"hello {n}"))
        for n in (1, 2)
    ]


def test_a_binder_batch_sees_the_customer_an_earlier_mail_of_it_created() -> None:
    batch = FakeBindingBatch()
    outputs = run_batch("binder", BinderHandler(batch), batch, two_mails_from_a_new_address())
    first, second = published(outputs)
    assert (first.matched_by, second.matched_by) == ("created", "sender")
    assert first.customer_id == second.customer_id
    assert len(batch.begun) == 1 and batch.commits == 1
    assert [c["emails"] for c in batch.crm.customers.values()] == [["new@example.com"]]
    assert set(batch.archive.docs) == {"e1", "e2"}


def test_a_binder_batch_whose_commit_fails_stores_nothing_and_is_retried_whole() -> None:
    batch = FakeBindingBatch(fail_commit=StoreUnavailableError("the store went away"))
    outputs = run_batch("binder", BinderHandler(batch), batch, two_mails_from_a_new_address())
    assert [o.routing_key for o in outputs] == ["mi.binder.in.retry"] * 2
    assert batch.crm.customers == {} and batch.archive.docs == {} and batch.blobs.blobs == {}
    batch.fail_commit = None
    again = published(
        run_batch("binder", BinderHandler(batch), batch, two_mails_from_a_new_address())
    )
    assert [e.matched_by for e in again] == ["created", "sender"] and batch.commits == 1


def test_an_assigner_batch_commits_its_outcomes_once_and_keeps_its_turns_on_failure() -> None:
    rotation = FakeManagerRotation({"g1": managers(("m1", "free", True), ("m2", "free", True))})
    batch = FakeAssignmentBatch(
        rotation=rotation, fail_commit=StoreUnavailableError("the store went away")
    )
    messages = [delivered("assigner", bound(n)) for n in (1, 2, 3)]
    retried = run_batch("assigner", AssignerHandler(batch), batch, messages)
    assert [o.routing_key for o in retried] == ["mi.assigner.in.retry"] * 3
    assert batch.records.outcomes == {}  # put back: the e-mails are written at commit
    batch.fail_commit = None
    routed = published(run_batch("assigner", AssignerHandler(batch), batch, messages))
    assert all(isinstance(r, MailRouted) for r in routed)
    assert [r.manager_id for r in routed] == ["m1", "m2", "m1"]  # the turns taken before
    assert {e: m for e, (m, _) in batch.records.outcomes.items()} == {
        "e1": "m1", "e2": "m2", "e3": "m1"
    }  # fmt: skip
    assert batch.commits == 1 and len(batch.begun) == 2


def test_a_notifier_batch_keeps_its_notifications_until_it_commits() -> None:
    batch = FakeNotificationBatch(fail_commit=StoreUnavailableError("the store went away"))
    batch.recipients.accounts[("t", "a")] = bound(1).options
    batch.recipients.customers[("t", "c1")] = Party("c1", "m1")
    handler = NotifierHandler(batch, FakeWebhookDirectory())
    routed = MailRouted.caused_by(
        bound(1), now=bound(1).occurred_at,
        **{**bound(1).model_dump(exclude={"event_id", "occurred_at"}), "manager_id": "m1",
           "assigned_now": True},
    )  # fmt: skip
    retried = run_batch("notifier", handler, batch, [delivered("notifier", routed)])
    assert [o.routing_key for o in retried] == ["mi.notifier.in.retry"]
    assert batch.inbox.docs == []
    batch.fail_commit = None
    assert run_batch("notifier", handler, batch, [delivered("notifier", routed)]) == []
    assert [d["kind"] for d in batch.inbox.docs] == ["customer_assigned", "incoming_email"]
    assert batch.commits == 1
