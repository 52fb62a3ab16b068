"""Unit tests of shared.mail: headers, senders, order tags, preview, attachments, hostile input."""

import base64
import binascii
import dataclasses
import email.message
import random
import re
from datetime import UTC, datetime

import pybase64
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.mail import (
    Attachment,
    MailParseError,
    ParsedMail,
    extract_order_tags,
    mail_fingerprint,
    normalize_address,
    parse_mail,
)
from shared.mailparts import _WORDS, _decoded_payload, b64_in_blocks, words
from tests.conftest import make_mail

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def message(*fields: str, body: str = "Hello.") -> bytes:
    """A message from header lines and a body, with CRLF line ends."""
    text = "\n".join(fields) + "\n\n" + body
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")


def simple(*fields: str, body: str = "Hello.") -> bytes:
    """A message with the usual From and Subject, unless the test gives its own."""
    given_names = {field.split(":", 1)[0].lower() for field in fields}
    usual = [
        f
        for f in ("From: a@example.com", "Subject: s")
        if f[: f.index(":")].lower() not in given_names
    ]
    return message(*usual, *fields, body=body)


def multipart(ctype: str, *parts: str) -> bytes:
    """A multipart message whose parts are given as raw text (headers, blank line, body)."""
    body = "".join(f"--XYZ\n{part}\n" for part in parts) + "--XYZ--\n"
    return simple(f'Content-Type: {ctype}; boundary="XYZ"', body=body)


def b64(text: str, charset: str = "utf-8") -> str:
    return base64.b64encode(text.encode(charset)).decode("ascii")


def nested(depth: int) -> bytes:
    """`depth` levels of multipart/mixed around one text part."""
    head = "".join(
        f'Content-Type: multipart/mixed; boundary="b{i}"\n\n--b{i}\n' for i in range(depth)
    )
    tail = "".join(f"--b{i}--\n" for i in reversed(range(depth)))
    text = "From: deep@example.com\nSubject: deep\n" + head
    return (text + "Content-Type: text/plain\n\nhello deep\n" + tail).encode("ascii")


# --- order tags -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "tags"),
    [
        ("Re: [#3112] my order", ("3112",)),
        ("[#3112A]", ("3112A",)),
        ("[#2024-17] delivery", ("2024-17",)),
        ("question about [#A/7]", ("A/7",)),
        ("[#a_b-C/9]", ("a_b-C/9",)),
        ("AW: Fwd: [#1] and [#2], again [#1]", ("1", "2")),
        ("[#12][#13]", ("12", "13")),
        ("[[#12]]", ("12",)),
        ("[# 12]", ()),
        ("[#12 ]", ()),
        ("[#1 2]", ()),
        ("[#]", ()),
        ("[3112]", ()),
        ("#3112", ()),
        ("[#12", ()),
        ("[#12.5]", ()),
        ("[#" + "9" * 64 + "]", ("9" * 64,)),
        ("[#" + "9" * 65 + "]", ()),
        ("[#ü1]", ()),
        ("", ()),
    ],
)
def test_extract_order_tags(subject: str, tags: tuple[str, ...]) -> None:
    assert extract_order_tags(subject) == tags


TAG_NUMBER = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_/",
    min_size=1,
    max_size=64,
)
TAG_FREE_TEXT = st.text(st.characters(exclude_characters="[]"), max_size=30)


@FUZZ
@given(numbers=st.lists(TAG_NUMBER, max_size=6), fillers=st.lists(TAG_FREE_TEXT, min_size=7))
def test_every_inserted_tag_is_found(numbers: list[str], fillers: list[str]) -> None:
    subject = fillers[0] + "".join(f"[#{n}]{f}" for n, f in zip(numbers, fillers[1:], strict=False))
    assert extract_order_tags(subject) == tuple(dict.fromkeys(numbers))


@FUZZ
@given(st.text(alphabet=st.sampled_from("[]# #aZ09-_/.x"), max_size=80) | st.text(max_size=80))
def test_only_valid_tags_are_found(subject: str) -> None:
    for tag in extract_order_tags(subject):
        assert re.fullmatch(r"[A-Za-z0-9_/-]{1,64}", tag)
        assert f"[#{tag}]" in subject


