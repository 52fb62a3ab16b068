"""The assigner's handler."""

from __future__ import annotations

from datetime import datetime

from assigner.ports import Assignment, AssignmentRecords, ManagerRotation
from shared.contracts import Event, MailBound, MailRouted

NO_GROUP = "the account has no manager group for new customers"


def handle_mail_bound(
    event: MailBound,
    *,
    rotation: ManagerRotation,
    records: AssignmentRecords,
    now: datetime,
) -> list[Event]:
    """Give a customer created from mail to the group's next eligible manager.

    Eligible: logged in and "free"; if nobody is, everyone else in the group (lunch, busy,
    break, not logged in); within them, the one assigned least recently. With no group, an
    empty group or a missing one the customer stays unassigned, the reason is written on the
    e-mail, and the mail still goes on to the notifier; an empty or missing group is named on
    the event, for the account's owner to be told. Mail for existing customers and orders
    passes through unchanged; only when "notify manager" is on and the order had no manager
    is the customer's manager looked up, so that the right person is told. (The binder sends
    only such mail and new customers here, see `binder.handlers.needs_assigner`; the rest it
    routes itself.) `event` is as the store has it (`assigner.trust.trusted`): its options,
    whether it created its customer, its order and manager are the store's.
    """
    fields = event.model_dump(exclude={"event_id", "occurred_at", "schema_version"})
    if not event.customer_created:
        if event.manager_id is None and event.options.notify_manager:
            fields["manager_id"] = records.manager_of(event.tenant_id, event.customer_id)
        return [MailRouted.caused_by(event, now=now, **fields)]
    assignment = _assign(event, rotation, now)
    records.record(
        event.tenant_id, event.email_id, manager_id=assignment.manager_id, note=assignment.note
    )
    fields.update(
        manager_id=assignment.manager_id,
        assignment_note=assignment.note,
        unassigned_group_id=event.options.manager_group_id if assignment.group_unusable else None,
    )
    assigned = assignment.assigned_now and assignment.manager_id is not None
    return [MailRouted.caused_by(event, now=now, assigned_now=assigned, **fields)]


def _assign(event: MailBound, rotation: ManagerRotation, now: datetime) -> Assignment:
    group = event.options.manager_group_id
    if group is None:
        return Assignment(None, NO_GROUP, assigned_now=False)
    return rotation.assign(
        event.tenant_id, group, event.customer_id, email_id=event.email_id, now=now
    )
