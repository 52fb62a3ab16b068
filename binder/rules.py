"""The binding rules, in the product's order: order tag, sender, create customer, skip."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from binder.ports import CrmDirectory, CustomerRef, EmailArchive, OrderRef
from shared.contracts import AccountOptions, MatchedBy, SkipReason
from shared.mail import ParsedMail, extract_order_tags


@dataclass(frozen=True)
class Bound:
    """The mail belongs to this customer (and order, when matched by tag or thread)."""

    matched_by: MatchedBy
    customer_id: str
    manager_id: str | None
    order_id: str | None = None
    customer_created: bool = False


@dataclass(frozen=True)
class Skipped:
    """The mail is not loaded, for `reason`."""

    reason: SkipReason
    detail: str | None = None


Binding = Bound | Skipped


def _by_order(order: OrderRef, matched_by: MatchedBy) -> Bound:
    return Bound(matched_by, order.customer_id, order.manager_id, order_id=order.id)


def _by_customer(customer: CustomerRef, email_id: str) -> Bound:
    # A customer this very mail created (found again on a redelivery) stays "created".
    created = customer.source_email_id == email_id
    return Bound(
        "created" if created else "sender",
        customer.id,
        customer.manager_id,
        customer_created=created,
    )


def match_subject_tag(
    tenant_id: str, mail: ParsedMail, options: AccountOptions, crm: CrmDirectory
) -> Bound | None:
    """Rule 1: the first `[#NUMBER]` naming an existing order of the tenant, with or without
    a usable sender (the order names its customer).

    With "tag requires sender", the order binds only if the sender is the order's customer:
    a mail without a usable sender cannot bind by its tag then.
    """
    if options.tag_requires_sender and mail.from_address is None:
        return None
    for number in extract_order_tags(mail.subject):
        order = crm.find_order(tenant_id, number)
        if order is None:
            continue
        if options.tag_requires_sender:
            sender = crm.find_customer(tenant_id, mail.from_address or "")
            if sender is None or sender.id != order.customer_id:
                continue
        return _by_order(order, "subject_tag")
    return None


def match_thread(
    tenant_id: str, mail: ParsedMail, crm: CrmDirectory, archive: EmailArchive
) -> Bound | None:
    """With "thread replies": a reply to a mail that was bound to an order joins that order."""
    ids = (*mail.in_reply_to, *mail.references)
    order_id = archive.order_of_thread(tenant_id, ids) if ids else None
    order = crm.find_order_by_id(tenant_id, order_id) if order_id else None
    return _by_order(order, "thread") if order else None


def bind(
    *,
    tenant_id: str,
    email_id: str,
    mail: ParsedMail,
    options: AccountOptions,
    crm: CrmDirectory,
    archive: EmailArchive,
    now: datetime,
) -> Binding:
    """Apply the rules in order; the first that matches decides.

    Mail from one of the tenant's own mailboxes (a shop's own copies, forwards, bounces) binds
    by its tag, its thread or to an existing customer, and never creates one.
    """
    tagged = match_subject_tag(tenant_id, mail, options, crm)
    if tagged is not None:
        return tagged
    sender = mail.from_address
    if sender is None:
        return Skipped("no_sender", "the mail has no usable From address")
    if options.thread_replies and (threaded := match_thread(tenant_id, mail, crm, archive)):
        return threaded
    customer = crm.find_customer(tenant_id, sender)
    if customer is not None:
        return _by_customer(customer, email_id)
    if sender in crm.own_addresses(tenant_id):
        return Skipped("own_address", f"{sender} is a mailbox of this tenant")
    if not options.create_customer:
        return Skipped("no_customer", f"no customer has the address {sender}")
    if options.ignore_auto_replies and mail.is_auto_reply:
        return Skipped("auto_reply", mail.auto_reply_reason)
    created = crm.create_customer(
        tenant_id, sender, shop_id=options.shop_id, email_id=email_id, now=now
    )
    return _by_customer(created, email_id)