@pytest.mark.parametrize(
    ("subject_field", "subject", "tags"),
    [
        (f"Subject: =?utf-8?B?{b64('Ihre Bestellung [#3112] ist da')}?=", None, ("3112",)),
        ("Subject: =?utf-8?Q?Re:_[#31?= =?utf-8?Q?12]_=C3=BCber?=", "Re: [#3112] über", ("3112",)),
        (f"Subject: AW: Fwd: =?koi8-r?B?{b64('Заказ [#A/7]', 'koi8-r')}?=", None, ("A/7",)),
        (
            "Subject: Re:\r\n  [#2024-17]   folded\r\n\tsubject",
            "Re: [#2024-17] folded subject",
            None,
        ),
    ],
)
def test_tags_are_read_from_the_decoded_subject(
    subject_field: str, subject: str | None, tags: tuple[str, ...] | None
) -> None:
    parsed = parse_mail(simple(subject_field))
    if subject is not None:
        assert parsed.subject == subject
    if tags is not None:
        assert extract_order_tags(parsed.subject) == tags


# --- addresses ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("JOHN@Example.COM", "john@example.com"),
        ("  <John@Example.com>  ", "john@example.com"),
        ("user@bücher.de", "user@xn--bcher-kva.de"),
        ("user@BÜCHER.DE", "user@xn--bcher-kva.de"),
        ("user@xn--bcher-kva.de", "user@xn--bcher-kva.de"),
        ("jdöe@mächine.example", "jdöe@xn--mchine-bua.example"),
        ("user@example.com.", "user@example.com"),
        ('"a@b"@example.com', '"a@b"@example.com'),
        ("user@[192.0.2.1]", "user@[192.0.2.1]"),
        ("no-at-sign", None),
        ("@example.com", None),
        ("user@", None),
        ("user@.", None),
        ("", None),
        ("   ", None),
        ("<>", None),
        ("john doe@example.com", None),
        ("john@exa mple.com", None),
        ("john\t@example.com", None),
        ("john@example.com\x00", None),
        ("jo\u202ehn@example.com", None),
        ("a@b@example.com", None),
        ("a,b@example.com", None),
        ("user@" + "ü" * 70 + ".de", None),
    ],
)
def test_normalize_address(value: str, expected: str | None) -> None:
    assert normalize_address(value) == expected


@FUZZ
@given(
    st.text(max_size=40)
    | st.builds(lambda a, b: f"{a}@{b}", st.text(max_size=15), st.text(max_size=15))
    | st.emails().map(str.upper)
)
def test_normalize_address_is_idempotent_and_lower_case(value: str) -> None:
    once = normalize_address(value)
    if once is not None:
        assert normalize_address(once) == once
        assert once == once.lower()
        assert "@" in once


@pytest.mark.parametrize(
    ("from_fields", "address", "name", "addresses"),
    [
        (["From: JOHN.Doe@Example.COM"], "john.doe@example.com", None, None),
        (
            ['From: "Doe, John \\"JD\\"" <JOHN@Example.COM>'],
            "john@example.com",
            'Doe, John "JD"',
            ("john@example.com",),
        ),
        (
            ["From: Ann <ann@example.com>, bob@example.org, Ann <ANN@example.com>"],
            "ann@example.com",
            "Ann",
            ("ann@example.com", "bob@example.org"),
        ),
        (
            ["From: first@example.com", "From: Second <second@example.com>"],
            "first@example.com",
            None,
            ("first@example.com", "second@example.com"),
        ),
        (
            ["From: =?utf-8?Q?J=C3=B8rn_St=C3=B8ylen?= <jorn@example.no>"],
            "jorn@example.no",
            "Jørn Støylen",
            None,
        ),
        (
            ["From: =?utf-8?Q?Doe=2C_Jane?= <jane@example.com>"],
            "jane@example.com",
            "Doe, Jane",
            None,
        ),
        (["From: Müller <info@bücher.de>"], "info@xn--bcher-kva.de", "Müller", None),
        (
            ["From: Pete(A wonderful \\) chap) <pete(his account)@silly.test(his host)>"],
            "pete@silly.test",
            "Pete",
            None,
        ),
        (["From: Big Bug bb@bug.com"], "bb@bug.com", None, None),
        (["From: MAILER-DAEMON (Mail Delivery System)"], None, None, ()),
        (["From: undisclosed-recipients:;"], None, None, ()),
        (["From:"], None, None, ()),
        ([], None, None, ()),
    ],
)
def test_sender(
    from_fields: list[str], address: str | None, name: str | None, addresses: tuple[str, ...] | None
) -> None:
    parsed = parse_mail(message(*from_fields, "Subject: s"))
    assert parsed.from_address == address
    assert parsed.from_name == name
    if addresses is not None:
        assert parsed.from_addresses == addresses
    assert parsed.from_addresses[:1] == ((address,) if address else ())


