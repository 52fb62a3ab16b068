"""The fetcher's FETCH reader gives what imapclient's parser gives, or hands the response
back; its Message-ID reading agrees with the e-mail package's."""

from __future__ import annotations

import random
from datetime import datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from imapclient.response_parser import parse_fetch_response

from fetcher.fetchparse import Response, internal_date, parse_fetch
from fetcher.imap import _ONE_MESSAGE_ID, message_id_of, parsed_message_id


def imapclient_reads(data: Response) -> dict[int, dict[bytes, Any]]:
    return dict(parse_fetch_response(list(data), False, True))


def same(ours: dict[int, dict[bytes, Any]], theirs: dict[int, dict[bytes, Any]]) -> None:
    """Equal values, and datetimes equal in their zone too (== compares instants only)."""
    assert ours == theirs
    for uid, fields in ours.items():
        mine, other = fields.get(b"INTERNALDATE"), theirs[uid].get(b"INTERNALDATE")
        if isinstance(mine, datetime) and isinstance(other, datetime):
            assert mine.utcoffset() == other.utcoffset()


def size_piece(seq: int, uid: int, size: int, date: str, message_id: bytes) -> list[Any]:
    literal = b"Message-ID: " + message_id + b"\r\n\r\n" if message_id else b"\r\n"
    head = (
        f'{seq} (UID {uid} RFC822.SIZE {size} INTERNALDATE "{date}" '
        f"BODY[HEADER.FIELDS (MESSAGE-ID)] {{{len(literal)}}}"
    ).encode()
    return [(head, literal), b")"]


def test_the_size_fetch_as_dovecot_sends_it() -> None:
    data = [
        *size_piece(1, 5, 12_345, "01-Jan-2026 00:00:00 +0000", b"<a@b>"),
        *size_piece(2, 9, 7, " 3-Feb-2025 13:04:05 -0730", b""),
        *size_piece(3, 11, 1, "28-Nov-2026 23:59:59 +1400", b"<x\r\n y@z>"),
    ]
    ours = parse_fetch(data)
    assert ours is not None and sorted(ours) == [5, 9, 11]
    assert ours[5][b"RFC822.SIZE"] == 12_345 and ours[9][b"SEQ"] == 2
    same(ours, imapclient_reads(data))


def test_bodies_with_the_uid_before_or_after_the_literal() -> None:
    data: list[Any] = [
        (b"1 (UID 7 BODY[] {3}", b"abc"),
        b")",
        (b"2 (BODY[] {5}", b"de\r\nf"),
        b" UID 8)",
        (b"3 (UID 9 BODY[HEADER] {0}", b""),
        b")",
        (b"4 (uid 10 body[]<0> {2}", b"gh"),
        b")",
    ]
    ours = parse_fetch(data)
    assert ours is not None
    assert ours[7][b"BODY[]"] == b"abc" and ours[8][b"BODY[]"] == b"de\r\nf"
    same(ours, imapclient_reads(data))


def test_two_literals_in_one_message() -> None:
    data: list[Any] = [(b"1 (UID 3 BODY[HEADER] {2}", b"h:"), (b" BODY[TEXT] {1}", b"t"), b")"]
    ours = parse_fetch(data)
    assert ours == {3: {b"SEQ": 1, b"BODY[HEADER]": b"h:", b"BODY[TEXT]": b"t"}}
    same(ours, imapclient_reads(data))


def test_a_message_without_a_literal() -> None:
    data = [b'4 (UID 10 RFC822.SIZE 5 INTERNALDATE "01-Jan-2026 00:00:00 +0000")']
    ours = parse_fetch(data)
    assert ours is not None
    same(ours, imapclient_reads(data))


@pytest.mark.parametrize(
    "data",
    [
        [b"5 (FLAGS (\\Seen))"],  # an unsolicited update: no UID, an item it does not read
        [b"4 (UID 10 BODY[] NIL)"],  # a section as NIL
        [b'4 (UID 10 BODY[] "abc")'],  # a section as a quoted string
        [(b"1 (UID 7 BODY[] {4}", b"abc"), b")"],  # a literal of the wrong length
        [(b"1 (UID 7 BODY[] {3}", b"abc")],  # nothing after the literal
        [b"1 (UID 7 RFC822.SIZE 5) junk"],
        [b"1 (UID 7)", b"2 (UID 7)"],  # one UID twice: imapclient merges them
        [b"* 1 FETCH (UID 7)"],
    ],
    ids=["flags", "nil", "quoted", "length", "truncated", "trailing", "uid-twice", "prefix"],
)
def test_any_other_shape_is_handed_back(data: Response) -> None:
    assert parse_fetch(data) is None


