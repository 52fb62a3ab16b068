"""MIME parsing of incoming mail into the facts the intake needs, robust to any input."""

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from email import errors, policy
from email.message import Message
from email.parser import BytesParser
from email.policy import EmailPolicy
from email.utils import getaddresses, parsedate_to_datetime
from typing import Any

from shared.mailbody import EMPTY_BODY, MailBody, read_mail_body
from shared.mailheaders import MAX_PARSED_FIELD, HeaderFactory, plain_mailbox
from shared.mailparts import (
    Attachment,
    BodyParts,
    clean_text,
    content_type,
    decode_header_text,
    read_body,
    unescape_raw,
)
from shared.mimesplit import parse_bytes
from shared.recipients import Mailbox, read_mailboxes

__all__ = [
    "Attachment",
    "MailBody",
    "MailParseError",
    "Mailbox",
    "ParsedMail",
    "extract_order_tags",
    "mail_fingerprint",
    "normalize_address",
    "parse_mail",
]

_MAX_TEXT = 2_000
_MAX_ID = 998
_MAX_IDS = 100
_MAX_LENIENT = 16_384
_MAX_ID_TEXT = 65_536
# The modern header parser reads a message's fields up to a budget (shared.mailheaders).
_HEADER_BUDGET = 262_144
# More delimiter-like lines than this and the body is not parsed: the stdlib parser spends
# a fraction of a millisecond on every part.
_MAX_DELIMITER_LINES = 20_000
_PLAIN_ASCII = re.compile(r"[^\x00-\x20\x7f<>,;()]*")
_PLAIN_TEXT = re.compile(r"[\x20-\x7e\t]*")
_ORDER_TAG = re.compile(r"\[#([A-Za-z0-9_/-]{1,64})\]")
_ANGLE_ID = re.compile(r"<([^<>]*)>")
_ADDRESS_SEPARATORS = re.compile(r"[\s<>()\[\]\",;:]+")
_OBSOLETE_COLON = re.compile(rb"^([\x21-\x39\x3b-\x7e]+)[ \t]+:", re.MULTILINE)
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
# A byte-order mark or blank lines before the first field: some clients and exports add them.
_LEADING_JUNK = re.compile(rb"(?:\xef\xbb\xbf|[ \t]*\r?\n)+")
_LEADING_JUNK_STARTS = frozenset((b"\xef", b" ", b"\t", b"\r", b"\n"))
_COMMENTS = re.compile(r"\([^()]*\)")
_COLON_SPACE = re.compile(r"\s*:\s*")
_ADDRESS_BREAKERS = frozenset("<>,;()")
_BULK_PRECEDENCE = frozenset({"bulk", "junk", "list"})
_DAEMON_SENDERS = frozenset({"mailer-daemon", "postmaster"})
_CHARSET_TROUBLE = (errors.CharsetError, errors.UndecodableBytesDefect)


class MailParseError(ValueError):
    """Raised when raw bytes cannot be read as an e-mail message at all."""


@dataclass(frozen=True, slots=True)
class ParsedMail:
    """What the intake reads from one message; every text field is clean Unicode."""

    message_id: str | None
    from_address: str | None
    from_name: str | None
    from_addresses: tuple[str, ...]
    subject: str
    date: datetime | None
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    preview: str
    attachments: tuple[Attachment, ...]
    is_auto_reply: bool
    auto_reply_reason: str | None
    defects: tuple[str, ...]
    size: int
    to: tuple[Mailbox, ...] = ()
    cc: tuple[Mailbox, ...] = ()
    reply_to: tuple[Mailbox, ...] = ()
    body: MailBody = EMPTY_BODY

    @property
    def parts(self) -> tuple[Attachment, ...]:
        """Every part that is not the body: the attachments (inline images among them), then
        the text and HTML parts the body is not."""
        return self.attachments + self.body.other_parts