def test_sender_in_raw_utf8_headers() -> None:
    raw = 'From: "Jöhn Doe" <JDöe@Mächine.example>\r\nSubject: Säying Hello\r\n\r\nbody'.encode()
    parsed = parse_mail(raw)
    assert parsed.from_address == "jdöe@xn--mchine-bua.example"
    assert parsed.from_name == "Jöhn Doe"
    assert parsed.subject == "Säying Hello"


# --- other header fields --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("Date: Fri, 21 Nov 1997 09:55:06 -0600", datetime(1997, 11, 21, 15, 55, 6, tzinfo=UTC)),
        ("Date: Fri, 21 Nov 1997 09:55:06 -0000", datetime(1997, 11, 21, 9, 55, 6, tzinfo=UTC)),
        ("Date: 21 Nov 97 09:55:06 GMT", datetime(1997, 11, 21, 9, 55, 6, tzinfo=UTC)),
        (
            "Date: Thu, 13 Feb 1969 23:32 -0330 (Newfoundland Time)",
            datetime(1969, 2, 14, 3, 2, tzinfo=UTC),
        ),
        (
            "Date: Fri, 21 Nov 1997 09(comment):   55  :  06 -0600",
            datetime(1997, 11, 21, 15, 55, 6, tzinfo=UTC),
        ),
        ("Date: yesterday, around noon", None),
        ("Date: Fri, 31 Dec 9999 23:59:59 -1200", None),
        ("Date: Mon, 32 Jan 2020 00:00:00 +0000", None),
        ("Date:", None),
        ("X-No-Date: here", None),
    ],
)
def test_date(field: str, expected: datetime | None) -> None:
    parsed = parse_mail(simple(field))
    assert parsed.date == expected
    if parsed.date is not None:
        assert parsed.date.utcoffset() is not None
        assert parsed.date.tzinfo == UTC


@pytest.mark.parametrize(
    ("fields", "message_id", "in_reply_to", "references"),
    [
        (["Message-ID: <abc@example.com>"], "abc@example.com", (), ()),
        (["Message-ID:   < abc @ example.com >  "], "abc@example.com", (), ()),
        (["Message-ID: abc@example.com"], "abc@example.com", (), ()),
        (["Message-ID: <>"], None, (), ()),
        ([], None, (), ()),
        (
            ["In-Reply-To: <p@x>", "References: <r@x>\r\n <p@x> <r@x>"],
            None,
            ("p@x",),
            ("r@x", "p@x"),
        ),
        (["In-Reply-To: Your message of Monday <p@x> (John)"], None, ("p@x",), ()),
        (["In-Reply-To: p@x"], None, ("p@x",), ()),
        (["In-Reply-To:", "References: junk without ids"], None, (), ()),
    ],
)
def test_message_ids(
    fields: list[str],
    message_id: str | None,
    in_reply_to: tuple[str, ...],
    references: tuple[str, ...],
) -> None:
    parsed = parse_mail(simple(*fields))
    assert parsed.message_id == message_id
    assert parsed.in_reply_to == in_reply_to
    assert parsed.references == references


@pytest.mark.parametrize(
    ("field", "subject"),
    [
        ("Subject: plain", "plain"),
        ("Subject:   lots \t of\r\n   space  ", "lots of space"),
        ("Subject: =?iso-8859-1?Q?Gr=FC=DFe?=", "Grüße"),
        ("Subject: =?utf-8?B?w7xiZXI=?= =?utf-8?B?w7xiZXI=?=", "überüber"),
        (f"Subject: =?ks_c_5601-1987?B?{b64('똠방각하', 'cp949')}?=", "똠방각하"),
        ("Subject: =?unicode-1-1-utf-7?Q?+AOk-t+AOk-?=", "été"),
        ("Subject: =?x-no-such-charset?Q?abc?=", "abc"),
        ("Subject: =?NONE?B?VEVTVA=?=", "TEST"),
        ("Subject: =?utf-8?B?!!!not base64?=", "!!!not base64"),
        ("Subject: =?utf-8?Q?caf=E9?=", "caf\ufffd"),
        ("Subject: =?zlib?B?eJzLSM3JyQcABiwCFQ==?=", None),
        ("Subject: a\x00b\x1bc", "a b c"),
        ("Subject:", ""),
    ],
)
def test_subject(field: str, subject: str | None) -> None:
    parsed = parse_mail(simple(field))
    parsed.subject.encode("utf-8")  # clean Unicode whatever the charset said
    if subject is not None:
        assert parsed.subject == subject


