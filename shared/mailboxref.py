"""Where a mail is in its mailbox, and the mailbox effect its outcome asks of the fetcher.

The binder writes the place on the mail's `emails` document (`mailbox`) and, once the
document is stored, one small `mailbox_outcomes` document per decided mail: loaded (to be
marked read, or deleted) or not (left as it is). The fetcher holding the account reads its
account's outcomes, makes the effects, and deletes the outcomes it made: that collection
holds only what is still to be done.
"""

from __future__ import annotations

from typing import Any

from shared.contracts import MailFetched

MAILBOX = "mailbox"
OUTCOMES = "mailbox_outcomes"


def mailbox_place(event: MailFetched) -> dict[str, Any]:
    """The mail's place in its mailbox: folder, UIDVALIDITY and UID, or its POP3 UIDL."""
    place: dict[str, Any] = {"protocol": event.protocol}
    if event.protocol == "imap":
        place.update(folder=event.folder, uidvalidity=event.uidvalidity, uid=event.uid)
    else:
        place["uidl"] = event.uidl
    return place


def mailbox_outcome(event: MailFetched, doc: dict[str, Any]) -> dict[str, Any]:
    """The outcome of a decided mail for the fetcher: keyed by the e-mail, so written once."""
    return {
        "_id": doc["_id"],
        "tenant_id": doc["tenant_id"],
        "account_id": doc["account_id"],
        "loaded": doc.get("status") == "bound",
        MAILBOX: doc.get(MAILBOX) or mailbox_place(event),
    }
