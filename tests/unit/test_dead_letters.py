"""A message given up on: recorded as it is dead-lettered (by the worker's recorder), a mail
recorded `failed` with its reason and its owner told, and replaced when a replay binds it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from binder.failures import handle_mail_dead_lettered
from binder.handlers import handle_mail_fetched
from binder.ports import AccountRef
from notifier.handlers import handle_mail_skipped
from shared.contracts import AccountOptions, Event, MailFetched, MailRouted, MailSkipped
from shared.errors import PermanentError, TransientError
from shared.messaging import Broker
from shared.topology import Topology
from shared.wire import H_ATTEMPT, H_DELIVERY_COUNT, H_ERROR, Incoming, encode_event
from shared.worker import RetryPolicy, StageWorker
from tests.conftest import make_mail
from tests.fakes import (
    FakeAccountDirectory,
    FakeBlobStore,
    FakeCrmDirectory,
    FakeDeadLetterRecorder,
    FakeEmailArchive,
    FakeNotificationInbox,
    FakeWebhookDirectory,
)
from tests.unit.test_binder_handler import T, fetched

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
POLICY = RetryPolicy(max_retries=3, base_seconds=1.0, max_seconds=5.0)
LIMIT = 4


class FailingHandler:
    """A stage handler that fails every message with `error`; counts its calls."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.calls = 0

    def __call__(self, event: Event, _payload: bytes | None) -> list[Event]:
        self.calls += 1
        raise self.error


def delivered(event: MailFetched, **headers: Any) -> Incoming:
    out = encode_event(event, b"raw mail")
    return Incoming(
        queue="mi.binder.in",
        routing_key=out.routing_key,
        exchange="mi.events",
        body=out.body,
        content_type=out.content_type,
        message_id=out.message_id,
        correlation_id=out.correlation_id,
        type=out.type,
        headers={**out.headers, **headers},
        redelivered=bool(headers),
    )


def worker(handler: FailingHandler, recorder: FakeDeadLetterRecorder) -> StageWorker:
    broker = Broker("amqp://127.0.0.1:1/", Topology("mi", LIMIT))  # never connected here
    return StageWorker("binder", broker, handler, policy=POLICY, dead_letters=recorder)


def skipped_notice() -> MailSkipped:
    return MailSkipped.caused_by(fetched(), now=NOW, options=fetched().options, reason="failed")


def test_a_dead_letter_is_recorded_and_what_the_recorder_tells_goes_with_it() -> None:
    recorder = FakeDeadLetterRecorder(told=[skipped_notice()])
    event = fetched()
    outputs = worker(FailingHandler(PermanentError("bad")), recorder).handle_batch(
        [delivered(event)]
    )
    assert [o.routing_key for o in outputs] == ["mi.binder.in.dlq", "mail.skipped"]
    assert recorder.recorded == [(event, "bad")]


def test_a_retried_message_is_not_recorded() -> None:
    recorder = FakeDeadLetterRecorder()
    outputs = worker(FailingHandler(TransientError("later")), recorder).handle_batch(
        [delivered(fetched())]
    )
    assert [o.routing_key for o in outputs] == ["mi.binder.in.retry"]
    assert recorder.recorded == []


def test_a_dead_letter_that_cannot_be_recorded_is_retried_instead() -> None:
    recorder = FakeDeadLetterRecorder(broken=True)
    [out] = worker(FailingHandler(PermanentError("bad")), recorder).handle_batch(
        [delivered(fetched(), **{H_ATTEMPT: 2})]
    )
    assert out.routing_key == "mi.binder.in.retry"
    assert out.headers[H_ATTEMPT] == 3 and out.headers[H_ERROR] == "bad"


def test_the_last_allowed_delivery_is_dead_lettered_and_recorded_unhandled() -> None:
    recorder, handler = FakeDeadLetterRecorder(), FailingHandler(AssertionError("handled"))
    event = fetched()
    [out] = worker(handler, recorder).handle_batch([delivered(event, **{H_DELIVERY_COUNT: LIMIT})])
    assert out.routing_key == "mi.binder.in.dlq" and handler.calls == 0
    [(recorded, reason)] = recorder.recorded
    assert recorded == event and f"delivered {LIMIT + 1} times" in reason
    assert out.headers[H_ERROR] == reason


