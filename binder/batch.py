"""A batch of fetched mail, parsed once, and what it will look up: read in bulk before binding."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from shared.contracts import Event, MailFetched
from shared.mail import MailParseError, ParsedMail, extract_order_tags, parse_mail

Parsed = ParsedMail | MailParseError


@dataclass
class Wanted:
    """One tenant's sender addresses and order numbers in a batch."""

    addresses: set[str] = field(default_factory=set)
    numbers: set[str] = field(default_factory=set)


def parse_batch(batch: Sequence[tuple[Event, bytes | None]]) -> dict[str, Parsed]:
    """Each mail of the batch that travels inline, parsed once: by e-mail id, or why not.

    Binding a mail uses what was parsed here; a mail passed by reference (large) is read from
    the blob store and parsed when it is bound.
    """
    parsed: dict[str, Parsed] = {}
    for event, raw in batch:
        if not isinstance(event, MailFetched) or event.raw_ref is not None:
            continue
        try:
            parsed[event.email_id] = parse_mail(raw or b"")
        except MailParseError as exc:
            parsed[event.email_id] = exc
        except Exception:  # parsed again when bound: its failure is settled there
            continue
    return parsed


def wanted_lookups(
    batch: Sequence[tuple[Event, bytes | None]], parsed: Mapping[str, Parsed]
) -> dict[str, Wanted]:
    """Per tenant: the senders and the `[#NUMBER]` tags of the batch's parsed mail.

    Binding a mail that asks for anything else (a thread, a mail passed by reference) simply
    asks the store itself.
    """
    wanted: dict[str, Wanted] = {}
    for event, _ in batch:
        mail = parsed.get(event.email_id) if isinstance(event, MailFetched) else None
        if not isinstance(mail, ParsedMail):
            continue
        tenant = wanted.setdefault(event.tenant_id, Wanted())
        if mail.from_address:
            tenant.addresses.add(mail.from_address)
        tenant.numbers.update(extract_order_tags(mail.subject))
    return wanted
