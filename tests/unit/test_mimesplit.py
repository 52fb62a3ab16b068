"""shared.mimesplit builds exactly the stdlib parser's Message tree, or leaves the message to it.

And the other shortcuts of MIME parsing give what the long way gives: shared MIME header
objects, plain From, Subject and Date fields read without the modern parser, and clean_text
reading a window of its text.
"""

from __future__ import annotations

import base64
import quopri
import re
from datetime import UTC, datetime
from email import policy
from email.headerregistry import HeaderRegistry
from email.message import Message
from email.parser import BytesParser
from email.policy import Policy
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from shared import mail, mailparts
from shared.mailheaders import HeaderFactory
from shared.mailparts import clean_text
from shared.mimesplit import parse_bytes
from tests.corpus import FILES, corpus_params, require_corpus
from tests.unit.test_bad_input import mime_mail

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def mail_policy() -> Policy:
    """The policy parse_mail uses, with a fresh header budget."""
    return policy.default.clone(header_factory=HeaderFactory(mail._HEADER_BUDGET))


def tree(msg: Message) -> tuple[Any, ...]:
    """Everything the parser decides about a message, recursively."""
    payload = msg._payload  # type: ignore[attr-defined]
    return (
        type(msg).__name__,
        msg._headers,  # type: ignore[attr-defined]
        msg.get_unixfrom(),
        msg.preamble,
        msg.epilogue,
        msg.get_default_type(),
        [(type(d).__name__, str(d)) for d in msg.defects],
        [tree(part) for part in payload] if isinstance(payload, list) else payload,
    )


def stdlib(raw: bytes) -> Message | None:
    try:
        return BytesParser(policy=mail_policy()).parsebytes(raw)
    except RecursionError:  # parse_mail's own fallback handles it; the fast path declines
        return None


def assert_same_or_declined(raw: bytes) -> bool:
    """The fast parse equals the stdlib's; False when it left the message to the stdlib."""
    fast = parse_bytes(raw, mail_policy())
    if fast is None:
        return False
    expected = stdlib(raw)
    assert expected is not None
    assert tree(fast) == tree(expected)
    return True


def multipart(*parts: bytes, preamble: bytes = b"", epilogue: bytes = b"", eol: bytes = b"\r\n"):
    body = b"".join(b"--BND" + eol + part + eol for part in parts)
    raw = (
        b"From: a@example.com" + eol + b'Content-Type: multipart/mixed; boundary="BND"' + eol + eol
        + preamble + body + b"--BND--" + eol + epilogue
    )  # fmt: skip
    return raw


TEXT = b"Content-Type: text/plain; charset=utf-8\r\n\r\nhello\r\nworld"
BINARY = b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nAAAA\r\n"


@pytest.mark.parametrize(
    "raw",
    [
        b"From: a@example.com\r\nSubject: hi\r\n\r\nbody\r\nmore\r\n",
        b"From: a@example.com\nSubject: folded\n  value\n\nbody",
        b"From: a@example.com\r\n\r\n",
        multipart(TEXT, BINARY),
        multipart(TEXT, preamble=b"This is MIME.\r\n", epilogue=b"after\r\n"),
        multipart(TEXT.replace(b"\r\n", b"\n"), eol=b"\n", epilogue=b"\n\n"),
        multipart(b"\r\nno headers in this part", TEXT),
        multipart(
            b'Content-Type: multipart/alternative; boundary="IN"\r\n\r\n--IN\r\n'
            + TEXT
            + b"\r\n--IN--\r\ninner epilogue",
            BINARY,
        ),
        multipart(TEXT).replace(b"--BND--", b"--BND-- \t"),
        b"From: a@example.com\r\nContent-Type: text/plain\r\n\r\n--BND\r\nnot a part\r\n",
        b"From: 8bit@example.com\r\nSubject: caf\xe9\r\n\r\nbody \xe9\r\n",
        b": no name\r\nFrom: a@example.com\r\n\r\nbody",
        b"From a@example.com Thu Jan  1 00:00:00 2026\r\nSubject: x\r\n\r\nbody",
    ],
)
def test_well_formed_mail_is_split_as_the_stdlib_splits_it(raw: bytes) -> None:
    assert assert_same_or_declined(raw), "the fast path should take this message"


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"From: a@example.com\rSubject: x\r\rbody", "a bare CR is a line break too"),
        (b"From: a@example.com\r\nSubject: x", "no blank line after the fields"),
        (b"Subject: x\r\nFrom a@example.com Thu Jan  1 2026\r\n\r\nbody", "Unix From later"),
        (b"From: a@example.com\r\nbody without a blank line\r\n", "a missing separator"),
        (multipart(TEXT).replace(b"--BND--\r\n", b""), "no close delimiter"),
        (multipart(TEXT).replace(b"--BND\r\n", b"--BND\r\n--BND\r\n", 1), "two delimiters"),
        (multipart(TEXT).replace(b"--BND\r\n", b""), "no start delimiter"),
        (multipart(TEXT).replace(b'boundary="BND"', b""), "no boundary parameter"),
        (multipart(TEXT).replace(b"mixed", b"digest"), "digest parts default to messages"),
        (
            b"From: a@example.com\r\nContent-Type: message/rfc822\r\n\r\nSubject: in\r\n\r\nx",
            "rfc822",
        ),
    ],
)
def test_anything_the_stdlib_must_decide_is_left_to_it(raw: bytes, why: str) -> None:
    assert parse_bytes(raw, mail_policy()) is None, why