def parse_mail(raw: bytes, *, preview_chars: int = 500) -> ParsedMail:
    """Read a raw RFC 5322 message; raise MailParseError only when it is not mail at all."""
    mail_policy = policy.default.clone(header_factory=HeaderFactory(_HEADER_BUDGET))
    msg, skipped_body = _parse_bytes(raw, mail_policy)
    fields = _Fields(msg, mail_policy)
    senders = _sender_pairs(fields)
    addresses = list(dict.fromkeys(filter(None, (normalize_address(a) for _, a in senders))))
    parts = (
        read_body(msg, max(preview_chars, 0))
        if skipped_body is None
        else BodyParts(defects=[skipped_body])
    )
    reason = _auto_reply_reason(fields, content_type(msg), senders)
    return ParsedMail(
        message_id=_message_id(fields),
        from_address=addresses[0] if addresses else None,
        from_name=_sender_name(senders, addresses),
        from_addresses=tuple(addresses),
        subject=clean_text(fields.text("Subject"), _MAX_TEXT),
        date=_date(fields),
        in_reply_to=_message_ids(fields, "In-Reply-To"),
        references=_message_ids(fields, "References"),
        preview=parts.preview,
        attachments=tuple(parts.attachments),
        is_auto_reply=reason is not None,
        auto_reply_reason=reason,
        defects=tuple(dict.fromkeys([*fields.defects, *parts.defects])),  # last: after all reads
        size=len(raw),
        to=read_mailboxes(fields.raw_values("To"), normalize_address),
        cc=read_mailboxes(fields.raw_values("Cc"), normalize_address),
        reply_to=read_mailboxes(fields.raw_values("Reply-To"), normalize_address),
        body=read_mail_body(parts),
    )


MAX_ADDRESS_CHARS = 254
MAX_LOCAL_CHARS = 64


def normalize_address(value: str) -> str | None:
    """Canonical address for matching: lower-cased, IDNA (punycode) domain; None if invalid."""
    text = value.strip().strip("<>").strip()
    local, at, domain = text.rpartition("@")
    if not (at and local and domain) or not _is_plain(text) or _stray_at(local):
        return None
    ascii_domain = _idna(domain.lower())
    if not ascii_domain:
        return None
    address = f"{local.lower()}@{ascii_domain}"
    if len(address) > MAX_ADDRESS_CHARS or len(local) > MAX_LOCAL_CHARS:
        return None  # RFC 5321 limits; longer ones are junk, not customers
    return address if _is_plain(address) else None


def extract_order_tags(subject: str) -> tuple[str, ...]:
    """Order numbers written as `[#NUMBER]` in a decoded subject, first occurrence first."""
    return tuple(dict.fromkeys(_ORDER_TAG.findall(subject)))


def mail_fingerprint(parsed: ParsedMail) -> str:
    """Stable key of a message for resynchronisation: sha256 of Message-ID, size and date."""
    date = parsed.date.isoformat() if parsed.date else ""
    key = "\x1f".join((parsed.message_id or "", str(parsed.size), date))
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _parse_bytes(raw: bytes, mail_policy: "EmailPolicy[Any]") -> tuple[Message, str | None]:
    """The parsed message, and the defect for which its body was left unparsed, if any.

    A UTF-8 byte-order mark or blank lines before the header fields are passed over.
    """
    if raw[:1] in _LEADING_JUNK_STARTS and (junk := _LEADING_JUNK.match(raw)):
        raw = raw[junk.end() :]
    if not raw or raw.isspace():
        raise MailParseError("empty message")
    parser = _Parser(mail_policy)
    msg, skipped_body = _parse(raw, parser)
    if not _has_fields(msg) and skipped_body is None:
        msg, skipped_body = _parse(_tidy_field_names(raw), parser)
    if not _has_fields(msg):
        raise MailParseError("no header fields")
    return msg, skipped_body


class _Parser:
    """The stdlib's parser, which well-formed mail skips (shared.mimesplit)."""

    def __init__(self, mail_policy: "EmailPolicy[Any]") -> None:
        self.policy = mail_policy
        self.stdlib: BytesParser[Message] = BytesParser(policy=mail_policy)

    def parse(self, raw: bytes) -> Message:
        return parse_bytes(raw, self.policy) or self.stdlib.parsebytes(raw)

    def parse_headers(self, raw: bytes) -> Message:
        return self.stdlib.parsebytes(raw, headersonly=True)


