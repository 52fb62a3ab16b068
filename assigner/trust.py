"""Events are not trusted: the mail, its account and its customer are taken from the store."""

from __future__ import annotations

from assigner.ports import BoundMailDirectory, StoredBinding
from shared.contracts import AccountOptions, MailBound
from shared.errors import UnknownAccountError, UntrustedEventError


def trusted(event: MailBound, *, bindings: BoundMailDirectory) -> MailBound:
    """`event` as the store has it, or UntrustedEventError naming what does not match.

    The account and the e-mail must be the event's tenant's, the e-mail bound, from that
    account and bound to the event's customer, which must be the tenant's too. Then what the
    assigner acts on is the store's: the account's options as stored now (manager group,
    "notify manager", owner; an event published before they changed gets the new ones), and
    from the e-mail how it was bound (`matched_by` "created": its customer was created from
    this mail), its order and the manager it was bound with.
    """
    options = _account(event, bindings)
    stored = _binding(event, bindings)
    if not bindings.has_customer(event.tenant_id, event.customer_id):
        raise UntrustedEventError(
            f"customer {event.customer_id!r} is not one of tenant {event.tenant_id!r}"
        )
    return event.model_copy(
        update={
            "options": options,
            "matched_by": stored.matched_by,
            "customer_created": stored.matched_by == "created",
            "order_id": stored.order_id,
            "manager_id": stored.manager_id,
        }
    )


def _account(event: MailBound, bindings: BoundMailDirectory) -> AccountOptions:
    options = bindings.account(event.tenant_id, event.account_id)
    if options is None:
        raise UnknownAccountError(
            f"account {event.account_id!r} is not an account of tenant {event.tenant_id!r} "
            "(unknown, or another tenant's): nothing is assigned"
        )
    return options


def _binding(event: MailBound, bindings: BoundMailDirectory) -> StoredBinding:
    mail = f"e-mail {event.email_id!r} of tenant {event.tenant_id!r}"
    stored = bindings.binding(event.tenant_id, event.email_id)
    if stored is None:
        raise UntrustedEventError(
            f"e-mail {event.email_id!r} is not one of tenant {event.tenant_id!r}"
        )
    if stored.status != "bound" or stored.matched_by is None:
        raise UntrustedEventError(f"{mail} is not bound (its status is {stored.status!r})")
    if stored.account_id != event.account_id:
        raise UntrustedEventError(
            f"{mail} came from account {stored.account_id!r}, not {event.account_id!r}"
        )
    if stored.customer_id != event.customer_id:
        raise UntrustedEventError(
            f"{mail} is bound to customer {stored.customer_id!r}, not {event.customer_id!r}"
        )
    return stored
