"""The assigner's handler: unassigned outcomes recorded, pass-through, managers looked up."""

from __future__ import annotations

from assigner.handlers import NO_GROUP, handle_mail_bound
from shared.contracts import MailRouted
from tests.fakes import FakeAssignmentRecords, FakeManagerRotation
from tests.unit.test_assigner_notifier import NOW, bound, managers


def route(
    event: object, rotation: FakeManagerRotation, records: FakeAssignmentRecords
) -> MailRouted:
    [out] = handle_mail_bound(event, rotation=rotation, records=records, now=NOW)  # type: ignore[arg-type]
    assert isinstance(out, MailRouted)
    return out


def test_new_customer_assignment_is_recorded_on_the_email() -> None:
    records = FakeAssignmentRecords()
    rotation = FakeManagerRotation({"g1": managers(("m1", "free", True))})
    out = route(bound(1), rotation, records)
    assert out.manager_id == "m1" and out.assigned_now and out.assignment_note is None
    assert records.outcomes == {"e1": ("m1", None)}


def test_account_without_group_leaves_customer_unassigned_and_says_why() -> None:
    records = FakeAssignmentRecords()
    out = route(bound(1, group=None), FakeManagerRotation(), records)
    assert out.manager_id is None and not out.assigned_now
    assert out.assignment_note == NO_GROUP
    assert records.outcomes == {"e1": (None, NO_GROUP)}


def test_empty_group_leaves_customer_unassigned_and_mail_goes_on() -> None:
    records = FakeAssignmentRecords()
    out = route(bound(1), FakeManagerRotation({"g1": []}), records)
    assert out.manager_id is None and not out.assigned_now
    assert out.assignment_note and "has no managers" in out.assignment_note
    assert records.outcomes["e1"][0] is None


def test_existing_customer_without_manager_gets_its_current_one_with_notify_manager() -> None:
    records = FakeAssignmentRecords(managers={"c1": "m7"})
    out = route(bound(1, created=False, notify=True), FakeManagerRotation(), records)
    assert out.manager_id == "m7" and not out.assigned_now
    assert records.outcomes == {}


def test_existing_customer_is_not_looked_up_without_notify_manager() -> None:
    records = FakeAssignmentRecords(managers={"c1": "m7"})
    out = route(bound(1, created=False, notify=False), FakeManagerRotation(), records)
    assert out.manager_id is None


def test_order_manager_wins_over_the_customers() -> None:
    records = FakeAssignmentRecords(managers={"c1": "m7"})
    out = route(bound(1, created=False, notify=True, manager="m2"), FakeManagerRotation(), records)
    assert out.manager_id == "m2"
