"""Event contracts and their wire format."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.contracts import (
    AccountOptions,
    MailBound,
    MailFetched,
    MailSummary,
    email_id_for_imap,
    email_id_for_pop3,
)
from shared.errors import InvalidEventError
from shared.wire import EVENT_HEADER, RFC822, Incoming, decode_event, encode_event

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
OPTIONS = AccountOptions(owner_id="owner-1", create_customer=True)


def fetched(uid: int = 7) -> MailFetched:
    return MailFetched.for_mail(
        email_id=email_id_for_imap("acc-1", "INBOX", 42, uid),
        now=NOW,
        tenant_id="t1",
        account_id="acc-1",
        options=OPTIONS,
        protocol="imap",
        folder="INBOX",
        uidvalidity=42,
        uid=uid,
        size=10,
    )


def as_incoming(out: object, queue: str = "q") -> Incoming:
    return Incoming(
        queue=queue,
        routing_key=out.routing_key,
        exchange="x",  # type: ignore[attr-defined]
        body=out.body,
        content_type=out.content_type,  # type: ignore[attr-defined]
        message_id=out.message_id,
        correlation_id=out.correlation_id,  # type: ignore[attr-defined]
        type=out.type,
        headers=out.headers,
    )  # type: ignore[attr-defined]


def test_email_ids_are_deterministic_and_distinct() -> None:
    assert email_id_for_imap("a", "INBOX", 1, 2) == email_id_for_imap("a", "INBOX", 1, 2)
    assert email_id_for_imap("a", "INBOX", 1, 2) != email_id_for_imap("a", "INBOX", 2, 2)
    assert email_id_for_imap("a", "INBOX", 1, 2) != email_id_for_imap("b", "INBOX", 1, 2)
    assert email_id_for_pop3("a", "x1") != email_id_for_pop3("a", "x2")


def test_fetched_event_id_follows_from_the_mail() -> None:
    assert fetched().event_id == fetched().event_id
    assert fetched(7).event_id != fetched(8).event_id


def test_child_event_id_derives_from_parent() -> None:
    parent = fetched()
    summary = MailSummary(from_address="a@b.c")
    one = MailBound.caused_by(
        parent, now=NOW, options=OPTIONS, summary=summary, matched_by="sender", customer_id="c1"
    )
    two = MailBound.caused_by(
        parent,
        now=datetime.now(UTC),
        options=OPTIONS,
        summary=summary,
        matched_by="sender",
        customer_id="c1",
    )
    assert one.event_id == two.event_id != parent.event_id
    assert one.email_id == parent.email_id and one.tenant_id == "t1"


def test_fetched_mail_travels_as_rfc822_body_with_event_header() -> None:
    out = encode_event(fetched(), b"From: a@b.c\r\n\r\nhi")
    assert out.content_type == RFC822
    assert out.body == b"From: a@b.c\r\n\r\nhi"
    assert EVENT_HEADER in out.headers
    assert out.routing_key == "mail.fetched.acc-1"
    event, payload = decode_event(as_incoming(out))
    assert event == fetched()
    assert payload == b"From: a@b.c\r\n\r\nhi"


def test_json_event_round_trips() -> None:
    bound = MailBound.caused_by(
        fetched(),
        now=NOW,
        options=OPTIONS,
        summary=MailSummary(subject="Hi"),
        matched_by="created",
        customer_id="c1",
        customer_created=True,
    )
    out = encode_event(bound)
    assert out.routing_key == "mail.bound"
    assert out.correlation_id == bound.email_id
    event, payload = decode_event(as_incoming(out))
    assert event == bound and payload is None


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    bound = MailBound.caused_by(
        fetched(),
        now=NOW,
        options=OPTIONS,
        summary=MailSummary(),
        matched_by="sender",
        customer_id="c1",
    )
    out = encode_event(bound)
    body = out.body.replace(b'{"schema_version"', b'{"added_later":1,"schema_version"')
    event, _ = decode_event(
        as_incoming(out).__class__(**{**as_incoming(out).__dict__, "body": body})
    )
    assert event == bound


@pytest.mark.parametrize(
    ("type_", "body", "message"),
    [
        ("nope", b"{}", "unknown event type"),
        ("mail.bound", b"{not json", "does not match its contract"),
        ("mail.bound", b'{"event_id": "x"}', "does not match its contract"),
        ("mail.fetched", b"raw", "header missing"),
    ],
)
def test_bad_messages_raise_invalid_event(type_: str, body: bytes, message: str) -> None:
    incoming = Incoming(
        queue="q",
        routing_key="r",
        exchange="x",
        body=body,
        content_type=None,
        message_id=None,
        correlation_id=None,
        type=type_,
        headers={},
    )
    with pytest.raises(InvalidEventError, match=message):
        decode_event(incoming)