@pytest.mark.parametrize(
    "text",
    [
        b"01-Jan-2026 00:00:00 +0000",
        b" 1-jan-2026 00:00:00 +0100",
        b"31-DEC-1999 23:59:59 -1200",
        b"01-Jan-2026 00:00:00 -0000",
        b"01-Jan-2026 00:00:00 +0560",  # minutes over 59 count as they are written
        b"30-Feb-2026 00:00:00 +0000",  # no such day
        b"01-Jan-0099 00:00:00 +0000",  # a two-digit year in four digits
        b"01-Foo-2026 00:00:00 +0000",
        b"Thu, 01 Jan 2026 00:00:00 +0000",  # RFC 5322 form
        b"nonsense",
    ],
)
def test_internal_dates_read_as_imapclient_reads_them(text: bytes) -> None:
    data = [b'1 (UID 2 INTERNALDATE "' + text + b'")']
    theirs = imapclient_reads(data)[2][b"INTERNALDATE"]
    ours = internal_date(text)
    assert ours == theirs
    assert (ours is None) == (theirs is None)
    if isinstance(ours, datetime) and isinstance(theirs, datetime):
        assert ours.utcoffset() == theirs.utcoffset()


MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
_DATES = st.builds(
    lambda d, m, y, h, mi, s, sign, zh, zm: (
        f"{d:2d}-{m}-{y} {h:02d}:{mi:02d}:{s:02d} {sign}{zh:02d}{zm:02d}"
    ),
    st.integers(1, 31),
    st.sampled_from(
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    ),
    st.integers(1970, 2100),
    st.integers(0, 23),
    st.integers(0, 59),
    st.integers(0, 59),
    st.sampled_from("+-"),
    st.integers(0, 14),
    st.sampled_from([0, 30, 45]),
)


@given(
    st.lists(
        st.tuples(st.integers(1, 10**9), st.integers(0, 10**8), _DATES, st.binary(max_size=40)),
        max_size=8,
        unique_by=lambda m: m[0],
    ),
    st.randoms(use_true_random=False),
)
def test_generated_size_fetches_read_as_imapclient_reads_them(
    messages: list[tuple[int, int, str, bytes]], rng: random.Random
) -> None:
    data: list[Any] = []
    for seq, (uid, size, date, message_id) in enumerate(messages, 1):
        data += size_piece(seq, uid, size, date, message_id.replace(b"\r", b"").replace(b"\n", b""))
        if rng.random() < 0.3:
            data.append((f"{seq + 100} (UID {uid + 10**9} BODY[] {{3}}".encode(), b"xyz"))
            data.append(b")")
    ours = parse_fetch(data)
    assert ours is not None
    same(ours, imapclient_reads(data))


@given(
    st.sampled_from([b"Message-ID:", b"message-id:", b"MESSAGE-ID:", b"Message-ID :", b"X:"]),
    st.binary(max_size=60) | st.text("<>@. \t-abc", max_size=40).map(str.encode),
    st.sampled_from([b"\r\n\r\n", b"\r\n", b"\n\n", b"", b"\r\n more\r\n\r\n"]),
)
def test_a_message_id_reads_the_same_by_the_short_way(
    name: bytes, value: bytes, end: bytes
) -> None:
    header = name + value + end
    assert message_id_of(header) == parsed_message_id(header)


def test_the_usual_message_id_block_takes_the_short_way() -> None:
    assert _ONE_MESSAGE_ID.fullmatch(b"Message-ID: <bench-1@bench.example>\r\n\r\n")
    assert (
        message_id_of(b"Message-ID: <bench-1@bench.example>\r\n\r\n") == "<bench-1@bench.example>"
    )
    assert message_id_of(b"Message-ID:   \r\n\r\n") is None
