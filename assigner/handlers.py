"""The assigner's handler."""

from __future__ import annotations

from datetime import datetime

from assigner.ports import ManagerRotation
from shared.contracts import Event, MailBound, MailRouted


def handle_mail_bound(event: MailBound, *, rotation: ManagerRotation, now: datetime) -> list[Event]:
    """Give a customer created from mail to the group's next eligible manager.

    Eligible: logged in and "free"; if nobody is, everyone else in the group (lunch, busy,
    break, not logged in). Mail for existing customers and orders passes through unchanged.
    """
    fields = event.model_dump(exclude={"event_id", "occurred_at", "schema_version"})
    group = event.options.manager_group_id
    if not event.customer_created:
        return [MailRouted.caused_by(event, now=now, **fields)]
    if group is None:
        fields["assignment_note"] = "the account has no manager group for new customers"
        return [MailRouted.caused_by(event, now=now, **fields)]
    assignment = rotation.assign(
        event.tenant_id, group, event.customer_id, email_id=event.email_id, now=now
    )
    fields.update(manager_id=assignment.manager_id, assignment_note=assignment.note)
    assigned = assignment.assigned_now and assignment.manager_id is not None
    return [MailRouted.caused_by(event, now=now, assigned_now=assigned, **fields)]
