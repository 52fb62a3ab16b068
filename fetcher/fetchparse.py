"""A fast reader for the FETCH responses the fetcher asks for; anything else is left to
imapclient.

imapclient's parser lexes every response byte by byte in Python: 100 us per message for the
size fetch (UID, RFC822.SIZE, INTERNALDATE and the Message-ID header), 30 us for a body. The
fetcher reads these few items in the shapes servers send them; `parse_fetch` reads just those
with a handful of regular expressions and gives what imapclient's `parse_fetch_response`
gives (with `normalise_times=False`, UIDs as keys). For any other shape (an unsolicited FLAGS
update, a section sent as a quoted string or NIL, an item it does not know) it returns None
and the caller uses imapclient's parser on the whole response.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from imapclient.datetime_util import parse_to_datetime

# `seq (` at the start of a message's response.
_START = re.compile(rb"(\d+) \(")
# One item before a literal or the closing parenthesis: a number, or INTERNALDATE's string.
_ITEM = re.compile(rb' ?(?:(UID|RFC822\.SIZE) (\d+)|(INTERNALDATE) "([^"\\]*)")', re.IGNORECASE)
# The section whose value is the literal that follows: `BODY[...] {n}` (BODY.PEEK is sent
# back as BODY; an origin octet `<0>` is kept in the key, as imapclient keeps it).
_LITERAL = re.compile(rb" ?(BODY\[[^\]]*\](?:<\d+>)?) \{(\d+)\}", re.IGNORECASE)
_END = re.compile(rb"\) *")
# INTERNALDATE: `dd-Mon-yyyy hh:mm:ss +zzzz`, the day maybe space-padded.
_DATE = re.compile(
    rb" ?(\d{1,2})-([A-Za-z]{3})-([1-9]\d{3}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)"
)
_MONTHS = {
    m: i for i, m in enumerate(b"jan feb mar apr may jun jul aug sep oct nov dec".split(), 1)
}

Response = Sequence[bytes | tuple[bytes, bytes]]


def parse_fetch(data: Response) -> dict[int, dict[bytes, Any]] | None:
    """{uid: {item: value, b"SEQ": seq}} for a response of known shape; None otherwise."""
    out: dict[int, dict[bytes, Any]] = {}
    pieces = iter(data)
    for piece in pieces:
        fields = _message(piece, pieces)
        uid = fields.pop(b"UID", None) if fields is not None else None
        if fields is None or uid is None or uid in out:
            return None
        out[uid] = fields
    return out


def _message(
    piece: bytes | tuple[bytes, bytes], pieces: Iterator[bytes | tuple[bytes, bytes]]
) -> dict[bytes, Any] | None:
    """One message's items: its first piece, and those after each literal it holds."""
    text, literal = piece if isinstance(piece, tuple) else (piece, None)
    start = _START.match(text)
    if start is None:
        return None
    fields: dict[bytes, Any] = {b"SEQ": int(start.group(1))}
    pos = start.end()
    while True:
        while item := _ITEM.match(text, pos):
            number, date = item.group(2), item.group(4)
            if number is not None:
                fields[item.group(1).upper()] = int(number)
            else:
                fields[b"INTERNALDATE"] = internal_date(date)
            pos = item.end()
        if literal is None:
            return fields if _END.fullmatch(text, pos) else None
        section = _LITERAL.fullmatch(text, pos)
        if section is None or int(section.group(2)) != len(literal):
            return None
        fields[section.group(1).upper()] = literal
        following = next(pieces, None)
        if following is None:
            return None
        text, literal = following if isinstance(following, tuple) else (following, None)
        pos = 0


def internal_date(text: bytes) -> datetime | None:
    """An INTERNALDATE as imapclient reads it (normalise_times=False): aware, None when
    unreadable."""
    m = _DATE.fullmatch(text)
    month = _MONTHS.get(m.group(2).lower()) if m else None
    if m is None or month is None:
        return _imapclient_date(text)
    day, _, year, hour, minute, second, sign, tz_hours, tz_minutes = m.groups()
    offset = timedelta(hours=int(tz_hours), minutes=int(tz_minutes))
    try:
        zone = timezone(-offset if sign == b"-" else offset)
        return datetime(
            int(year), month, int(day), int(hour), int(minute), int(second), tzinfo=zone
        )
    except ValueError:  # out of range: whatever imapclient makes of it
        return _imapclient_date(text)


def _imapclient_date(text: bytes) -> datetime | None:
    try:
        value: datetime = parse_to_datetime(text, normalise=False)
    except ValueError:
        return None
    return value
