"""To, Cc and Reply-To read leniently into bounded lists of mailboxes (address and name)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.utils import getaddresses

from shared.mailheaders import plain_mailbox
from shared.mailparts import clean_text, decode_header_text, unescape_raw

__all__ = ["MAX_FIELD_CHARS", "MAX_RECIPIENTS", "Mailbox", "read_mailboxes"]

# A field may name thousands of recipients: the first MAX_RECIPIENTS distinct valid addresses
# of a field name (all its fields together) are kept, read from the first MAX_FIELD_CHARS
# characters of its values (cut at the last comma before that, so no address is cut short).
# The lenient parser takes up to 4 us a character on hostile input.
MAX_RECIPIENTS = 200
MAX_FIELD_CHARS = 8_192
_MAX_NAME = 200
_SEPARATORS = re.compile(r"[\s<>()\[\]\",;:]+")


@dataclass(frozen=True, slots=True)
class Mailbox:
    """One recipient: the normalised address and the display name, if any."""

    address: str
    name: str | None


def read_mailboxes(
    values: Iterable[str], normalize: Callable[[str], str | None]
) -> tuple[Mailbox, ...]:
    """The distinct valid addresses of a field's raw values, in order, with their names.

    `normalize` gives an address's canonical form, or None for one that is not valid.
    """
    found: dict[str, Mailbox] = {}
    budget = MAX_FIELD_CHARS
    for raw in values:
        if budget <= 0:
            break
        text = _bounded(raw, budget)
        budget -= len(text)
        for name, address in _pairs(text):
            key = normalize(address)
            if key is None or key in found:
                continue
            found[key] = Mailbox(key, clean_text(decode_header_text(name), _MAX_NAME) or None)
            if len(found) >= MAX_RECIPIENTS:
                return tuple(found.values())
    return tuple(found.values())


def _bounded(raw: str, limit: int) -> str:
    if len(raw) <= limit:
        return raw
    head = raw[:limit]
    return head.rpartition(",")[0] or head


def _pairs(raw: str) -> list[tuple[str, str]]:
    """(name, address) pairs as written.

    Without quotes, comments or groups every comma ends a mailbox, and a plain one (atoms and
    an address) is read at once; anything else goes to the lenient parser.
    """
    text = unescape_raw(raw)
    if '"' in text or "(" in text or ":" in text:
        return _lenient(text)
    pairs: list[tuple[str, str]] = []
    for piece in text.split(","):
        plain = plain_mailbox(piece)
        if plain is not None:
            pairs.append(plain)
        elif piece and not piece.isspace():
            pairs.extend(_lenient(piece))
    return pairs


def _lenient(text: str) -> list[tuple[str, str]]:
    try:
        return getaddresses([text])
    except Exception:  # getaddresses has its own failure modes on hostile input
        return [("", word) for word in _SEPARATORS.split(text) if "@" in word]
