"""What a batch of fetched mail will look up: read in bulk before its mails are bound."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from shared.contracts import Event, MailFetched
from shared.mail import MailParseError, extract_order_tags, parse_mail


@dataclass
class Wanted:
    """One tenant's sender addresses and order numbers in a batch."""

    addresses: set[str] = field(default_factory=set)
    numbers: set[str] = field(default_factory=set)


def wanted_lookups(batch: Sequence[tuple[Event, bytes | None]]) -> dict[str, Wanted]:
    """Per tenant: the senders and the `[#NUMBER]` tags of the batch's mail, from headers only.

    Only a guess at what binding will ask: a mail whose full parse reads differently simply
    asks the store itself. Mail passed by reference (large) is left to its own lookups.
    """
    wanted: dict[str, Wanted] = {}
    for event, raw in batch:
        if not isinstance(event, MailFetched) or not raw or event.raw_ref is not None:
            continue
        try:
            head = parse_mail(header_block(raw), preview_chars=0)
        except MailParseError:
            continue
        tenant = wanted.setdefault(event.tenant_id, Wanted())
        if head.from_address:
            tenant.addresses.add(head.from_address)
        tenant.numbers.update(extract_order_tags(head.subject))
    return wanted


def header_block(raw: bytes) -> bytes:
    """The header section of a raw message, with its blank line (all of it when none)."""
    ends = [i + len(sep) for sep in (b"\r\n\r\n", b"\n\n") if (i := raw.find(sep)) >= 0]
    return raw[: min(ends)] if ends else raw