def test_missing_subject_is_empty() -> None:
    assert parse_mail(message("From: a@example.com")).subject == ""


def test_subject_in_raw_8bit_legacy_charset() -> None:
    raw = b"From: a@example.com\r\nSubject: Forma\xe7\xe3o Ver\xe3o \x80 5\r\n\r\nbody"
    assert parse_mail(raw).subject == "Formação Verão € 5"


# --- auto replies ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (simple("Auto-Submitted: auto-replied"), "auto-submitted: auto-replied"),
        (
            simple("Auto-Submitted: Auto-Generated; owner-email=x@y"),
            "auto-submitted: auto-generated",
        ),
        (simple("Auto-Submitted: no"), None),
        (simple("Auto-Submitted: No (a person wrote this)"), None),
        (simple("X-Autoreply: yes"), "x-autoreply"),
        (simple("X-Autorespond: Out of office"), "x-autorespond"),
        (simple("Precedence: bulk"), "precedence: bulk"),
        (simple("Precedence: JUNK"), "precedence: junk"),
        (simple("Precedence: list"), "precedence: list"),
        (simple("Precedence: first-class"), None),
        (
            multipart(
                "multipart/report; report-type=delivery-status",
                "Content-Type: text/plain\n\nIt bounced.",
                "Content-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.com\n",
            ),
            "multipart/report",
        ),
        (simple("From: MAILER-DAEMON@mx.example.com"), "sender: mailer-daemon"),
        (simple("From: Mail Delivery <Mailer-Daemon@mx.example.com>"), "sender: mailer-daemon"),
        (simple("From: MAILER-DAEMON (Mail Delivery System)"), "sender: mailer-daemon"),
        (simple("From: Mail Administrator <PostMaster@example.com>"), "sender: postmaster"),
        (simple("From: postmaster.team@example.com"), None),
        (simple("From: Postmaster General <john@example.com>"), None),
        (simple(), None),
    ],
)
def test_auto_reply(raw: bytes, reason: str | None) -> None:
    parsed = parse_mail(raw)
    assert parsed.auto_reply_reason == reason
    assert parsed.is_auto_reply is (reason is not None)


# --- body: preview and attachments ----------------------------------------------------------


HTML = (
    "<html><head><title>Newsletter</title><style>p {color: red}</style>"
    "<script>var x = '<p>hidden</p>';</script></head>"
    "<body><p>Hello&nbsp;&amp; welcome,</p><div>dear <b>Jos&eacute;</b></div>"
    "<!-- a comment --><br>bye &#8364;5</body></html>"
)


@pytest.mark.parametrize(
    ("raw", "preview"),
    [
        (simple(body="Hello,\r\n\r\n  this   is\tthe body.\r\n"), "Hello, this is the body."),
        (
            simple("Content-Type: text/html; charset=utf-8", body=HTML),
            "Hello & welcome, dear José bye €5",
        ),
        (
            multipart(
                "multipart/alternative",
                "Content-Type: text/plain\n\nplain wins",
                "Content-Type: text/html\n\n<p>html loses</p>",
            ),
            "plain wins",
        ),
        (
            multipart(
                "multipart/alternative",
                "Content-Type: text/plain\n\n   \n",
                "Content-Type: text/html\n\n<p>html when plain is empty</p>",
            ),
            "html when plain is empty",
        ),
        (
            multipart(
                "multipart/mixed",
                "Content-Type: multipart/alternative; boundary=IN\n\n--IN\n"
                "Content-Type: text/html\nContent-Transfer-Encoding: quoted-printable\n\n"
                "<b>caf=C3=A9</b>\n--IN--",
                "Content-Type: text/plain; name=notes.txt\n\nan attached text file",
            ),
            "café",
        ),
        (
            simple(
                "Content-Type: text/plain; charset=utf-8",
                "Content-Transfer-Encoding: base64",
                body=b64("Grüße aus Köln"),
            ),
            "Grüße aus Köln",
        ),
        (simple("Content-Type: text/plain; charset=x-unknown", body="caf\u00e9"), "café"),
        (simple("Content-Type: text/html", body="<p>a < b</p><p>c &lt;d&gt;</p>"), "a < b c <d>"),
        (simple("Content-Type: text/html", body="<p>seen</p><!-- never closed <p>x"), "seen"),
        (simple("Content-Type: text/html", body="<p>seen<script>x = 1;"), "seen"),
        (
            simple("Content-Type: text/html", body="<b>he</b>llo<br/>world<img src=x.png>"),
            "hello world",
        ),
        (simple("Content-Type: text/html", body="<!--" * 300_000), ""),
        (simple("Content-Type: text/html", body='<a b="' * 200_000), ""),
        (simple(body=""), ""),
    ],
)
def test_preview(raw: bytes, preview: str) -> None:
    assert parse_mail(raw).preview == preview