def test_an_earlier_redelivery_is_handled() -> None:
    recorder, handler = FakeDeadLetterRecorder(), FailingHandler(TransientError("later"))
    worker(handler, recorder).handle_batch([delivered(fetched(), **{H_DELIVERY_COUNT: LIMIT - 1})])
    assert handler.calls == 1 and recorder.recorded == []


STORED = AccountRef(
    "acc", T, AccountOptions(owner_id="owner-stored", shop_id="shop-stored", notify_skipped=True)
)


def dead_lettered(
    event: MailFetched, archive: FakeEmailArchive, account: AccountRef = STORED
) -> list[Event]:
    accounts = FakeAccountDirectory({account.id: account})
    return handle_mail_dead_lettered(
        event, "retries exhausted (3): boom", accounts=accounts, archive=archive, now=NOW
    )


def test_a_dead_lettered_mail_is_recorded_failed_under_the_stored_account() -> None:
    archive = FakeEmailArchive()
    [out] = dead_lettered(fetched(shop_id="shop-from-event"), archive)
    doc = archive.docs["e1"]
    assert (doc["status"], doc["failure_reason"]) == ("failed", "retries exhausted (3): boom")
    assert (doc["tenant_id"], doc["account_id"], doc["shop_id"]) == (T, "acc", "shop-stored")
    assert isinstance(out, MailSkipped) and out.reason == "failed"
    assert out.options == STORED.options and out.detail == "retries exhausted (3): boom"


@pytest.mark.parametrize(
    "account",
    [AccountRef("other-acc", T, STORED.options), AccountRef("acc", "other", STORED.options)],
    ids=["unknown-account", "another-tenants-account"],
)
def test_an_event_naming_an_account_its_tenant_lacks_records_nothing(account: AccountRef) -> None:
    archive = FakeEmailArchive()
    assert dead_lettered(fetched(), archive, account) == []
    assert archive.docs == {}


def test_a_mail_decided_already_keeps_its_document() -> None:
    archive = FakeEmailArchive({"e1": {"_id": "e1", "tenant_id": T, "status": "bound"}})
    assert dead_lettered(fetched(), archive) == []
    assert archive.docs["e1"]["status"] == "bound"


def test_a_replay_that_binds_replaces_the_failed_document() -> None:
    archive, crm = FakeEmailArchive(), FakeCrmDirectory()
    crm.add_customer(T, "cust-ann", "ann@example.com", manager_id="m-ann")
    dead_lettered(fetched(), archive)
    [out] = handle_mail_fetched(
        fetched(),
        make_mail("ann@example.com", "hello"),
        accounts=FakeAccountDirectory.holding(fetched()),
        crm=crm,
        archive=archive,
        blobs=FakeBlobStore(),
        now=NOW,
    )
    assert isinstance(out, MailRouted) and out.customer_id == "cust-ann"
    doc = archive.docs["e1"]
    assert doc["status"] == "bound" and "failure_reason" not in doc


def test_the_owner_is_told_of_a_failed_mail_apart_from_a_later_skip() -> None:
    inbox, hooks = FakeNotificationInbox(), FakeWebhookDirectory()
    [failed] = dead_lettered(fetched(), FakeEmailArchive())
    assert isinstance(failed, MailSkipped)
    handle_mail_skipped(failed, inbox=inbox, webhooks=hooks, now=NOW)
    handle_mail_skipped(failed, inbox=inbox, webhooks=hooks, now=NOW)
    later = failed.model_copy(update={"reason": "no_customer", "detail": None})
    handle_mail_skipped(later, inbox=inbox, webhooks=hooks, now=NOW)
    assert [(d["kind"], d["reason"], d["user_id"]) for d in inbox.docs] == [
        ("message_skipped", "failed", "owner-stored"),
        ("message_skipped", "no_customer", "owner-stored"),
    ]
    text = inbox.docs[0]["text"]
    assert "could not be processed" in text and "e1" in text
    assert "unknown" not in text and "''" not in text  # no sender or subject is known
