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
from shared.errors import PermanentError


class UntrustedEventError(PermanentError):
    """Raised when an event names an account, owner, customer or order its tenant does not have."""


def trusted(event: Event, *, recipients: RecipientDirectory) -> Event:
    """`event` with its recipients and account options replaced by the store's.

    The account must be the event's tenant's, and the owner the event names must be that
    account's owner; a mail's customer (and order, which must be that customer's) must be the
    tenant's. The manager told is the order's, else the customer's, as stored now.
    """
    if isinstance(event, MailRouted):
        options = _account(event, event.options.owner_id, recipients)
        manager = _manager(event, recipients)
        return event.model_copy(update={"options": options, "manager_id": manager})
    if isinstance(event, MailSkipped):
        options = _account(event, event.options.owner_id, recipients)
        return event.model_copy(update={"options": options})
    if isinstance(event, AccountFailed | AccountWarning):
        _account(event, event.owner_id, recipients)
    return event


def _account(event: Event, owner_id: str, recipients: RecipientDirectory) -> AccountOptions:
    options = recipients.account(event.tenant_id, event.account_id)
    if options is None:
        raise UntrustedEventError(
            f"account {event.account_id!r} is not an account of tenant {event.tenant_id!r}"
        )
    if owner_id != options.owner_id:
        raise UntrustedEventError(
            f"the event names owner {owner_id!r}, but account {event.account_id!r} "
            f"of tenant {event.tenant_id!r} is owned by {options.owner_id!r}"
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
