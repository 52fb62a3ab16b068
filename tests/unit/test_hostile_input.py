"""Hostile input to the binder: events naming another tenant's account, mail with too many
or too large parts, and settings that would let a consumer hold more than its memory."""

from __future__ import annotations

from datetime import UTC, datetime
from email.message import EmailMessage

import pytest
from pydantic import ValidationError

from binder.handlers import handle_mail_fetched
from binder.ports import AccountRef
from shared.accounts import AccountConfig
from shared.contracts import AccountOptions, MailBound, MailFetched
from shared.errors import UnknownAccountError
from shared.letter import PartLimits, letter_fields
from shared.mail import parse_mail
from shared.settings import Settings
from tests.conftest import make_mail
from tests.fakes import FakeAccountDirectory, FakeBlobStore, FakeCrmDirectory, FakeEmailArchive

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def fetched(tenant: str, account: str, **options: object) -> MailFetched:
    return MailFetched.for_mail(
        email_id=f"{account}-1", now=NOW, tenant_id=tenant, account_id=account,
        options=AccountOptions(owner_id="mallory", **options),  # type: ignore[arg-type]
        protocol="imap", folder="INBOX", uidvalidity=1, uid=1, size=100,
    )  # fmt: skip


def stored_accounts() -> FakeAccountDirectory:
    """Tenant A's account `acc-a`, owned by ann, that creates customers in shop-a."""
    options = AccountOptions(owner_id="ann", shop_id="shop-a", create_customer=True)
    return FakeAccountDirectory({"acc-a": AccountRef("acc-a", "tenant-a", options)})


@pytest.mark.parametrize("account", ["acc-a", "acc-unknown"])
def test_an_event_naming_an_account_its_tenant_lacks_writes_nothing_anywhere(
    account: str,
) -> None:
    crm, archive, blobs = FakeCrmDirectory(), FakeEmailArchive(), FakeBlobStore()
    event = fetched("tenant-b", account, create_customer=True)
    with pytest.raises(
        UnknownAccountError, match=f"'{account}' is not an account of tenant 'tenant-b'"
    ):
        handle_mail_fetched(
            event, make_mail("new@example.com", "hello"), accounts=stored_accounts(),
            crm=crm, archive=archive, blobs=blobs, now=NOW,
        )  # fmt: skip
    assert archive.docs == {} and archive.outcomes == {}
    assert crm.customers == {} and blobs.blobs == {}


def test_the_options_and_owner_are_the_stored_accounts_not_the_events() -> None:
    crm, archive = FakeCrmDirectory(), FakeEmailArchive()
    event = fetched("tenant-a", "acc-a", create_customer=False, shop_id="shop-forged")
    [out] = handle_mail_fetched(
        event, make_mail("new@example.com", "hello"), accounts=stored_accounts(),
        crm=crm, archive=archive, blobs=FakeBlobStore(), now=NOW,
    )  # fmt: skip
    assert out.options.owner_id == "ann" and out.options.shop_id == "shop-a"
    doc = archive.docs[event.email_id]
    assert doc["matched_by"] == "created" and doc["shop_id"] == "shop-a"
    assert type(out) is MailBound and out.customer_created


def with_parts(*sizes: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = "ann@example.com"
    msg["Subject"] = "parts"
    msg.set_content("see attached")
    for n, size in enumerate(sizes):
        msg.add_attachment(b"x" * size, maintype="application", subtype="octet-stream",
                           filename=f"f{n}.bin")  # fmt: skip
    return msg.as_bytes()


def test_parts_past_the_count_are_listed_as_not_stored_with_the_reason() -> None:
    blobs = FakeBlobStore()
    raw = with_parts(10, 20, 30)
    fields = letter_fields(
        "e1", "t", parse_mail(raw), raw=raw, raw_ref=None, blobs=blobs,
        limits=PartLimits(max_parts=2, max_bytes=10_000),
    )  # fmt: skip
    assert [p["filename"] for p in fields["attachments"]] == ["f0.bin", "f1.bin"]
    assert fields["parts_not_stored"] == [
        {"index": 2, "name": "f2.bin", "content_type": "application/octet-stream", "size": 30,
         "reason": "too_many_parts", "detail": "a mail stores at most 2 parts"},
    ]  # fmt: skip
    assert "att/e1/2" not in blobs.blobs and "att/e1/1" in blobs.blobs


def test_parts_past_the_bytes_are_listed_as_not_stored_and_smaller_ones_still_fit() -> None:
    blobs = FakeBlobStore()
    raw = with_parts(600, 500, 300)
    fields = letter_fields(
        "e1", "t", parse_mail(raw), raw=raw, raw_ref=None, blobs=blobs,
        limits=PartLimits(max_parts=10, max_bytes=1000),
    )  # fmt: skip
    assert [p["filename"] for p in fields["attachments"]] == ["f0.bin", "f2.bin"]
    [missing] = fields["parts_not_stored"]
    assert (missing["name"], missing["size"], missing["reason"]) == (
        "f1.bin",
        500,
        "parts_too_large",
    )
    assert "att/e1/1" not in blobs.blobs


def test_a_prefetch_that_could_hold_more_than_the_budget_is_refused_naming_the_values() -> None:
    with pytest.raises(ValidationError, match=r"MAILINTAKE_PREFETCH \(300\) x .*\(4194304\)"):
        Settings(prefetch=300, inline_body_limit=4 * 1024 * 1024)
    assert Settings().prefetch * Settings().inline_body_limit <= Settings().prefetch_budget_bytes


def test_max_message_bytes_has_a_ceiling_named_in_the_error() -> None:
    too_big = 101 * 1024 * 1024
    named = f"max_message_bytes {too_big} is over the ceiling"
    with pytest.raises(ValidationError, match=named):
        Settings(max_message_bytes=too_big)
    account = {"tenant_id": "t", "owner_id": "u", "protocol": "imap", "username": "u"}
    with pytest.raises(ValidationError, match=named):
        AccountConfig.model_validate(
            {**account, "host": "mx.example.com", "max_message_bytes": too_big}
        )
