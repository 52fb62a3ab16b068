"""A new customer that the account's manager group cannot take (the group vanished or was
emptied) stays unassigned, and the account's owner is told with a notification of its own."""

from __future__ import annotations

import pytest

from assigner.handlers import handle_mail_bound
from notifier.handlers import handle_mail_routed, notification
from shared.contracts import MailRouted
from tests.fakes import FakeAssignmentRecords, FakeManagerRotation, FakeNotificationInbox
from tests.unit.test_assigner_notifier import NO_HOOKS, NOW, bound, managers


def assigned(group: str | None, rotation: FakeManagerRotation) -> MailRouted:
    [out] = handle_mail_bound(
        bound(1, group=group), rotation=rotation, records=FakeAssignmentRecords(), now=NOW
    )
    assert isinstance(out, MailRouted)
    return out


@pytest.mark.parametrize(
    ("groups", "why"),
    [({}, "does not exist"), ({"g1": []}, "has no managers")],
    ids=["vanished", "emptied"],
)
def test_a_group_that_cannot_take_the_customer_is_named_on_the_event(
    groups: dict[str, list[dict[str, object]]], why: str
) -> None:
    out = assigned("g1", FakeManagerRotation(groups))
    assert out.manager_id is None and out.unassigned_group_id == "g1"
    assert out.assignment_note and why in out.assignment_note


def test_no_group_configured_or_a_group_that_works_names_none() -> None:
    assert assigned(None, FakeManagerRotation()).unassigned_group_id is None
    working = FakeManagerRotation({"g1": managers(("m1", "free", True))})
    assert assigned("g1", working).unassigned_group_id is None


def test_the_owner_is_told_once_naming_the_group_and_the_customer() -> None:
    out = assigned("g1", FakeManagerRotation({"g1": []}))
    inbox = FakeNotificationInbox()
    handle_mail_routed(out, inbox=inbox, webhooks=NO_HOOKS, now=NOW)
    handle_mail_routed(out, inbox=inbox, webhooks=NO_HOOKS, now=NOW)  # redelivered
    [doc] = inbox.docs
    assert (doc["kind"], doc["user_id"]) == ("assignment_failed", "owner")
    assert "g1" in doc["text"] and "c1@x.org" in doc["text"]
    assert (doc["customer_id"], doc["group_id"], doc["email_id"]) == ("c1", "g1", "e1")
    expected = notification("assignment_failed", "e1", "owner", out, now=NOW, text="")
    assert doc["_id"] == expected["_id"]


def test_an_unassigned_customer_without_a_group_tells_nobody() -> None:
    inbox = FakeNotificationInbox()
    handle_mail_routed(
        assigned(None, FakeManagerRotation()), inbox=inbox, webhooks=NO_HOOKS, now=NOW
    )
    assert inbox.docs == []