@pytest.mark.parametrize(
    ("limit", "expected"), [(0, ""), (5, "one t"), (-3, ""), (500, "one two three")]
)
def test_preview_is_cut_to_preview_chars(limit: int, expected: str) -> None:
    assert parse_mail(simple(body="one   two\nthree"), preview_chars=limit).preview == expected


@pytest.mark.parametrize(
    ("charset", "data", "preview"),
    [
        ("ks_c_5601-1987", "안녕하세요 똠방각하".encode("cp949"), "안녕하세요 똠방각하"),
        ("euc-kr", "똠방각하".encode("cp949"), "똠방각하"),
        ("unicode-1-1-utf-7", "été".encode("utf-7"), "été"),
        ("gb2312", "镕".encode("gb18030"), "镕"),
        ("shift_jis", "①テスト".encode("cp932"), "①テスト"),
        ("iso-8859-1", "“quoted” €".encode("cp1252"), "“quoted” €"),
        ("us-ascii", "naïve".encode(), "naïve"),
        ("garbage-charset-42", "naïve".encode(), "naïve"),
        ("garbage-charset-42", "na\xefve".encode("latin-1"), "naïve"),
        ("utf-8", b"bad \xff byte", "bad \ufffd byte"),
        ("base64", b"not a text codec", "not a text codec"),
        ('"utf-8"', "quoted ü".encode(), "quoted ü"),
        ("utf-16", "\ud800".encode("utf-16", "surrogatepass"), None),
        ("unicode_escape", b"no \\ud800 escapes", "no \\ud800 escapes"),
        ("punycode", b"a" * 200_000 + b"-" + b"b" * 200_000, "a" * 500),
        ("idna", b"xn--bcher-kva", "xn--bcher-kva"),
    ],
)
def test_body_charsets(charset: str, data: bytes, preview: str | None) -> None:
    head = f"From: a@example.com\r\nContent-Type: text/plain; charset={charset}\r\n\r\n"
    parsed = parse_mail(head.encode("ascii") + data)
    if preview is not None:
        assert parsed.preview == preview
    parsed.preview.encode("utf-8")  # no lone surrogates survive


def attachment_of(part: str) -> Attachment:
    raw = multipart("multipart/mixed", "Content-Type: text/plain\n\nsee attached", part)
    (attachment,) = parse_mail(raw).attachments
    return attachment


PDF = base64.b64encode(b"%PDF-1.4 fake").decode("ascii")


@pytest.mark.parametrize(
    ("part", "filename", "content_type"),
    [
        (
            f'Content-Type: application/pdf\nContent-Disposition: attachment; filename="a b.pdf"\n'
            f"Content-Transfer-Encoding: base64\n\n{PDF}",
            "a b.pdf",
            "application/pdf",
        ),
        (
            "Content-Type: application/pdf\nContent-Disposition: attachment;"
            " filename*=utf-8''%C3%9Cbersicht%20%E2%82%AC.pdf\n"
            f"Content-Transfer-Encoding: base64\n\n{PDF}",
            "Übersicht €.pdf",
            "application/pdf",
        ),
        (
            "Content-Type: application/pdf\nContent-Disposition: attachment;\n"
            " filename*0*=utf-8''%C3%9Cber;\n filename*1=sicht.pdf\n"
            f"Content-Transfer-Encoding: base64\n\n{PDF}",
            "Übersicht.pdf",
            "application/pdf",
        ),
        (
            f'Content-Type: application/pdf; name="=?utf-8?B?{b64("Счёт №5.pdf")}?="\n'
            f"Content-Transfer-Encoding: base64\n\n{PDF}",
            "Счёт №5.pdf",
            "application/pdf",
        ),
        (
            f"Content-Type: application/pdf\nContent-Disposition: attachment; filename==?utf-8?B?"
            f"{b64('This is a test.pdf')}?=\nContent-Transfer-Encoding: base64\n\n{PDF}",
            "This is a test.pdf",
            "application/pdf",
        ),
        (
            "Content-Type: text/plain; name=This is a test.txt\n"
            "Content-Disposition: attachment;\n\tfilename=This is a test.txt\n\nHi.",
            "This is a test.txt",
            "text/plain",
        ),
        (
            f"Content-Type: image/png\nContent-Disposition: inline\nContent-ID: <img1>\n"
            f"Content-Transfer-Encoding: base64\n\n{PDF}",
            None,
            "image/png",
        ),
        (
            f"Content-Type: APPLICATION/Octet-Stream\nContent-Transfer-Encoding: base64\n\n{PDF}",
            None,
            "application/octet-stream",
        ),
    ],
)
def test_attachment_names_and_types(part: str, filename: str | None, content_type: str) -> None:
    attachment = attachment_of(part)
    assert attachment.filename == filename
    assert attachment.content_type == content_type
    assert attachment.size == len(attachment.payload)


