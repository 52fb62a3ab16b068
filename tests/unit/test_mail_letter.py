"""The whole letter as parse_mail reads it: bodies, parts, recipients; HTML made safe."""

from __future__ import annotations

import base64
import quopri
import time
from email import policy
from email.message import EmailMessage

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared import mail as mail_module
from shared import mailparts
from shared.htmlsafe import MAX_NESTING_COST, _nesting_cost, safe_html
from shared.mail import Mailbox, parse_mail
from shared.mailbody import html_to_lines
from shared.mailheaders import HeaderFactory
from shared.recipients import MAX_RECIPIENTS

CYRILLIC = "Здравствуйте! Где мой заказ? Ёжик в тумане.\n"
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ENCODE = {"base64": base64.encodebytes, "quoted-printable": quopri.encodestring, "8bit": bytes}


def mail(**headers: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Ann <ann@example.com>"
    msg["Subject"] = "hello"
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    return msg


def with_text(text: str, charset: str = "utf-8", cte: str | None = None) -> bytes:
    msg = mail()
    msg.set_content(text, charset=charset, cte=cte)
    return msg.as_bytes()


# -- the text ---------------------------------------------------------------------------------
def test_the_text_is_kept_whole_however_long() -> None:
    text = CYRILLIC * 5_000  # 230,000 characters
    parsed = parse_mail(with_text(text))
    assert parsed.body.text == text
    assert not parsed.body.text_from_html and parsed.body.html is None
    assert len(parsed.preview) == 500  # the preview is as it was


@pytest.mark.parametrize(
    ("charset", "cte"),
    [
        ("koi8-r", "8bit"),
        ("utf-8", "base64"),
        ("windows-1251", "quoted-printable"),
        ("iso-8859-5", "base64"),
    ],
)
def test_the_text_is_decoded_from_its_charset(charset: str, cte: str) -> None:
    text = CYRILLIC * 300
    assert parse_mail(with_text(text, charset, cte)).body.text == text


def test_line_ends_are_newlines_and_nul_characters_go() -> None:
    raw = b"From: a@example.com\r\nContent-Type: text/plain\r\n\r\none\r\ntwo\x00\rthree\r\n"
    assert parse_mail(raw).body.text == "one\ntwo\nthree\n"


def test_the_preview_of_a_body_that_falls_back_reads_its_start_as_before() -> None:
    # Declared cp1252, written in UTF-8: the whole body reads only as UTF-8 (0x81 far on is
    # no cp1252 character), while the preview reads its start in the declared charset.
    body = ("Grüße\n" * 2000 + "Á").encode()
    head = b"From: a@example.com\r\nContent-Type: text/plain; charset=windows-1252\r\n\r\n"
    parsed = parse_mail(head + body)
    assert parsed.body.text == body.decode()
    assert parsed.preview.startswith("GrÃ¼ÃŸe")


def preview_as_it_was(raw: bytes) -> str:
    """The preview as read before the whole text was kept: each text part's start alone."""
    mail_policy = policy.default.clone(header_factory=HeaderFactory(mail_module._HEADER_BUDGET))
    msg, _ = mail_module._parse_bytes(raw, mail_policy)
    body = mailparts.BodyParts()
    for part, has_children in mailparts.walk_parts(msg, []):
        if not has_children:
            mailparts._sort_part(part, body)
    previews = (mailparts._plain_preview(part, 500) for part in body.plain_parts)
    return next(filter(None, previews), "")


@FUZZ
@given(
    st.lists(
        st.sampled_from(["Здравствуйте, ", "Grüße ", "ご注文 ", "\n", "  "])
        | st.binary(max_size=9),
        max_size=2000,
    ),
    st.sampled_from(["utf-8", "koi8-r", "windows-1252", "shift_jis", "utf-7", "bogus", None]),
    st.sampled_from(sorted(ENCODE)),
)
def test_the_preview_is_what_it_was(
    pieces: list[str | bytes], charset: str | None, cte: str
) -> None:
    data = b"".join(p if isinstance(p, bytes) else p.encode("utf-8") for p in pieces)
    param = f"; charset={charset}" if charset else ""
    head = f"From: a@example.com\r\nContent-Type: text/plain{param}\r\n"
    raw = f"{head}Content-Transfer-Encoding: {cte}\r\n\r\n".encode() + ENCODE[cte](data)
    parsed = parse_mail(raw)
    assert parsed.preview == preview_as_it_was(raw)
    parsed.body.text.encode("utf-8")  # no lone surrogates


def test_an_html_only_mail_gets_a_text_rendering_with_its_line_breaks() -> None:
    msg = mail()
    msg.set_content(
        "<html><head><title>T</title><style>p {color: red}</style></head><body>"
        "<p>Dear Ann,</p><p>your order &amp; invoice:<br>No. 12</p>"
        "<table><tr><td>Tea</td><td>2</td></tr><tr><td>Cake</td><td>1</td></tr></table>"
        "<script>alert(1)</script><div>Bye</div></body></html>",
        subtype="html",
    )
    parsed = parse_mail(msg.as_bytes())
    assert parsed.body.text_from_html
    assert parsed.body.text == "Dear Ann,\n\nyour order & invoice:\nNo. 12\n\nTea 2\nCake 1\n\nBye"
    assert parsed.body.html is not None and "<script>" in parsed.body.html  # as sent
    assert parsed.preview == "Dear Ann, your order & invoice: No. 12 Tea 2 Cake 1 Bye"


def test_an_alternative_keeps_both_bodies() -> None:
    msg = mail()
    msg.set_content("plain words\n")
    msg.add_alternative("<p>html <b>words</b></p>\n", subtype="html")
    parsed = parse_mail(msg.as_bytes())
    assert (parsed.body.text, parsed.body.html) == ("plain words\n", "<p>html <b>words</b></p>\n")
    assert parsed.parts == ()


@pytest.mark.parametrize(
    "markup",
    ["<!--" * 300_000, '<a b="' * 200_000, "<" * 1_000_000, "<div>" * 200_000, "<p>" * 300_000],
)
def test_html_to_lines_reads_hostile_markup_in_linear_time(markup: str) -> None:
    start = time.perf_counter()
    html_to_lines(markup)
    assert time.perf_counter() - start < 3


# -- the parts --------------------------------------------------------------------------------
def related_mail() -> bytes:
    msg = mail()
    msg.set_content("see the logo\n")
    msg.add_alternative('<p>Logo: <img src="cid:logo@shop"></p>\n', subtype="html")
    msg.get_payload()[1].add_related(
        b"\x89PNG fake", maintype="image", subtype="png", cid="<logo@shop>", disposition="inline"
    )
    msg.add_attachment(b"%PDF-1.4", maintype="application", subtype="pdf", filename="bill.pdf")
    return msg.as_bytes()


def test_inline_images_and_attachments_are_parts_with_their_content_ids() -> None:
    parsed = parse_mail(related_mail())
    logo, bill = parsed.parts
    assert (logo.content_type, logo.content_id, logo.disposition) == (
        "image/png",
        "logo@shop",
        "inline",
    )
    assert logo.payload == b"\x89PNG fake"
    assert (bill.filename, bill.content_id, bill.disposition) == ("bill.pdf", None, "attachment")
    assert parsed.body.text == "see the logo\n"
    assert parsed.body.html == '<p>Logo: <img src="cid:logo@shop"></p>\n'


def test_a_text_part_that_is_not_the_body_is_kept_as_a_part() -> None:
    msg = mail()
    msg.make_mixed()
    for words in ("the body\n", "a footer\n", " \n"):
        part = EmailMessage()
        part.set_content(words)
        msg.attach(part)
    parsed = parse_mail(msg.as_bytes())
    assert parsed.body.text == "the body\n"
    [footer] = parsed.parts  # the blank one is no part
    assert (footer.content_type, footer.payload) == ("text/plain", b"a footer\n")
    assert parsed.attachments == ()


# -- the recipients ---------------------------------------------------------------------------
def test_to_cc_and_reply_to_are_read_with_their_names() -> None:
    raw = (
        "From: a@example.com\r\n"
        'To: "Doe, Jane" <Jane@Example.COM>, bob@example.org,\r\n'
        " =?utf-8?b?0JjQstCw0L0=?= <ivan@пример.рф>\r\n"
        "Cc: Shop <shop@example.com>, shop@example.com\r\n"
        "Reply-To: replies@example.com\r\n\r\nhi\r\n"
    ).encode()
    parsed = parse_mail(raw)
    assert parsed.to == (
        Mailbox("jane@example.com", "Doe, Jane"),
        Mailbox("bob@example.org", None),
        Mailbox("ivan@xn--e1afmkfd.xn--p1ai", "Иван"),
    )
    assert parsed.cc == (Mailbox("shop@example.com", "Shop"),)
    assert parsed.reply_to == (Mailbox("replies@example.com", None),)


def test_ten_thousand_recipients_are_cut_to_the_cap_in_bounded_time() -> None:
    everyone = ", ".join(f"Person {i} <p{i}@example.org>" for i in range(10_000))
    raw = b"From: a@example.com\r\nTo: " + everyone.encode() + b"\r\n\r\nhi\r\n"
    start = time.perf_counter()
    parsed = parse_mail(raw)
    assert time.perf_counter() - start < 2
    assert len(parsed.to) == MAX_RECIPIENTS
    assert parsed.to[0] == Mailbox("p0@example.org", "Person 0")


@pytest.mark.parametrize("junk", ["@" * 100_000, "<" * 100_000, '"' * 100_000, "(" * 100_000])
def test_hostile_recipient_fields_are_read_in_bounded_time(junk: str) -> None:
    raw = f"From: a@example.com\r\nTo: {junk}\r\nCc: {junk}\r\n\r\nhi\r\n".encode()
    start = time.perf_counter()
    parsed = parse_mail(raw)
    assert time.perf_counter() - start < 2
    assert parsed.to == parsed.cc == ()


# -- the sanitised HTML -----------------------------------------------------------------------
HOSTILE = (
    "<html><head><title>t</title><style>body{background:url(https://t.example/a)}</style>"
    "<meta http-equiv=refresh content='0;url=https://evil.example'>"
    "<script>alert(1)</script></head><body onload='steal()'>"
    "<p style='color: red; background-image: url(https://t.example/b)'>Hi "
    "<b onclick='steal()'>Ann</b></p><p style='color: blue; position: fixed'>styled</p>"
    "<img src='cid:logo@shop' alt='logo'><img src='https://t.example/pixel.gif'>"
    "<img src='data:image/png;base64,AAAA'><img src=x onerror='steal()'>"
    "<a href='javascript:steal()'>js</a><a href='https://shop.example/order'>order</a>"
    "<form action='https://evil.example'><input name=card><button>Pay</button></form>"
    "<iframe src='https://evil.example'></iframe><svg><image href='https://t.example/c'/></svg>"
    "<table background='https://t.example/d'><tr><td>cell</td></tr></table></body></html>"
)


def test_the_sanitiser_leaves_nothing_active_and_loads_nothing_from_elsewhere() -> None:
    safe = safe_html(HOSTILE).lower()
    for gone in ("<script", "alert", "onload", "onclick", "onerror", "<form", "<input",
                 "<button", "<iframe", "<svg", "<meta", "<style", "javascript:", "url(",
                 "t.example", "data:", "position", "evil.example"):  # fmt: skip
        assert gone not in safe, gone
    assert '<img src="cid:logo@shop" alt="logo">' in safe
    assert '<a href="https://shop.example/order" rel="noopener noreferrer">order</a>' in safe
    assert '<p style="color:blue">styled</p>' in safe
    assert "hi <b>ann</b>" in safe and "<td>cell</td>" in safe


@pytest.mark.parametrize(
    "markup",
    [
        "<div>" * 100_000,
        "".join(f"<b id={i}>" for i in range(20_000)) + "x",
        "<span>" * 50_000 + "</div>" * 50_000,
    ],
)
def test_markup_too_deep_to_sanitise_in_bounded_time_becomes_escaped_text(markup: str) -> None:
    assert _nesting_cost(markup) > MAX_NESTING_COST
    start = time.perf_counter()
    safe = safe_html(markup + "<script>x</script>&lt;b&gt;")
    assert time.perf_counter() - start < 3
    assert safe.startswith("<pre>") and "<script" not in safe and "&lt;b&gt;" in safe


def test_ordinary_markup_is_sanitised_not_flattened() -> None:
    newsletter = "<table>" + "<tr><td><p>row <b>bold</b></p><p>unclosed" * 3_000 + "</table>"
    assert _nesting_cost(newsletter) <= MAX_NESTING_COST
    assert safe_html(newsletter).startswith("<table>")


def test_the_preview_window_is_what_the_body_text_gives() -> None:
    raw = with_text(CYRILLIC * 100, "koi8-r", "8bit")
    parsed = parse_mail(raw)
    assert parsed.preview == mailparts.clean_text(parsed.body.text, 500)
