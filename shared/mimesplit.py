"""The stdlib's MIME parse of well-formed mail, done by cutting the text at boundary lines.

The stdlib's FeedParser reads a message one line at a time through a stack of predicates: about
half of what the binder spends on a mail. `parse_text` builds the same `Message` tree (headers,
payloads, preambles, epilogues, defects) by searching for the header/body separator and the
boundary lines, for mail whose structure leaves no choice to the parser. Anything else, from a
missing close boundary to a bare CR, returns None and is left to the stdlib, whose results the
tests compare with these on the corpus and on generated MIME.
"""

from __future__ import annotations

import re
from email import errors
from email.message import Message
from email.policy import Policy

__all__ = ["parse_bytes", "parse_text"]

_HEADER_LINE = re.compile(r"From |[\041-\071\073-\176]*:|[\t ]")  # the stdlib's headerRE
_BARE_CR = re.compile(r"\r(?!\n)")  # also a line break for the stdlib: not cut here
# What may follow `--boundary` on a delimiter line (the stdlib's boundaryre), no bare CR.
_DELIMITER_TAIL = re.compile(r"(--)?[ \t]*\r?(?:\n|\Z)")
_MULTIPART_CTE = ("7bit", "8bit", "binary")
_MAX_DEPTH = 32  # deeper structures go to the stdlib, which knows how to fail on them


class _NotSimpleError(Exception):
    """Raised where the stdlib would have a choice to make: it parses the message instead."""


def parse_bytes(raw: bytes, policy: Policy) -> Message | None:
    """`BytesParser(policy=policy).parsebytes(raw)`, or None if it must make that call itself."""
    return parse_text(raw.decode("ascii", "surrogateescape"), policy)


def parse_text(text: str, policy: Policy) -> Message | None:
    """`Parser(policy=policy).parsestr(text)`, or None if it must make that call itself."""
    if "\r" in text and _BARE_CR.search(text):
        return None
    try:
        return _message(text, policy, 0)
    except _NotSimpleError:
        return None


def _message(text: str, policy: Policy, depth: int) -> Message:
    if depth > _MAX_DEPTH:
        raise _NotSimpleError
    factory = policy.message_factory or Message
    msg: Message = factory(policy=policy)
    body_start = _read_headers(msg, text, policy)
    body = text[body_start:]
    ctype = msg.get_content_type()
    maintype = ctype.partition("/")[0]  # get_content_maintype, without reading the field again
    if ctype == "message/delivery-status" or maintype == "message":
        raise _NotSimpleError  # an enclosed message, or blocks of fields: the stdlib's own cases
    if maintype == "multipart":
        if ctype == "multipart/digest":
            raise _NotSimpleError  # its parts default to message/rfc822
        _read_parts(msg, body, policy, depth)
    else:
        msg.set_payload(body)
    return msg


def _read_headers(msg: Message, text: str, policy: Policy) -> int:
    """Set the header block's fields on `msg`; return where its body starts (after the blank
    line). A block not ended by a blank line, or with a Unix From line but first, is not simple.
    """
    lines: list[str] = []
    pos = 0
    while True:
        end = text.find("\n", pos)
        if end < 0:
            raise _NotSimpleError  # the fields run to the end of the text
        line = text[pos : end + 1]
        pos = end + 1
        if line in ("\n", "\r\n"):
            break
        if not _HEADER_LINE.match(line) or (line.startswith("From ") and lines):
            raise _NotSimpleError  # not a field, or a Unix From line after the first
        lines.append(line)
    _set_fields(msg, lines, policy)
    return pos


def _set_fields(msg: Message, lines: list[str], policy: Policy) -> None:
    """The stdlib's FeedParser._parse_headers, for a Unix From line only as the first line."""
    name, value = "", []
    if lines and lines[0].startswith("From "):
        msg.set_unixfrom(_without_eol(lines.pop(0)))
    for line in lines:
        if line[0] in " \t":
            if not name:
                policy.handle_defect(msg, errors.FirstHeaderLineIsContinuationDefect(line))
                continue
            value.append(line)
            continue
        if name:
            msg.set_raw(*policy.header_source_parse(value))
            name, value = "", []
        colon = line.find(":")
        if colon == 0:
            msg.defects.append(errors.InvalidHeaderDefect("Missing header name."))
            continue
        name, value = line[:colon], [line]
    if name:
        msg.set_raw(*policy.header_source_parse(value))


def _read_parts(msg: Message, body: str, policy: Policy, depth: int) -> None:
    """A multipart's preamble, parts and epilogue, as the stdlib cuts them."""
    boundary = msg.get_boundary()
    if boundary is None or "\n" in boundary or "\r" in boundary:
        raise _NotSimpleError
    if str(msg.get("content-transfer-encoding", "8bit")).lower() not in _MULTIPART_CTE:
        policy.handle_defect(msg, errors.InvalidMultipartContentTransferEncodingDefect())
    delimiters = _Delimiters(body, boundary)
    found = delimiters.next(0)
    if found is None or found[1]:
        raise _NotSimpleError  # no start boundary
    if found[0]:
        msg.preamble = _without_eol(body[: found[0]])
    while True:
        start = found[2]
        following = delimiters.next(start)
        if following is None or following[0] == start:
            raise _NotSimpleError  # no close boundary, or two delimiters in a row
        part = _message(body[start : following[0]], policy, depth + 1)
        _drop_last_eol(part)
        msg.attach(part)
        found = following
        if found[1]:
            break
    msg.epilogue = body[found[2] :]


class _Delimiters:
    """The lines of a body that are its delimiter (`--boundary`) or close delimiter."""

    def __init__(self, body: str, boundary: str) -> None:
        self._body = body
        self._dashes = "--" + boundary

    def next(self, pos: int) -> tuple[int, bool, int] | None:
        """The first delimiter line from `pos` (a line start) on: where it starts, whether it
        closes, and where the line after it starts."""
        at = pos if self._body.startswith(self._dashes, pos) else self._line_from(pos)
        while at >= 0:
            tail = _DELIMITER_TAIL.match(self._body, at + len(self._dashes))
            if tail is not None:
                return at, tail.group(1) is not None, tail.end()
            at = self._line_from(at)
        return None

    def _line_from(self, pos: int) -> int:
        """The start of the next line after `pos` that begins with `--boundary`, or -1."""
        found = self._body.find("\n" + self._dashes, pos)
        return found + 1 if found >= 0 else -1


def _drop_last_eol(part: Message) -> None:
    """The newline before a delimiter belongs to the delimiter (RFC 2046)."""
    if part.is_multipart():
        part.epilogue = _without_eol(part.epilogue) if part.epilogue else None
        return
    # As stored: get_payload() would decode 8-bit text, and parse fields out of order.
    payload = getattr(part, "_payload", None)
    if isinstance(payload, str):
        part.set_payload(_without_eol(payload))


def _without_eol(text: str) -> str:
    """`text` less one final CRLF, CR or LF."""
    if text.endswith("\r\n"):
        return text[:-2]
    return text[:-1] if text.endswith(("\r", "\n")) else text