def test_attachment_payload_is_decoded_and_kept_out_of_repr() -> None:
    attachment = attachment_of(
        "Content-Type: application/pdf; name=x.pdf\nContent-Transfer-Encoding: base64\n\n" + PDF
    )
    assert attachment.payload == b"%PDF-1.4 fake"
    assert attachment.size == 13
    assert "PDF-1.4" not in repr(attachment)


def test_attached_message_is_one_attachment() -> None:
    inner = "From: inner@example.com\nSubject: inner\n\nforwarded body"
    raw = multipart(
        "multipart/mixed",
        "Content-Type: text/plain\n\nsee the forwarded mail",
        "Content-Type: message/rfc822\nContent-Disposition: attachment; filename=fwd.eml\n\n"
        + inner,
    )
    parsed = parse_mail(raw)
    (attachment,) = parsed.attachments
    assert (attachment.filename, attachment.content_type) == ("fwd.eml", "message/rfc822")
    assert b"forwarded body" in attachment.payload
    assert parsed.preview == "see the forwarded mail"


def test_no_attachments_in_a_plain_mail() -> None:
    assert parse_mail(simple()).attachments == ()


def test_boundary_only_the_lenient_parse_reads_is_repaired() -> None:
    body = (
        "------=_NextPart_1\nContent-Type: text/plain\n\nrepaired text\n"
        "------=_NextPart_1\nContent-Type: application/zip; name=a.zip\n\nPK\n"
        "------=_NextPart_1--\n"
    )
    parsed = parse_mail(
        simple("Content-Type: multipart/mixed;\n boundary=----=_NextPart_1", body=body)
    )
    assert parsed.preview == "repaired text"
    assert [a.filename for a in parsed.attachments] == ["a.zip"]


def test_missing_boundary_is_a_defect_not_an_error() -> None:
    parsed = parse_mail(simple("Content-Type: multipart/mixed", body="just text"))
    assert "NoBoundaryInMultipartDefect" in parsed.defects
    assert parsed.preview == "just text"


# --- hostile input --------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [200, 5_000])
def test_deep_nesting_does_not_crash(depth: int) -> None:
    parsed = parse_mail(nested(depth))
    assert parsed.subject == "deep"
    assert parsed.from_address == "deep@example.com"
    assert "NestingTooDeepDefect" in parsed.defects


def test_moderate_nesting_is_read_whole() -> None:
    parsed = parse_mail(nested(20))
    assert parsed.preview == "hello deep"
    assert "NestingTooDeepDefect" not in parsed.defects


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"   \r\n\t ",
        b"just some text, no header",
        b"\xef\xbb\xbf\r\n\r\n",
        b"\r\n\r\nno header",
    ],
)
def test_not_mail_raises_mail_parse_error(raw: bytes) -> None:
    with pytest.raises(MailParseError):
        parse_mail(raw)


@pytest.mark.parametrize(
    "lead",
    [b"\xef\xbb\xbf", b"\r\n", b"\r\n\r\n", b"\n\n", b"\xef\xbb\xbf\r\n", b" \t\r\n\r\n"],
    ids=["bom", "crlf", "two-crlf", "two-lf", "bom-crlf", "blank-spaces"],
)
def test_a_byte_order_mark_or_blank_lines_before_the_fields_are_passed_over(lead: bytes) -> None:
    raw = make_mail("Late <late@example.com>", "[#3112] where is it", "Hello there")
    parsed = parse_mail(lead + raw)
    assert (parsed.from_address, parsed.subject) == ("late@example.com", "[#3112] where is it")
    assert parsed.preview == "Hello there"
    assert parsed.defects == parse_mail(raw).defects


def test_mail_parse_error_is_a_value_error() -> None:
    assert issubclass(MailParseError, ValueError)