@pytest.mark.parametrize("path", corpus_params())
def test_corpus_message_is_split_as_the_stdlib_splits_it(path: Path) -> None:
    assert_same_or_declined(path.read_bytes())


def test_most_of_the_corpus_takes_the_fast_path() -> None:
    require_corpus()
    taken = sum(assert_same_or_declined(path.read_bytes()) for path in FILES)
    assert taken >= len(FILES) * 0.7, f"only {taken} of {len(FILES)} corpus messages"


@FUZZ
@given(mime_mail())
def test_generated_mime_is_split_as_the_stdlib_splits_it(raw: bytes) -> None:
    assert_same_or_declined(raw)


atom = st.from_regex(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,8}", fullmatch=True)
blank = st.sampled_from([" ", "  ", "\t", " \t "])
plain_address = st.builds(
    lambda local, domain: f"{local}@{domain}",
    st.from_regex(r"[a-z0-9+_-]{1,6}(\.[a-z0-9+_-]{1,6}){0,2}", fullmatch=True),
    st.from_regex(r"[a-z0-9-]{1,8}(\.[a-z0-9-]{1,8}){0,2}", fullmatch=True),
)


@st.composite
def from_value(draw: st.DrawFn) -> str:
    address = draw(plain_address)
    edge = draw(st.sampled_from(["", " ", "\t"]))
    if draw(st.booleans()):
        return edge + address + edge
    words = draw(st.lists(atom, max_size=4))
    name = "".join(word + draw(blank) for word in words)
    return f"{edge}{name}<{address}>{edge}"


@FUZZ
@given(from_value())
def test_a_plain_from_field_reads_as_the_modern_parser_reads_it(value: str) -> None:
    header = HeaderRegistry()("From", value)
    expected = [(a.display_name, a.addr_spec) for a in header.addresses]
    fields = mail._Fields(Message(), mail_policy())
    assert mail._modern_pairs(fields, value) == expected
    assert not header.defects and not fields.defects


def test_an_encoded_word_in_from_goes_to_the_modern_parser() -> None:
    fields = mail._Fields(Message(), mail_policy())
    assert mail._modern_pairs(fields, "=?utf-8?q?J=C3=BCrgen?= <j@example.com>") == [
        ("Jürgen", "j@example.com")
    ]


def test_shared_mime_headers_read_as_freshly_parsed_ones() -> None:
    value = 'text/plain; charset="koi8-r"; format=flowed'
    first = HeaderFactory(mail._HEADER_BUDGET)("Content-Type", value)
    again = HeaderFactory(mail._HEADER_BUDGET)("Content-Type", value)
    fresh = HeaderRegistry()("Content-Type", value)
    assert again is first  # one parse for every message that carries the value
    assert (again.content_type, dict(again.params)) == (fresh.content_type, dict(fresh.params))
    assert str(again) == str(fresh)


def test_a_header_over_the_budget_is_read_as_empty_even_when_shared() -> None:
    value = "text/plain"
    HeaderFactory(mail._HEADER_BUDGET)("Content-Type", value)  # now shared
    tight = HeaderFactory(len(value) - 1)
    assert str(tight("Content-Type", value)) == ""


@FUZZ
@given(st.from_regex(r"[\x20-\x7e\t]{0,60}", fullmatch=True).filter(lambda v: "=?" not in v))
def test_printable_ascii_text_reads_as_the_modern_parser_reads_it(value: str) -> None:
    msg = BytesParser(policy=mail_policy()).parsebytes(f"Subject: {value}\r\n\r\n".encode())
    fields = mail._Fields(msg, mail_policy())
    raw = fields.raw("Subject")
    assert raw is not None
    assert fields.text("Subject") == str(HeaderRegistry()("Subject", raw))


@FUZZ
@given(
    st.datetimes(
        min_value=datetime(1900, 1, 2), max_value=datetime(9998, 12, 30), timezones=st.timezones()
    ),
    st.sampled_from(["", " ", "  (comment)", " GMT"]),
)
def test_an_ascii_date_reads_as_the_modern_parser_reads_it(when: datetime, tail: str) -> None:
    value = format_datetime(when.replace(microsecond=0)) + tail
    msg = BytesParser(policy=mail_policy()).parsebytes(f"Date: {value}\r\n\r\n".encode())
    modern = HeaderRegistry()("Date", value).datetime
    assume(modern is not None)  # some historic zones have offsets in seconds: no RFC date
    expected = (modern if modern.tzinfo else modern.replace(tzinfo=UTC)).astimezone(UTC)
    assert mail._date(mail._Fields(msg, mail_policy())) == expected


