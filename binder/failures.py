"""A mail the binder gave up on (its dead-letter queue): a `failed` e-mail, the owner told."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from binder.ports import AccountDirectory, AccountRef, EmailArchive
from shared.contracts import Event, MailFetched, MailSkipped
from shared.letter import MAX_REASON, base_document, failed_fields


def failed_document(
    event: MailFetched, account: AccountRef, reason: str, *, now: datetime
) -> dict[str, Any]:
    """The `emails` document of a mail that failed, under the stored account's tenant."""
    return {
        **base_document(event, now),
        "tenant_id": account.tenant_id,
        "account_id": account.id,
        "shop_id": account.options.shop_id,
        **failed_fields(reason, now=now, raw_ref=event.raw_ref),
    }


def handle_mail_dead_lettered(
    event: MailFetched,
    reason: str,
    *,
    accounts: AccountDirectory,
    archive: EmailArchive,
    now: datetime,
) -> list[Event]:
    """Record a mail that goes to the dead-letter queue as `failed`, with the reason.

    The tenant, the account and its options are the stored account's: an event naming an
    account its tenant does not have records nothing. A mail decided already keeps its
    document. Otherwise its `mail.skipped` (reason `failed`) tells the owner, with "notify
    about skipped messages". A replay that succeeds replaces the failed document.
    """
    account = accounts.find(event.tenant_id, event.account_id)
    if account is None:
        return []
    stored = archive.record_failure(failed_document(event, account, reason, now=now))
    if stored is None or stored.get("status") != "failed":
        return []
    return [
        MailSkipped(
            event_id=MailSkipped.child_id(event.event_id, "/failed"),
            tenant_id=account.tenant_id,
            account_id=account.id,
            email_id=event.email_id,
            occurred_at=now,
            options=account.options,
            reason="failed",
            detail=reason[:MAX_REASON],
        )
    ]