def _parse(raw: bytes, parser: _Parser) -> tuple[Message, str | None]:
    # Each such line takes three bytes: a shorter mail cannot have too many (no count).
    if len(raw) > 3 * _MAX_DELIMITER_LINES and raw.count(b"\n--") > _MAX_DELIMITER_LINES:
        return _parse_headers_only(raw, parser), "TooManyPartsDefect"
    try:
        return parser.parse(raw), None
    except RecursionError:  # the stdlib parser recurses once per nesting level
        return _parse_headers_only(raw, parser), "NestingTooDeepDefect"
    except Exception as exc:  # the parser is lenient: anything it raises means unreadable
        raise MailParseError(f"unreadable message: {type(exc).__name__}") from exc


def _has_fields(msg: Message) -> bool:
    return next(iter(msg.raw_items()), None) is not None


def _tidy_field_names(raw: bytes) -> bytes:
    """RFC 5322's obsolete syntax allows blanks before a field's colon; the parser does not."""
    end = _BLANK_LINE.search(raw)
    cut = end.start() if end else len(raw)
    return _OBSOLETE_COLON.sub(rb"\1:", raw[:cut]) + raw[cut:]


def _parse_headers_only(raw: bytes, parser: _Parser) -> Message:
    try:
        return parser.parse_headers(raw)
    except Exception as exc:  # see _parse
        raise MailParseError(f"unreadable message: {type(exc).__name__}") from exc


class _Fields:
    """Header fields read leniently: the modern policy first, raw decoding when it fails."""

    def __init__(self, msg: Message, mail_policy: "EmailPolicy[Any]") -> None:
        self._raw = [(name.lower(), str(value)) for name, value in msg.raw_items()]
        self._policy = mail_policy
        self.defects: list[str] = []

    def raw_values(self, name: str) -> list[str]:
        key = name.lower()
        return [value for field_name, value in self._raw if field_name == key]

    def raw(self, name: str) -> str | None:
        values = self.raw_values(name)
        return values[0] if values else None

    def parsed(self, name: str, raw: str) -> Any | None:
        """The modern policy's header object, or None where it cannot be trusted."""
        try:
            header = self._policy.header_fetch_parse(name, raw)
            str(header)
        except Exception:  # the modern header parser raises on some malformed values
            self.defects.append("UnreadableHeaderDefect")
            return None
        self.defects.extend(type(defect).__name__ for defect in header.defects)
        seen = raw[:MAX_PARSED_FIELD]
        return None if _mis_decoded(seen, str(header), header.defects) else header

    def text(self, name: str) -> str:
        raw = self.raw(name)
        if raw is None:
            return ""
        if "=?" not in raw and _PLAIN_TEXT.fullmatch(raw):
            return raw  # what the modern parser makes of printable ASCII, at no cost
        header = self.parsed(name, raw)
        return decode_header_text(raw) if header is None else str(header)

    def token(self, name: str) -> str:
        """The first word of a field's value, lower-cased ('' when absent)."""
        value = unescape_raw((self.raw(name) or "")[:_MAX_LENIENT])
        words = re.split(r"[\s;(]+", value.strip(), maxsplit=1)
        return words[0].lower()


def _mis_decoded(raw: str, text: str, defects: list[errors.MessageDefect]) -> bool:
    """Whether 8-bit bytes or an unknown or wrong charset spoilt the modern parse."""
    if any(isinstance(defect, _CHARSET_TROUBLE) for defect in defects):
        return True
    return unescape_raw(raw) != raw or ("\ufffd" in text and "\ufffd" not in raw)


def _sender_pairs(fields: _Fields) -> list[tuple[str, str]]:
    """(display name, address) pairs from every From field, as written."""
    pairs: list[tuple[str, str]] = []
    for raw in fields.raw_values("From"):
        pairs.extend(_modern_pairs(fields, raw) or _lenient_pairs(raw))
    return pairs


def _modern_pairs(fields: _Fields, raw: str) -> list[tuple[str, str]]:
    plain = plain_mailbox(raw)
    if plain is not None:
        return [plain] if normalize_address(plain[1]) else []
    header = fields.parsed("From", raw)
    try:
        pairs = [(a.display_name, a.addr_spec) for a in header.addresses] if header else []
    except Exception:  # address objects of a broken list
        return []
    return pairs if any(normalize_address(address) for _, address in pairs) else []


