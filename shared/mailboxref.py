"""Where a mail is in its mailbox, and what was done there: fields of its `emails` document.

The binder writes them with the outcome; the fetcher holding the account reads the loaded
mail still `pending` and records what it did (`seen`, `deleted`, `kept` for POP3 mail without
"delete loaded messages", `gone` when the server no longer had it, `stale` when its UIDs
belong to an earlier UIDVALIDITY or another folder). Skipped and failed mail is `left`.
"""

from __future__ import annotations

from typing import Any

from shared.contracts import MailFetched

MAILBOX = "mailbox"
STATE = "mailbox_state"
SETTLED_AT = "mailbox_settled_at"
PENDING = "pending"
LEFT = "left"


def mailbox_fields(event: MailFetched, *, loaded: bool) -> dict[str, Any]:
    """The mail's place in its mailbox, and `pending` when loaded (its effect is to come)."""
    place: dict[str, Any] = {"protocol": event.protocol}
    if event.protocol == "imap":
        place.update(folder=event.folder, uidvalidity=event.uidvalidity, uid=event.uid)
    else:
        place["uidl"] = event.uidl
    return {MAILBOX: place, STATE: PENDING if loaded else LEFT}