@pytest.mark.parametrize(
    "raw",
    [
        simple("Content-Type: text/plain; x=" + "(" * 3_000, body="still here"),
        simple("Content-Type: " + '<("' * 100_000, body="still here"),
        simple("Content-Disposition: inline; x=" + "(" * 3_000, body="still here"),
    ],
)
def test_hostile_content_fields_keep_the_body(raw: bytes) -> None:
    assert parse_mail(raw).preview == "still here"


@pytest.mark.parametrize(
    ("field", "address"),
    [
        ("From: " + "(" * 3_000 + " <a@example.com>", "a@example.com"),
        ("From: " + '<("' * 700_000, None),
        ("From: " + ", ".join(f"u{i}@example.com" for i in range(20_000)), "u0@example.com"),
    ],
)
def test_hostile_from_fields_are_read_in_bounded_time(field: str, address: str | None) -> None:
    assert parse_mail(message(field, "Subject: s")).from_address == address


def test_too_many_parts_keeps_the_header_fields() -> None:
    parts = ["Content-Type: text/plain\n\nx"] * 20_001
    parsed = parse_mail(multipart("multipart/mixed", *parts))
    assert "TooManyPartsDefect" in parsed.defects
    assert (parsed.from_address, parsed.subject) == ("a@example.com", "s")


def test_obsolete_blank_before_colon_is_read() -> None:
    parsed = parse_mail(b"From  : John <jdoe@example.com>\r\nSubject    : Hi\r\n\r\nbody")
    assert (parsed.from_address, parsed.subject) == ("jdoe@example.com", "Hi")


@pytest.mark.slow
def test_a_30_mib_message_parses() -> None:
    blob = bytes(range(256)) * (22 * 4096)
    raw = multipart(
        "multipart/mixed",
        "Content-Type: text/plain\n\nsee attached",
        "Content-Type: application/octet-stream; name=big.bin\n"
        "Content-Transfer-Encoding: base64\n\n" + base64.encodebytes(blob).decode("ascii"),
    )
    assert len(raw) > 29 * 2**20
    parsed = parse_mail(raw)
    assert parsed.attachments[0].size == len(blob)
    assert parsed.size == len(raw)


FIELD_NAMES = [
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "References",
    "Content-Type",
    "Content-Disposition",
    "Content-Transfer-Encoding",
    "Auto-Submitted",
    "X-X",
]
FIELD_VALUES = st.one_of(
    st.binary(max_size=60),
    st.sampled_from(
        [
            b"=?utf-8?B?w7w=?=",
            b"=?bogus?Q?x?=",
            b"=?utf-8?B?%%%?=",
            b"<a@b>",
            b"multipart/mixed",
            b'multipart/mixed; boundary="B"',
            b"base64",
            b"x-uuencode",
            b"attachment; filename*=x'y'%FF",
            b"a@b, c@d",
            b'"q\\"uote" <x@y>',
            b"Fri, 31 Dec 9999 23:59:59 -1200",
            b"(((",
            b"\xff\xfe",
        ]
    ),
)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize(
    "head", [b"", b"From: a@example.com\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"]
)
def test_random_bodies_never_raise_anything_else(seed: int, head: bytes) -> None:
    noise = random.Random(seed).randbytes(65_536)
    assert_parses_or_refuses(head + noise.replace(b"\xfe", b"\n--B\n"))


@FUZZ
@given(st.binary(max_size=2_000))
def test_random_bytes_never_raise_anything_else(raw: bytes) -> None:
    assert_parses_or_refuses(raw)


@FUZZ
@given(
    fields=st.lists(st.tuples(st.sampled_from(FIELD_NAMES), FIELD_VALUES), min_size=1, max_size=8),
    body=st.lists(
        st.sampled_from([b"--B", b"--B--", b"Content-Type: text/html", b"", b"<p>x"])
        | st.binary(max_size=40),
        max_size=12,
    ),
)
def test_random_messages_never_raise_anything_else(
    fields: list[tuple[str, bytes]], body: list[bytes]
) -> None:
    head = b"".join(
        name.encode() + b": " + value.replace(b"\n", b" ") + b"\r\n" for name, value in fields
    )
    assert_parses_or_refuses(head + b"\r\n" + b"\r\n".join(body))


def assert_parses_or_refuses(raw: bytes) -> None:
    try:
        parsed = parse_mail(raw, preview_chars=50)
    except MailParseError:
        return
    assert isinstance(parsed, ParsedMail)
    texts = [parsed.subject, parsed.preview, parsed.from_name or "", parsed.message_id or ""]
    texts += [a.filename or "" for a in parsed.attachments]
    for text in texts:
        text.encode("utf-8")  # clean Unicode, no lone surrogates
    assert len(parsed.preview) <= 50
    assert (
        parsed.from_address is None or normalize_address(parsed.from_address) == parsed.from_address
    )
    assert parsed.date is None or parsed.date.tzinfo == UTC


