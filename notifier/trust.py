"""Events are not trusted: who is told, and what the account asks for, come from the store."""

from __future__ import annotations

from notifier.ports import Party, RecipientDirectory
from shared.contracts import (
    AccountFailed,
    AccountOptions,
    AccountWarning,
    Event,
    MailRouted,
    MailSkipped,
)
from shared.errors import UntrustedEventError

__all__ = ["UntrustedEventError", "trusted"]


def trusted(event: Event, *, recipients: RecipientDirectory) -> Event:
    """`event` with its recipients and account options replaced by the store's.

    The account must be the event's tenant's; a mail's customer (and order, which must be that
    customer's) must be the tenant's. The owner told is the account's owner as stored now,
    whatever the event names (an event published before the owner changed still reaches the
    new one); the manager told is the order's, else the customer's, as stored now.
    """
    if isinstance(event, MailRouted):
        options = _account(event, recipients)
        manager = _manager(event, recipients)
        return event.model_copy(update={"options": options, "manager_id": manager})
    if isinstance(event, MailSkipped):
        return event.model_copy(update={"options": _account(event, recipients)})
    if isinstance(event, AccountFailed | AccountWarning):
        return event.model_copy(update={"owner_id": _account(event, recipients).owner_id})
    return event


def _account(event: Event, recipients: RecipientDirectory) -> AccountOptions:
    options = recipients.account(event.tenant_id, event.account_id)
    if options is None:
        raise UntrustedEventError(
            f"account {event.account_id!r} is not an account of tenant {event.tenant_id!r}"
        )
    return options


def _manager(event: MailRouted, recipients: RecipientDirectory) -> str | None:
    customer = _party("customer", recipients.customer(event.tenant_id, event.customer_id), event)
    if event.order_id is None:
        return customer.manager_id
    order = _party("order", recipients.order(event.tenant_id, event.order_id), event)
    if order.customer_id != customer.id:
        raise UntrustedEventError(
            f"order {order.id!r} of tenant {event.tenant_id!r} is not customer {customer.id!r}'s"
        )
    return order.manager_id or customer.manager_id


def _party(kind: str, party: Party | None, event: MailRouted) -> Party:
    if party is None:
        named = event.customer_id if kind == "customer" else event.order_id
        raise UntrustedEventError(f"{kind} {named!r} is not one of tenant {event.tenant_id!r}")
    return party
