"""The binding rules, applied by the binder's handler with fakes of its ports."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from assigner.handlers import handle_mail_bound
from binder.batch import parse_batch, wanted_lookups
from binder.handlers import handle_mail_fetched
from shared.contracts import (
    AccountOptions,
    Event,
    MailBound,
    MailFetched,
    MailRouted,
    MailSkipped,
)
from shared.mail import MailParseError
from tests.conftest import make_mail
from tests.fakes import (
    FakeAccountDirectory,
    FakeAssignmentRecords,
    FakeBlobStore,
    FakeCrmDirectory,
    FakeEmailArchive,
    FakeManagerRotation,
)

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
T = "tenant-1"


def fetched(uid: int = 1, **options: object) -> MailFetched:
    return MailFetched.for_mail(
        email_id=f"e{uid}",
        now=NOW,
        tenant_id=T,
        account_id="acc",
        options=AccountOptions(owner_id="owner", **options),  # type: ignore[arg-type]
        protocol="imap",
        folder="INBOX",
        uidvalidity=1,
        uid=uid,
        size=100,
    )


@pytest.fixture
def crm() -> FakeCrmDirectory:
    crm = FakeCrmDirectory()
    crm.add_customer(T, "cust-ann", "ann@example.com", manager_id="m-ann")
    crm.add_customer(T, "cust-bob", "bob@example.com", manager_id=None)
    crm.add_order(T, "order-3112", "3112", "cust-bob", manager_id="m-order")
    crm.add_order(T, "order-2024", "2024-17", "cust-ann", manager_id=None)
    crm.add_customer("other-tenant", "cust-x", "new@example.com", manager_id="m-x")
    return crm


def run(
    crm: FakeCrmDirectory,
    raw: bytes,
    event: MailFetched | None = None,
    archive: FakeEmailArchive | None = None,
) -> tuple[object, FakeEmailArchive]:
    archive = archive or FakeEmailArchive()
    event = event or fetched()
    accounts = FakeAccountDirectory.holding(event)
    [out] = handle_mail_fetched(
        event, raw, accounts=accounts, crm=crm, archive=archive, blobs=FakeBlobStore(), now=NOW
    )
    return out, archive


@pytest.mark.parametrize(
    ("sender", "subject", "options", "expected"),
    [
        (
            "ann@example.com",
            "Re: [#3112] where is it",
            {},
            ("subject_tag", "cust-bob", "order-3112"),
        ),
        (
            "x@y.z",
            "=?utf-8?B?WyMzMTEyXSDQv9GA0LjQstC10YI=?=",
            {},
            ("subject_tag", "cust-bob", "order-3112"),
        ),
        ("x@y.z", "AW: Fwd: [#999] [#2024-17]", {}, ("subject_tag", "cust-ann", "order-2024")),
        ("ANN@Example.COM", "[#999] no such order", {}, ("sender", "cust-ann", None)),
        ('"Doe, Ann \\"A\\"" <Ann@example.com>', "hello", {}, ("sender", "cust-ann", None)),
        ("new@example.com", "hi", {"create_customer": True}, ("created", None, None)),
    ],
)
def test_bound(
    crm: FakeCrmDirectory,
    sender: str,
    subject: str,
    options: dict[str, bool],
    expected: tuple[str, str | None, str | None],
) -> None:
    out, archive = run(crm, make_mail(sender, subject), fetched(**options))
    assert isinstance(out, MailBound)
    matched_by, customer, order = expected
    assert out.matched_by == matched_by
    if customer:
        assert out.customer_id == customer
    assert out.order_id == order
    assert archive.docs["e1"]["status"] == "bound"
    assert archive.docs["e1"]["matched_by"] == matched_by


def test_order_binding_carries_the_orders_manager(crm: FakeCrmDirectory) -> None:
    out, _ = run(crm, make_mail("ann@example.com", "[#3112]"))
    assert isinstance(out, MailBound) and out.manager_id == "m-order"


@pytest.mark.parametrize(
    ("sender", "subject", "options", "event_type"),
    [
        # the manager is known at binding: straight to the notifier
        ("ann@example.com", "hello", {"notify_manager": True}, "mail.routed"),
        ("x@y.z", "[#3112] where is it", {"notify_manager": True}, "mail.routed"),
        # nobody is to be told: nothing to settle either
        ("bob@example.com", "hello", {}, "mail.routed"),
        ("x@y.z", "[#2024-17]", {}, "mail.routed"),
        # the assigner looks the manager up (order or customer without one) ...
        ("bob@example.com", "hello", {"notify_manager": True}, "mail.bound"),
        ("x@y.z", "[#2024-17]", {"notify_manager": True}, "mail.bound"),
        # ... or gives the customer this mail created one
        ("new@example.com", "hi", {"create_customer": True}, "mail.bound"),
    ],
)
def test_only_mail_with_something_to_settle_goes_to_the_assigner(
    crm: FakeCrmDirectory, sender: str, subject: str, options: dict[str, bool], event_type: str
) -> None:
    out, archive = run(crm, make_mail(sender, subject), fetched(**options))
    assert isinstance(out, MailBound) and out.event_type == event_type
    assert isinstance(out, MailRouted) == (event_type == "mail.routed")
    doc = archive.docs["e1"]
    assert (out.customer_id, out.order_id, out.manager_id) == (
        doc["customer_id"], doc["order_id"], doc["manager_id"]
    )  # fmt: skip
    if isinstance(out, MailRouted):  # what the assigner would have passed on, the same
        bound = MailBound.model_validate(out.model_dump(exclude={"assigned_now"}))
        [passed] = handle_mail_bound(
            bound, rotation=FakeManagerRotation(), records=FakeAssignmentRecords(), now=NOW
        )
        ids = {"event_id", "occurred_at"}
        assert passed.model_dump(exclude=ids) == out.model_dump(exclude=ids)


def test_unknown_sender_without_create_is_skipped(crm: FakeCrmDirectory) -> None:
    out, archive = run(crm, make_mail("stranger@example.com", "hello"))
    assert isinstance(out, MailSkipped) and out.reason == "no_customer"
    assert archive.docs["e1"]["skip_reason"] == "no_customer"


def test_customer_of_another_tenant_is_not_seen(crm: FakeCrmDirectory) -> None:
    out, _ = run(crm, make_mail("new@example.com", "hello"))
    assert isinstance(out, MailSkipped)


def test_created_customer_has_only_its_address(crm: FakeCrmDirectory) -> None:
    out, _ = run(
        crm,
        make_mail("New.Person@Example.com", "hi"),
        fetched(create_customer=True, shop_id="shop-2"),
    )
    assert isinstance(out, MailBound) and out.customer_created
    created = crm.customers[out.customer_id]
    assert created["emails"] == ["new.person@example.com"]
    assert created["source"] == "mail" and created["shop_id"] == "shop-2"
    assert created["manager_id"] is None


def test_second_mail_from_created_customer_binds_by_sender(crm: FakeCrmDirectory) -> None:
    archive = FakeEmailArchive()
    first, _ = run(crm, make_mail("n@x.org", "a"), fetched(1, create_customer=True), archive)
    second, _ = run(crm, make_mail("n@x.org", "b"), fetched(2, create_customer=True), archive)
    assert isinstance(first, MailBound) and first.matched_by == "created"
    assert isinstance(second, MailBound) and second.matched_by == "sender"
    assert first.customer_id == second.customer_id
    assert len([c for c in crm.customers.values() if "n@x.org" in c["emails"]]) == 1


def test_redelivery_repeats_the_same_outcome_and_event_id(crm: FakeCrmDirectory) -> None:
    archive = FakeEmailArchive()
    event = fetched(create_customer=True)
    raw = make_mail("fresh@x.org", "hi")
    first, _ = run(crm, raw, event, archive)
    again, _ = run(crm, raw, event, archive)
    assert isinstance(first, MailBound) and isinstance(again, MailBound)
    assert again.event_id == first.event_id
    assert again.matched_by == "created" and again.customer_created


def test_missing_from_is_skipped_as_no_sender(crm: FakeCrmDirectory) -> None:
    out, _ = run(crm, b"Subject: no sender\r\n\r\nbody")
    assert isinstance(out, MailSkipped) and out.reason == "no_sender"


def test_oversize_mail_is_skipped_as_too_large(crm: FakeCrmDirectory) -> None:
    event = fetched().model_copy(update={"oversize": True, "oversize_detail": "30000000 bytes"})
    out, _ = run(crm, make_mail("ann@example.com", "big"), event)
    assert isinstance(out, MailSkipped) and out.reason == "too_large"


def test_auto_reply_never_creates_a_customer(crm: FakeCrmDirectory) -> None:
    raw = make_mail("away@x.org", "Out of office", Auto_Submitted="auto-replied")
    out, _ = run(crm, raw, fetched(create_customer=True, ignore_auto_replies=True))
    assert isinstance(out, MailSkipped) and out.reason == "auto_reply"
    assert not any("away@x.org" in c["emails"] for c in crm.customers.values())


def test_tag_requires_sender_falls_through_to_sender(crm: FakeCrmDirectory) -> None:
    out, _ = run(crm, make_mail("ann@example.com", "[#3112]"), fetched(tag_requires_sender=True))
    assert isinstance(out, MailBound) and out.matched_by == "sender"
    out, _ = run(crm, make_mail("bob@example.com", "[#3112]"), fetched(tag_requires_sender=True))
    assert isinstance(out, MailBound) and out.matched_by == "subject_tag"


def test_thread_reply_joins_the_order(crm: FakeCrmDirectory) -> None:
    archive = FakeEmailArchive()
    first_raw = make_mail("ann@example.com", "[#3112] question")
    run(crm, first_raw, fetched(1, thread_replies=True), archive)
    message_id = archive.docs["e1"]["message_id"]
    reply = make_mail("ann@example.com", "Re: question", In_Reply_To=f"<{message_id}>")
    out, _ = run(crm, reply, fetched(2, thread_replies=True), archive)
    assert isinstance(out, MailBound) and out.matched_by == "thread"
    assert out.order_id == "order-3112"


def test_mail_stored_in_gridfs_is_read_from_there(crm: FakeCrmDirectory) -> None:
    """Large mail travels by reference: the AMQP body is empty and the raw is in the blobs."""
    blobs = FakeBlobStore()
    blobs.put(
        "raw/e1",
        make_mail("ann@example.com", "big one"),
        tenant_id=T,
        content_type="message/rfc822",
    )
    event = fetched().model_copy(update={"raw_ref": "raw/e1"})
    [out] = handle_mail_fetched(
        event, b"", accounts=FakeAccountDirectory.holding(event), crm=crm,
        archive=FakeEmailArchive(), blobs=blobs, now=NOW,
    )  # fmt: skip
    assert isinstance(out, MailBound) and out.matched_by == "sender"


def test_a_batch_is_parsed_once_and_its_lookups_read_per_tenant() -> None:
    def event(tenant: str, uid: int, raw: bytes) -> tuple[Event, bytes | None]:
        return fetched(uid).model_copy(update={"tenant_id": tenant}), raw

    body_only_tag = make_mail("x@example.org", "plain") + b"\r\n[#99] in the body\r\n"
    batch = [
        event("t1", 1, make_mail("A@Example.org", "Re: [#12] and [#13]")),
        event("t1", 2, body_only_tag),
        event("t2", 3, make_mail("b@example.org", "no tag")),
        event("t2", 4, b"\x00\x01 not mail at all"),
    ]
    parsed = parse_batch(batch)
    assert isinstance(parsed["e4"], MailParseError)
    wanted = wanted_lookups(batch, parsed)
    assert wanted["t1"].addresses == {"a@example.org", "x@example.org"}
    assert wanted["t1"].numbers == {"12", "13"}
    assert (wanted["t2"].addresses, wanted["t2"].numbers) == ({"b@example.org"}, set())


def test_a_mail_parsed_with_its_batch_is_bound_from_that_parse(crm: FakeCrmDirectory) -> None:
    [(event, raw)] = [(fetched(), make_mail("ann@example.com", "Re: [#3112] hello"))]
    parsed = parse_batch([(event, raw)])
    [out] = handle_mail_fetched(
        event, b"", crm=crm, archive=FakeEmailArchive(), blobs=FakeBlobStore(), now=NOW,
        parsed=parsed["e1"], accounts=FakeAccountDirectory.holding(event),
    )  # fmt: skip
    assert isinstance(out, MailBound) and out.order_id == "order-3112"
    [skipped] = handle_mail_fetched(
        fetched(2), raw, crm=crm, archive=FakeEmailArchive(), blobs=FakeBlobStore(), now=NOW,
        parsed=MailParseError("not mail"), accounts=FakeAccountDirectory.holding(fetched(2)),
    )  # fmt: skip
    assert isinstance(skipped, MailSkipped) and skipped.reason == "parse_error"


def test_each_decided_mail_tells_the_fetcher_its_outcome_and_place(
    crm: FakeCrmDirectory,
) -> None:
    _, archive = run(crm, make_mail("ann@example.com", "hello"), fetched(1))
    run(crm, make_mail("stranger@example.com", "who?"), fetched(2), archive)
    loaded, left = archive.outcomes["e1"], archive.outcomes["e2"]
    assert loaded["loaded"] is True and left["loaded"] is False
    place = {"protocol": "imap", "folder": "INBOX", "uidvalidity": 1, "uid": 1}
    assert loaded["mailbox"] == place == archive.docs["e1"]["mailbox"]
    assert (loaded["tenant_id"], loaded["account_id"]) == (T, "acc")
    archive.outcomes.clear()
    run(crm, make_mail("ann@example.com", "hello"), fetched(1), archive)  # redelivered
    assert archive.outcomes["e1"]["loaded"] is True  # told again: the effect is idempotent