# --- the record -----------------------------------------------------------------------------


def test_parsed_mail_is_frozen() -> None:
    parsed = parse_mail(simple())
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.subject = "changed"  # type: ignore[misc]


def test_size_is_the_raw_length() -> None:
    raw = simple(body="x" * 1000)
    assert parse_mail(raw).size == len(raw)


def test_fingerprint_is_stable_and_keyed_on_id_size_and_date() -> None:
    raw = simple("Message-ID: <k@example.com>", "Date: Fri, 21 Nov 1997 09:55:06 -0600")
    first, again = parse_mail(raw), parse_mail(raw)
    assert mail_fingerprint(first) == mail_fingerprint(again)
    assert re.fullmatch(r"[0-9a-f]{64}", mail_fingerprint(first))
    others = [
        dataclasses.replace(first, size=first.size + 1),
        dataclasses.replace(first, message_id="other@example.com"),
        dataclasses.replace(first, date=None),
        dataclasses.replace(first, message_id=None),
    ]
    assert len({mail_fingerprint(p) for p in [first, *others]}) == 5
    assert mail_fingerprint(dataclasses.replace(first, subject="ignored")) == mail_fingerprint(
        first
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a" * 64 + "@example.com", "a" * 64 + "@example.com"),
        ("a" * 65 + "@example.com", None),
        ("user@" + "d" * 250 + ".com", None),
    ],
)
def test_addresses_past_the_rfc_5321_limits_are_refused(value: str, expected: str | None) -> None:
    assert normalize_address(value) == expected


_B64_BYTES = st.sampled_from(
    list(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
)
_B64_TEXT = st.lists(
    _B64_BYTES | st.sampled_from(list(b"=\r\n -_*")) | st.integers(0, 127), max_size=200
).map(lambda b: bytes(b).decode("ascii"))


@FUZZ
@given(_B64_TEXT | st.binary(max_size=300).map(lambda b: base64.encodebytes(b).decode()))
def test_a_base64_body_decodes_as_the_email_package_decodes_it(body: str) -> None:
    part = email.message.Message()
    part["Content-Transfer-Encoding"] = "base64"
    part.set_payload(body)
    assert _decoded_payload(part) == part.get_payload(decode=True)


@FUZZ
@given(
    _B64_TEXT | st.binary(max_size=300).map(lambda b: base64.encodebytes(b).decode()),
    st.integers(1, 120),
)
def test_a_base64_body_decoded_in_blocks_is_decoded_as_whole_or_left_whole(
    body: str, block: int
) -> None:
    try:
        whole: bytes | None = pybase64.b64decode(body.encode("ascii"), validate=False)
    except (binascii.Error, ValueError):
        whole = None
    try:
        in_blocks = b64_in_blocks(body, block)
    except (binascii.Error, ValueError):
        assert whole is None  # the last block is refused only where the whole body is
        return
    assert in_blocks is None or in_blocks == whole


@pytest.mark.parametrize("eol", ["\n", "\r\n"])
def test_a_long_base64_attachment_is_decoded_a_block_of_lines_at_a_time(eol: str) -> None:
    data = random.Random(3).randbytes(10_000)
    body = base64.encodebytes(data).decode("ascii").replace("\n", eol)
    assert b64_in_blocks(body, block=1000) == data
    assert b64_in_blocks(body, block=len(body)) is None  # not longer than a block: whole


def test_an_attachment_is_decoded_whole() -> None:
    data = random.Random(7).randbytes(100_000)
    raw = message(
        "From: a@x.org",
        "MIME-Version: 1.0",
        'Content-Type: multipart/mixed; boundary="b"',
        body="--b\nContent-Type: text/plain\n\nHello.\n--b\n"
        "Content-Type: application/pdf\nContent-Transfer-Encoding: base64\n\n"
        + base64.encodebytes(data).decode()
        + "--b--\n",
    )
    [attachment] = parse_mail(raw).attachments
    assert attachment.payload == data and attachment.size == len(data)


@FUZZ
@given(
    st.text(
        st.characters(codec="utf-8")
        | st.sampled_from([chr(c) for c in [*range(0x21), *range(0x7F, 0xA1), 0x2028, 0x3000]])
    )
)
def test_words_split_where_the_pattern_does(text: str) -> None:
    assert words(text) == _WORDS.findall(text)
