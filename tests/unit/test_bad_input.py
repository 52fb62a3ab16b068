"""Broken and hostile mail into the binder's handler: each ends bound or skipped with a reason."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from itertools import count
from typing import Any, get_args

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from binder.handlers import handle_mail_fetched
from shared.contracts import AccountOptions, MailBound, MailFetched, MailSkipped, SkipReason
from tests.fakes import (
    FakeAccountDirectory,
    FakeBlobStore,
    FakeCrmDirectory,
    FakeEmailArchive,
)

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
TENANT = "t-bad"
_ids = count()

# -- hostile messages, built byte by byte ----------------------------------------------


def huge_mail(mib: int = 30) -> bytes:
    """A `mib` MiB message: a text part and one big base64 attachment."""
    import base64

    data = random.Random(7).randbytes(mib * 1024 * 1024 * 3 // 4)
    encoded = base64.encodebytes(data)
    return (
        b"From: Big Sender <big@sender.example>\r\nTo: shop@example.com\r\n"
        b"Subject: a huge one\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="HUGE"\r\n\r\n'
        b"--HUGE\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
        b"--HUGE\r\nContent-Type: application/octet-stream\r\n"
        b'Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename="x.bin"'
        b"\r\n\r\n" + encoded + b"\r\n--HUGE--\r\n"
    )


def deep_mail(depth: int = 200) -> bytes:
    """multipart/mixed nested `depth` levels deep around one text part."""
    head = b"From: deep@sender.example\r\nSubject: deep\r\nMIME-Version: 1.0\r\n"
    opening = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
        for i in range(depth)
    )
    closing = b"".join(b"\r\n--b%d--\r\n" % i for i in reversed(range(depth)))
    return head + opening + b"Content-Type: text/plain\r\n\r\nat the bottom" + closing


def many_recipients(n: int = 10_000) -> bytes:
    to = ",\r\n ".join(f"Person {i} <p{i}@many.example>" for i in range(n))
    return f"From: crowd@sender.example\r\nTo: {to}\r\nSubject: to all\r\n\r\nhi\r\n".encode()


def long_from(n: int = 5_000) -> bytes:
    name = "N" * n
    return f'From: "{name}" <long@sender.example>\r\nSubject: long\r\n\r\nhi\r\n'.encode()


def long_from_address(n: int = 5_000) -> bytes:
    return f"From: {'a' * n}@sender.example\r\nSubject: long\r\n\r\nhi\r\n".encode()


HOSTILE = {
    "30MiB": huge_mail,
    "200-deep": deep_mail,
    "10000-to": many_recipients,
    "5000-char-from-name": long_from,
    "5000-char-from-address": long_from_address,
}

# -- generated MIME -------------------------------------------------------------------

CHARSETS = ["utf-8", "iso-8859-1", "koi8-r", "windows-1251", "utf-7", "x-unknown", "", "gb2312"]
NAMES = ["From", "To", "Cc", "Subject", "Date", "Message-ID", "In-Reply-To", "References"]
NAMES += ["Content-Type", "Content-Transfer-Encoding", "MIME-Version", "Auto-Submitted"]
TYPES = ["text/plain", "text/html", "application/pdf", "message/rfc822", "image/png", "x/y"]
ENCODINGS = ["7bit", "8bit", "base64", "quoted-printable", "uuencode", "x-bogus"]

text = st.text(max_size=80).map(lambda s: s.encode("utf-8", "replace"))
encoded_word = st.builds(
    lambda cs, enc, payload: f"=?{cs}?{enc}?{payload}?=".encode("utf-8", "replace"),
    st.sampled_from(CHARSETS),
    st.sampled_from(["B", "Q", "b", "x"]),
    st.text(max_size=40),
)
address = st.builds(
    lambda name, local, domain: f'"{name}" <{local}@{domain}>'.encode("utf-8", "replace"),
    st.text(max_size=20),
    st.from_regex(r"[A-Za-z0-9._%+-]{0,20}", fullmatch=True),
    st.from_regex(r"[a-z0-9.-]{0,20}", fullmatch=True),
)
value = st.one_of(text, encoded_word, address, st.binary(max_size=60))
header = st.builds(
    lambda name, v: name.encode() + b": " + v,
    st.sampled_from(NAMES) | st.from_regex(r"[!-9;-~]{1,20}", fullmatch=True),
    value,
)
leaf = st.builds(
    lambda ctype, cs, cte, payload: (
        f"Content-Type: {ctype}; charset={cs}\r\nContent-Transfer-Encoding: {cte}\r\n\r\n".encode()
        + payload
    ),
    st.sampled_from(TYPES),
    st.sampled_from(CHARSETS),
    st.sampled_from(ENCODINGS),
    st.binary(max_size=300),
)


def _multipart(parts: list[bytes], boundary: str, closed: bool) -> bytes:
    b = boundary.encode()
    body = b"".join(b"--" + b + b"\r\n" + p + b"\r\n" for p in parts)
    return (
        b'Content-Type: multipart/mixed; boundary="' + b + b'"\r\n\r\n'
        + body
        + (b"--" + b + b"--\r\n" if closed else b"")
    )  # fmt: skip


body = st.recursive(
    leaf,
    lambda children: st.builds(
        _multipart,
        st.lists(children, max_size=4),
        st.from_regex(r"[A-Za-z0-9'()+_,./:=? -]{0,30}", fullmatch=True),
        st.booleans(),
    ),
    max_leaves=12,
)


@st.composite
def mime_mail(draw: st.DrawFn) -> bytes:
    """Random headers over a random MIME tree, with random line endings, maybe truncated."""
    headers = draw(st.lists(header, max_size=12))
    sender = draw(st.none() | address | st.sampled_from([b"ann@shop.example", b"<b@c.example>"]))
    if sender is not None:  # most real mail has a From: let many reach the binding rules
        headers.insert(draw(st.integers(0, len(headers))), b"From: " + sender)
    eol = draw(st.sampled_from([b"\r\n", b"\n", b"\r"]))
    raw = eol.join(headers) + eol + draw(body).replace(b"\r\n", eol)
    cut = draw(st.none() | st.integers(min_value=0, max_value=len(raw)))
    return raw if cut is None else raw[:cut]


# -- the handler with fakes ------------------------------------------------------------


def fetched(raw: bytes, raw_ref: str | None = None) -> MailFetched:
    return MailFetched.for_mail(
        email_id=f"e{next(_ids)}",
        now=NOW,
        tenant_id=TENANT,
        account_id="acc",
        options=AccountOptions(owner_id="owner", create_customer=True, notify_skipped=True),
        protocol="imap",
        folder="INBOX",
        uidvalidity=1,
        uid=1,
        size=len(raw),
        raw_ref=raw_ref,
    )


def assert_clear_outcome(doc: dict[str, Any], event: object) -> None:
    """Bound to a customer, or skipped with one of the known reasons."""
    assert doc["status"] in ("bound", "skipped"), doc
    if doc["status"] == "bound":
        assert isinstance(event, MailBound) and event.customer_id == doc["customer_id"]
        assert doc["matched_by"] in ("subject_tag", "sender", "created", "thread")
    else:
        assert isinstance(event, MailSkipped) and event.reason == doc["skip_reason"]
        assert doc["skip_reason"] in get_args(SkipReason)


def bind_twice(raw: bytes, *, by_reference: bool = False) -> dict[str, Any]:
    """The handler's outcome, checked; a redelivery must give the same event and document."""
    crm, archive, blobs = FakeCrmDirectory(), FakeEmailArchive(), FakeBlobStore()
    event = fetched(raw)
    payload: bytes | None = raw
    if by_reference:
        ref = blobs.put(f"raw/{event.email_id}", raw, tenant_id=TENANT, content_type="x")
        event, payload = event.model_copy(update={"raw_ref": ref}), None
    ports: dict[str, Any] = {"crm": crm, "archive": archive, "blobs": blobs, "now": NOW}
    ports["accounts"] = FakeAccountDirectory.holding(event)
    [first] = handle_mail_fetched(event, payload, **ports)
    doc = dict(archive.docs[event.email_id])
    assert_clear_outcome(doc, first)
    [again] = handle_mail_fetched(event, payload, **ports)
    assert again == first and archive.docs[event.email_id] == doc
    return doc


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(mime_mail())
def test_generated_mime_ends_bound_or_skipped_with_a_reason(raw: bytes) -> None:
    bind_twice(raw)


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes_end_bound_or_skipped_with_a_reason(raw: bytes) -> None:
    bind_twice(raw)


def test_a_30_mib_message_by_reference_is_bound_with_its_attachment() -> None:
    doc = bind_twice(huge_mail(), by_reference=True)
    assert doc["status"] == "bound" and doc["matched_by"] == "created"
    [attachment] = doc["attachments"]
    assert attachment["size"] == 30 * 1024 * 1024 * 3 // 4


def test_a_message_nested_200_levels_deep_is_bound() -> None:
    doc = bind_twice(deep_mail(200))
    assert doc["status"] == "bound" and doc["from_address"] == "deep@sender.example"


def test_ten_thousand_recipients_and_a_5000_character_from_name_are_bound() -> None:
    for raw in (many_recipients(), long_from()):
        doc = bind_twice(raw)
        assert doc["status"] == "bound", doc
        assert len(doc["from_name"] or "") <= 2_000


def test_a_5000_character_from_address_is_kept_whole_never_cut_into_another() -> None:
    doc = bind_twice(long_from_address())
    # Bound (a customer is made for it) or skipped: both are clear; a cut address is not.
    if doc["status"] == "bound":
        assert doc["from_address"] == "a" * 5_000 + "@sender.example"
