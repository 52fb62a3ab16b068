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
    """`Parser(policy=policy).parsestr(text)`, or None if it must make that call itself.

    The text is read where it lies (by offsets): only a leaf part's body is copied out of it,
    as its payload, so a large mail is held about twice (the text and its leaf parts' bodies),
    not once more per level of nesting.
    """
    if "\r" in text and _BARE_CR.search(text):
        return None
    try:
        return _message(text, 0, len(text), policy, 0)
    except _NotSimpleError:
        return None


def _message(
    text: str, start: int, end: int, policy: Policy, depth: int, *, part: bool = False
) -> Message:
    """The message in text[start:end]; a `part` of a multipart less the newline before the
    next delimiter, which belongs to the delimiter (RFC 2046)."""
    if depth > _MAX_DEPTH:
        raise _NotSimpleError
    factory = policy.message_factory or Message
    msg: Message = factory(policy=policy)
    body_start = _read_headers(msg, text, start, end, policy)
    ctype = msg.get_content_type()
    maintype = ctype.partition("/")[0]  # get_content_maintype, without reading the field again
    if ctype == "message/delivery-status" or maintype == "message":
        raise _NotSimpleError  # an enclosed message, or blocks of fields: the stdlib's own cases
    if maintype == "multipart":
        if ctype == "multipart/digest":
            raise _NotSimpleError  # its parts default to message/rfc822
        _read_parts(msg, text, body_start, end, policy, depth)
        if part:
            msg.epilogue = _without_eol(msg.epilogue) if msg.epilogue else None
    else:
        stop = end - _eol_length(text, body_start, end) if part else end
        msg.set_payload(text[body_start:stop])
    return msg


def _read_headers(msg: Message, text: str, start: int, end: int, policy: Policy) -> int:
    """Set the fields of the header block at text[start:end] on `msg`; return where its body
    starts (after the blank line). A block not ended by a blank line, or with a Unix From
    line but first, is not simple.
    """
    lines: list[str] = []
    pos = start
    while True:
        eol = text.find("\n", pos, end)
        if eol < 0:
            raise _NotSimpleError  # the fields run to the end of the text
        line = text[pos : eol + 1]
        pos = eol + 1
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


def _read_parts(msg: Message, text: str, start: int, end: int, policy: Policy, depth: int) -> None:
    """A multipart's preamble, parts and epilogue, as the stdlib cuts its body text[start:end]."""
    boundary = msg.get_boundary()
    if boundary is None or "\n" in boundary or "\r" in boundary:
        raise _NotSimpleError
    if str(msg.get("content-transfer-encoding", "8bit")).lower() not in _MULTIPART_CTE:
        policy.handle_defect(msg, errors.InvalidMultipartContentTransferEncodingDefect())
    delimiters = _Delimiters(text, end, boundary)
    found = delimiters.next(start)
    if found is None or found[1]:
        raise _NotSimpleError  # no start boundary
    if found[0] > start:
        msg.preamble = _without_eol(text[start : found[0]])
    while True:
        part_start = found[2]
        following = delimiters.next(part_start)
        if following is None or following[0] == part_start:
            raise _NotSimpleError  # no close boundary, or two delimiters in a row
        msg.attach(_message(text, part_start, following[0], policy, depth + 1, part=True))
        found = following
        if found[1]:
            break
    msg.epilogue = text[found[2] : end]


class _Delimiters:
    """The lines of a body (in `text`, up to `end`) that are its delimiter (`--boundary`) or
    close delimiter."""

    def __init__(self, text: str, end: int, boundary: str) -> None:
        self._text = text
        self._end = end
        self._dashes = "--" + boundary

    def next(self, pos: int) -> tuple[int, bool, int] | None:
        """The first delimiter line from `pos` (a line start) on: where it starts, whether it
        closes, and where the line after it starts."""
        dashes = self._dashes
        at = pos if self._text.startswith(dashes, pos, self._end) else self._line_from(pos)
        while at >= 0:
            tail = _DELIMITER_TAIL.match(self._text, at + len(dashes), self._end)
            if tail is not None:
                return at, tail.group(1) is not None, tail.end()
            at = self._line_from(at)
        return None

    def _line_from(self, pos: int) -> int:
        """The start of the next line after `pos` that begins with `--boundary`, or -1."""
        found = self._text.find("\n" + self._dashes, pos, self._end)
        return found + 1 if found >= 0 else -1


def _eol_length(text: str, start: int, end: int) -> int:
    """The length of the CRLF, CR or LF that ends text[start:end] (0: none)."""
    if text.endswith("\r\n", start, end):
        return 2
    return 1 if text.endswith(("\r", "\n"), start, end) else 0


def _without_eol(text: str) -> str:
    """`text` less one final CRLF, CR or LF."""
    if text.endswith("\r\n"):
        return text[:-2]
    return text[:-1] if text.endswith(("\r", "\n")) else text