def clean_text_whole(text: str, limit: int) -> str:
    """clean_text as it was: every word of the text found, kept while under the limit."""
    words: list[str] = []
    total = 0
    for match in re.finditer(r"[^\s\x00-\x1f\x7f-\x9f]+", text):
        if total >= limit:
            break
        words.append(match.group())
        total += len(words[-1]) + 1
    return re.sub("[\ud800-\udfff]", "\ufffd", " ".join(words))[:limit]


word_or_gap = st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=["Zs", "Cc"]), min_size=1, max_size=30),
    st.text(alphabet=" \t\r\n\x00\x1f\x85\xa0\u2003", min_size=1, max_size=40),
    st.sampled_from(["\ud800", "\udcff", "\ufffd"]),
)


@FUZZ
@given(st.lists(word_or_gap, max_size=400).map("".join), st.integers(0, 600))
def test_clean_text_keeps_what_reading_every_word_kept(text: str, limit: int) -> None:
    assert clean_text(text, limit) == clean_text_whole(text, limit)


def test_clean_text_reads_on_past_a_long_gap() -> None:
    text = "a" + " " * 50_000 + "bc " + "d" * 10_000
    assert clean_text(text, 3) == clean_text_whole(text, 3) == "a b"
    assert clean_text(text, 8) == clean_text_whole(text, 8) == "a bc ddd"


# -- the preview decodes only the start of a body ---------------------------------------------
BODY_CHARSETS = ["utf-8", "koi8-r", "shift_jis", "iso-8859-1", "us-ascii", None]
ENCODE = {"base64": base64.encodebytes, "quoted-printable": quopri.encodestring, "8bit": bytes}


def text_part(data: bytes, charset: str | None, cte: str) -> Message:
    """A text/plain part as parse_mail reads it: `data` in `charset`, encoded with `cte`."""
    param = f"; charset={charset}" if charset else ""
    head = f"Content-Type: text/plain{param}\r\nContent-Transfer-Encoding: {cte}\r\n\r\n"
    return BytesParser(policy=mail_policy()).parsebytes(head.encode() + ENCODE[cte](data))


def preview_whole(part: Message, limit: int) -> str:
    """The preview as it was: the whole body decoded, then cleaned."""
    return clean_text(mailparts._part_text(part), limit)


body_text = st.lists(
    st.one_of(
        st.sampled_from(["Здравствуйте, ", "ご注文の配送日", "Grüße ", "hello ", "\n", "  \t"]),
        st.text(min_size=1, max_size=20),
    ),
    max_size=3000,
).map("".join)


@FUZZ
@given(
    body_text,
    st.sampled_from(BODY_CHARSETS),
    st.sampled_from(sorted(ENCODE)),
    st.integers(0, 700),
)
def test_the_preview_of_a_valid_body_is_what_decoding_it_whole_gave(
    text: str, charset: str | None, cte: str, limit: int
) -> None:
    try:
        data = text.encode(charset or "utf-8")
    except UnicodeEncodeError:
        assume(False)
        return
    part = text_part(data, charset, cte)
    assert mailparts._plain_preview(part, limit) == preview_whole(part, limit)


SENTENCES = {
    "koi8-r": "Здравствуйте, где мой заказ? ",
    "shift_jis": "ご注文の配送日について。",
    "utf-8": "Grüße aus München. ",
}


@pytest.mark.parametrize("cte", sorted(ENCODE))
@pytest.mark.parametrize("charset", sorted(SENTENCES))
def test_a_long_body_is_read_in_its_charset_up_to_where_the_preview_ends(
    cte: str, charset: str
) -> None:
    start = SENTENCES[charset] * 2000  # well past the first window
    part = text_part(start.encode(charset), charset, cte)
    assert mailparts._plain_preview(part, 500) == preview_whole(part, 500)
    assert mailparts._plain_preview(part, 500) == clean_text(start, 500)
    # Only the start is decoded: bytes the charset cannot read, far on, do not change it
    # (decoded whole, the body fell back to another charset).
    broken = text_part(start.encode(charset) + b"\xff\x80\x81\xfe" * 10, charset, cte)
    assert mailparts._plain_preview(broken, 500) == clean_text(start, 500)


@pytest.mark.parametrize("path", corpus_params())
def test_the_corpus_previews_are_what_decoding_whole_gave(path: Path) -> None:
    try:
        msg, _ = mail._parse_bytes(path.read_bytes(), mail_policy())
    except mail.MailParseError:  # an empty file: nothing to preview
        return
    for part in msg.walk():
        if part.get_content_type() == "text/plain" and not part.is_multipart():
            assert mailparts._plain_preview(part, 500) == preview_whole(part, 500)