def _lenient_pairs(raw: str) -> list[tuple[str, str]]:
    text = unescape_raw(raw[:_MAX_LENIENT])
    try:
        pairs = [(decode_header_text(name), address) for name, address in getaddresses([text])]
    except Exception:  # getaddresses has its own failure modes on hostile input
        pairs = []
    if not any(normalize_address(address) for _, address in pairs):
        pairs += [("", word) for word in _ADDRESS_SEPARATORS.split(text) if "@" in word]
    return pairs


def _sender_name(senders: list[tuple[str, str]], addresses: list[str]) -> str | None:
    if not addresses:
        return None
    name = next(name for name, address in senders if normalize_address(address) == addresses[0])
    return clean_text(name, _MAX_TEXT) or None


def _is_plain(text: str) -> bool:
    if text.isascii():  # no controls, spaces or breakers: the same test, at C speed
        return _PLAIN_ASCII.fullmatch(text) is not None
    return not any(
        char in _ADDRESS_BREAKERS or unicodedata.category(char)[0] in "CZ" for char in text
    )


def _stray_at(local: str) -> bool:
    """An '@' in the local part is only valid inside a quoted string."""
    return "@" in local and not (len(local) > 1 and local[0] == local[-1] == '"')


def _idna(domain: str) -> str | None:
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii").lower()
        except UnicodeError:
            return None
    return domain.rstrip(".") or None


def _date(fields: _Fields) -> datetime | None:
    raw = fields.raw("Date")
    if raw is None:
        return None
    # For an ASCII date the modern parser does no more than parsedate_to_datetime, which the
    # lenient reading below tries first; it also formats the result and parses that again.
    value = None if raw.isascii() else getattr(fields.parsed("Date", raw), "datetime", None)
    if not isinstance(value, datetime):
        value = _lenient_date(unescape_raw(raw[:_MAX_LENIENT]))
    if value is None:
        return None
    try:
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
    except (OverflowError, ValueError):
        return None


def _lenient_date(text: str) -> datetime | None:
    for candidate in (text, _COLON_SPACE.sub(":", _COMMENTS.sub("", text))):
        try:
            return parsedate_to_datetime(candidate)
        except Exception:  # ValueError, TypeError or IndexError, depending on the version
            continue
    return None


def _message_id(fields: _Fields) -> str | None:
    raw = fields.raw("Message-ID")
    if raw is None:
        return None
    text = unescape_raw(raw[:_MAX_LENIENT])
    found = _ANGLE_ID.findall(text) or [text]
    return _clean_id(found[0]) or None


def _message_ids(fields: _Fields, name: str) -> tuple[str, ...]:
    text = unescape_raw(" ".join(fields.raw_values(name))[-_MAX_ID_TEXT:])  # the newest ids
    found = _ANGLE_ID.findall(text) or [word for word in text.split() if "@" in word]
    ids = dict.fromkeys(filter(None, map(_clean_id, found)))
    return tuple(ids)[-_MAX_IDS:]


def _clean_id(value: str) -> str:
    return clean_text(value.strip().strip("<>"), _MAX_ID * 2).replace(" ", "")[:_MAX_ID]


def _auto_reply_reason(fields: _Fields, ctype: str, senders: list[tuple[str, str]]) -> str | None:
    submitted = fields.token("Auto-Submitted")
    if submitted and submitted != "no":
        return f"auto-submitted: {submitted}"
    for name in ("X-Autoreply", "X-Autorespond"):
        if fields.raw(name) is not None:
            return name.lower()
    precedence = fields.token("Precedence")
    if precedence in _BULK_PRECEDENCE:
        return f"precedence: {precedence}"
    if ctype == "multipart/report":
        return "multipart/report"
    locals_ = {(address.rpartition("@")[0] or address).strip().lower() for _, address in senders}
    daemon = sorted(locals_ & _DAEMON_SENDERS)
    return f"sender: {daemon[0]}" if daemon else None
