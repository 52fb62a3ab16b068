"""Who sent it: an order tag binds without a usable sender; mail from the tenant's own
mailboxes never creates a customer; a byte-order mark does not make a mail unreadable."""

from __future__ import annotations

import pytest

from binder.handlers import handle_mail_fetched
from shared.contracts import MailBound, MailRouted, MailSkipped
from tests.conftest import make_mail
from tests.fakes import (
    FakeAccountDirectory,
    FakeBlobStore,
    FakeCrmDirectory,
    FakeEmailArchive,
)
from tests.unit.test_binder_handler import NOW, T, fetched, run

NO_FROM = b"To: shop@example.com\r\nSubject: Re: [#3112] where is it\r\n\r\nHello\r\n"
BAD_FROM = b"From: not an address\r\nSubject: Re: [#3112] where is it\r\n\r\nHello\r\n"


@pytest.fixture
def crm() -> FakeCrmDirectory:
    """Two customers, an order; the tenant's two mailboxes, and another tenant's."""
    crm = FakeCrmDirectory()
    crm.add_customer(T, "cust-ann", "ann@example.com", manager_id="m-ann")
    crm.add_customer(T, "cust-bob", "bob@example.com")
    crm.add_order(T, "order-3112", "3112", "cust-bob", manager_id="m-order")
    crm.accounts = {T: {"orders@shop.example", "info@shop.example"}, "t2": {"new@example.com"}}
    return crm


@pytest.mark.parametrize("raw", [NO_FROM, BAD_FROM], ids=["missing", "unusable"])
def test_an_order_tag_binds_without_a_usable_sender(crm: FakeCrmDirectory, raw: bytes) -> None:
    out, archive = run(crm, raw)
    assert isinstance(out, MailRouted)
    assert (out.matched_by, out.order_id, out.customer_id) == (
        "subject_tag",
        "order-3112",
        "cust-bob",
    )
    assert archive.docs["e1"]["from_address"] is None


def test_with_tag_requires_sender_a_mail_without_sender_cannot_bind_by_tag(
    crm: FakeCrmDirectory,
) -> None:
    out, _ = run(crm, NO_FROM, fetched(tag_requires_sender=True))
    assert isinstance(out, MailSkipped) and out.reason == "no_sender"


def test_without_a_tag_a_mail_without_sender_is_still_skipped(crm: FakeCrmDirectory) -> None:
    raw = b"To: shop@example.com\r\nSubject: hello\r\n\r\nHello\r\n"
    out, _ = run(crm, raw, fetched(create_customer=True))
    assert isinstance(out, MailSkipped) and out.reason == "no_sender"


@pytest.mark.parametrize("address", ["orders@shop.example", "Info@Shop.Example"])
@pytest.mark.parametrize("create", [True, False], ids=["create-customer", "no-create"])
def test_mail_from_the_tenants_own_mailboxes_is_skipped_and_creates_no_customer(
    crm: FakeCrmDirectory, address: str, create: bool
) -> None:
    before = dict(crm.customers)
    out, archive = run(crm, make_mail(address, "Undelivered Mail"), fetched(create_customer=create))
    assert isinstance(out, MailSkipped) and out.reason == "own_address"
    assert archive.docs["e1"]["skip_reason"] == "own_address"
    assert crm.customers == before


def test_own_mail_still_binds_by_its_tag_or_to_an_existing_customer(
    crm: FakeCrmDirectory,
) -> None:
    crm.add_customer(T, "cust-shop", "info@shop.example")
    tagged, _ = run(crm, make_mail("orders@shop.example", "Fwd: [#3112] where is it"))
    assert isinstance(tagged, MailRouted) and tagged.order_id == "order-3112"
    known, _ = run(crm, make_mail("info@shop.example", "copy"), fetched(2, create_customer=True))
    assert isinstance(known, MailRouted) and known.customer_id == "cust-shop"


def test_another_tenants_mailbox_address_is_a_customer_like_any_other(
    crm: FakeCrmDirectory,
) -> None:
    out, _ = run(crm, make_mail("new@example.com", "hi"), fetched(create_customer=True))
    assert isinstance(out, MailBound) and out.matched_by == "created"


def test_a_mail_starting_with_a_byte_order_mark_and_blank_lines_is_bound(
    crm: FakeCrmDirectory,
) -> None:
    raw = b"\xef\xbb\xbf\r\n" + make_mail("ann@example.com", "question")
    [out] = handle_mail_fetched(
        fetched(), raw, crm=crm, archive=FakeEmailArchive(), blobs=FakeBlobStore(), now=NOW,
        accounts=FakeAccountDirectory.holding(fetched()),
    )  # fmt: skip
    assert isinstance(out, MailRouted) and out.customer_id == "cust-ann"
