"""The letter's part of an `emails` document, as the binder writes it and the CLI reads it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import pytest

from binder.handlers import handle_mail_fetched
from shared.contracts import AccountOptions, Event, MailBound, MailFetched, MailSkipped
from shared.letter import (
    BODY_INLINE_CHARS,
    body_text,
    letter_fields,
    part_ref,
    prunable_raw,
    pruned_raw,
)
from shared.mail import parse_mail
from shared.store import Doc
from tests.conftest import make_mail
from tests.fakes import (
    FakeAccountDirectory,
    FakeBlobStore,
    FakeCrmDirectory,
    FakeEmailArchive,
)

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
T = "tenant-1"
LETTER_KEYS = {"to", "cc", "reply_to", "body", "attachments", "parts_not_stored", "raw_ref"}


def letter(text: str, html: str | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Ann <ann@example.com>"
    msg["To"] = "Shop <shop@example.com>, sales@example.com"
    msg["Reply-To"] = "ann.private@example.com"
    msg["Subject"] = "order"
    msg.set_content(text)
    if html is not None:
        msg.add_alternative(html, subtype="html")
        msg.get_payload()[1].add_related(
            b"PNG", maintype="image", subtype="png", cid="<logo@x>", disposition="inline"
        )
    msg.add_attachment(b"%PDF", maintype="application", subtype="pdf", filename="bill.pdf")
    return msg.as_bytes()


def test_a_small_letter_sits_in_the_document() -> None:
    raw = letter("short text\n", "<p onclick=x()>short <img src=cid:logo@x></p>\n")
    blobs = FakeBlobStore()
    fields = letter_fields("e1", T, parse_mail(raw), raw=raw, raw_ref=None, blobs=blobs)
    assert set(fields) == LETTER_KEYS
    assert fields["to"] == [
        {"address": "shop@example.com", "name": "Shop"},
        {"address": "sales@example.com", "name": None},
    ]
    assert (fields["cc"], fields["reply_to"]) == ([], [{"address": "ann.private@example.com",
                                                        "name": None}])  # fmt: skip
    assert fields["body"] == {
        "text_source": "plain",
        "text": "short text\n", "text_ref": None, "text_length": 11,
        "html": "<p onclick=x()>short <img src=cid:logo@x></p>\n", "html_ref": None,
        "html_length": 46,
        "html_safe": '<p>short <img src="cid:logo@x"></p>\n', "html_safe_ref": None,
        "html_safe_length": 36,
    }  # fmt: skip
    assert fields["attachments"] == [
        {"index": 0, "filename": None, "content_type": "image/png", "size": 3,
         "disposition": "inline", "content_id": "logo@x", "ref": "att/e1/0"},
        {"index": 1, "filename": "bill.pdf", "content_type": "application/pdf", "size": 4,
         "disposition": "attachment", "content_id": None, "ref": "att/e1/1"},
    ]  # fmt: skip
    assert fields["raw_ref"] == "raw/e1" and blobs.blobs["raw/e1"] == raw
    assert set(blobs.blobs) == {"raw/e1", "att/e1/0", "att/e1/1"}


def test_a_long_body_goes_to_the_blob_store_and_reads_back() -> None:
    text = "Ж" * (BODY_INLINE_CHARS + 1) + "\n"
    raw = letter(text, "<p>" + "w " * BODY_INLINE_CHARS + "</p>\n")
    blobs = FakeBlobStore()
    doc = {"_id": "e1", "tenant_id": T}
    doc.update(letter_fields("e1", T, parse_mail(raw), raw=raw, raw_ref=None, blobs=blobs))
    body = doc["body"]
    assert body["text"] is None and body["text_ref"] == "body/e1/text"
    assert body["text_length"] == len(text)
    assert body["html"] is None and body["html_ref"] == "body/e1/html"
    assert blobs.content_types["body/e1/text"] == "text/plain; charset=utf-8"
    assert body_text(doc, "text", blobs) == text
    assert body_text(doc, "html_safe", blobs) == body_text(doc, "html", blobs)
    assert blobs.get_own(T, part_ref(doc, 1)) == b"%PDF"
    with pytest.raises(IndexError):
        part_ref(doc, 2)
    assert blobs.get_own(T, doc["raw_ref"]) == raw
    with pytest.raises(KeyError):  # another tenant's reference reads nothing
        body_text({**doc, "tenant_id": "other"}, "text", blobs)


def test_mail_stored_by_the_fetcher_keeps_that_raw_reference() -> None:
    raw = letter("text\n")
    blobs = FakeBlobStore()
    fields = letter_fields("e1", T, parse_mail(raw), raw=raw, raw_ref="raw/e1", blobs=blobs)
    assert fields["raw_ref"] == "raw/e1" and "raw/e1" not in blobs.blobs


def test_a_mail_without_any_body_has_the_same_shape() -> None:
    raw = b"From: a@example.com\r\nContent-Type: application/pdf\r\n\r\n%PDF\r\n"
    fields = letter_fields("e1", T, parse_mail(raw), raw=raw, raw_ref=None, blobs=FakeBlobStore())
    assert fields["body"] == {
        "text_source": None, "text": "", "text_ref": None, "text_length": 0,
        "html": None, "html_ref": None, "html_length": 0,
        "html_safe": None, "html_safe_ref": None, "html_safe_length": 0,
    }  # fmt: skip
    assert [part["content_type"] for part in fields["attachments"]] == ["application/pdf"]


def test_raw_sources_are_pruned_from_loaded_mail_stored_before_the_cut_only() -> None:
    cut = NOW - timedelta(days=30)
    assert prunable_raw(T, cut) == {
        "tenant_id": T,
        "status": "bound",
        "raw_ref": {"$ne": None},
        "created_at": {"$lt": cut},
    }
    assert pruned_raw(NOW) == {"raw_ref": None, "raw_pruned_at": NOW}


# -- the binder writes it -----------------------------------------------------------------------
def fetched(uid: int = 1, **options: object) -> MailFetched:
    return MailFetched.for_mail(
        email_id=f"e{uid}", now=NOW, tenant_id=T, account_id="acc",
        options=AccountOptions(owner_id="owner", **options),  # type: ignore[arg-type]
        protocol="imap", folder="INBOX", uidvalidity=1, uid=uid, size=100,
    )  # fmt: skip


def bind(raw: bytes, event: MailFetched | None = None) -> tuple[Event, Doc, FakeBlobStore]:
    crm, archive, blobs = FakeCrmDirectory(), FakeEmailArchive(), FakeBlobStore()
    crm.add_customer(T, "cust-ann", "ann@example.com", manager_id="m-ann")
    event = event or fetched()
    [out] = handle_mail_fetched(
        event, raw, accounts=FakeAccountDirectory.holding(event), crm=crm, archive=archive,
        blobs=blobs, now=NOW,
    )  # fmt: skip
    return out, archive.docs[event.email_id], blobs


def test_a_bound_mail_keeps_its_whole_letter() -> None:
    raw = letter("Где мой заказ?\n", "<p>Где <img src=cid:logo@x></p>\n")
    out, doc, blobs = bind(raw)
    assert isinstance(out, MailBound)
    assert set(doc) >= LETTER_KEYS
    assert doc["body"]["text"] == "Где мой заказ?\n"
    assert doc["preview"] == "Где мой заказ?" and out.summary.preview == "Где мой заказ?"
    assert blobs.get_own(T, doc["raw_ref"]) == raw
    assert [blobs.get_own(T, p["ref"]) for p in doc["attachments"]] == [b"PNG", b"%PDF"]


def test_a_skipped_mail_keeps_the_document_it_had() -> None:
    raw = letter("who am I?\n").replace(b"ann@example.com", b"stranger@example.org")
    out, doc, blobs = bind(raw)
    assert isinstance(out, MailSkipped) and out.reason == "no_customer"
    assert not {"body", "to", "raw_ref"} & set(doc)
    assert [p["filename"] for p in doc["attachments"]] == ["bill.pdf"]
    assert "raw/e1" not in blobs.blobs


def test_an_unparseable_mail_keeps_its_raw_source() -> None:
    out, doc, blobs = bind(b"\x00\x01 not mail at all")
    assert isinstance(out, MailSkipped) and out.reason == "parse_error"
    assert doc["raw_ref"] == "raw/e1" and blobs.blobs["raw/e1"] == b"\x00\x01 not mail at all"
    assert "body" not in doc


def test_a_mail_passed_by_reference_keeps_the_fetchers_raw_source() -> None:
    raw = make_mail("ann@example.com", "big one")
    crm, archive, blobs = FakeCrmDirectory(), FakeEmailArchive(), FakeBlobStore()
    crm.add_customer(T, "cust-ann", "ann@example.com")
    blobs.put("raw/e1", raw, tenant_id=T, content_type="message/rfc822")
    event = fetched().model_copy(update={"raw_ref": "raw/e1"})
    handle_mail_fetched(
        event, b"", accounts=FakeAccountDirectory.holding(event), crm=crm, archive=archive,
        blobs=blobs, now=NOW,
    )  # fmt: skip
    doc = archive.docs["e1"]
    assert doc["raw_ref"] == "raw/e1" and blobs.get_own(doc["tenant_id"], "raw/e1") == raw
    assert doc["body"]["text"] == "Hello\n"
