"""The assigner's and notifier's handlers with fakes of their ports."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from assigner.handlers import handle_mail_bound
from assigner.rules import Manager
from notifier.handlers import handle_account_failed, handle_mail_routed, handle_mail_skipped
from shared.contracts import (
    AccountFailed,
    AccountOptions,
    MailBound,
    MailRouted,
    MailSkipped,
    MailSummary,
)
from tests.fakes import (
    FakeAssignmentRecords,
    FakeManagerRotation,
    FakeNotificationInbox,
    FakeWebhookDirectory,
)

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
NO_HOOKS = FakeWebhookDirectory()


def bound(
    n: int = 1,
    *,
    created: bool = True,
    group: str | None = "g1",
    manager: str | None = None,
    notify: bool = False,
) -> MailBound:
    return MailBound(
        event_id=f"ev{n}",
        tenant_id="t",
        account_id="a",
        email_id=f"e{n}",
        occurred_at=NOW,
        options=AccountOptions(owner_id="owner", manager_group_id=group, notify_manager=notify),
        summary=MailSummary(from_address=f"c{n}@x.org", subject=f"s{n}"),
        matched_by="created" if created else "sender",
        customer_id=f"c{n}",
        customer_created=created,
        manager_id=manager,
    )


def managers(*spec: tuple[str, str, bool]) -> list[Manager]:
    return [Manager(i, s, o) for i, s, o in spec]


def test_free_managers_share_new_customers_evenly() -> None:
    rotation = FakeManagerRotation(
        {
            "g1": managers(
                ("m1", "free", True),
                ("m2", "free", True),
                ("m3", "free", True),
                ("m4", "busy", True),
            )
        }
    )
    routed = [
        handle_mail_bound(bound(n), rotation=rotation, records=FakeAssignmentRecords(), now=NOW)[0]
        for n in range(30)
    ]
    counts = Counter(r.manager_id for r in routed if isinstance(r, MailRouted))
    assert counts == {"m1": 10, "m2": 10, "m3": 10}


def test_existing_customer_passes_through_unchanged() -> None:
    [out] = handle_mail_bound(
        bound(created=False, manager="m9"),
        rotation=FakeManagerRotation(),
        records=FakeAssignmentRecords(),
        now=NOW,
    )
    assert isinstance(out, MailRouted)
    assert out.manager_id == "m9" and not out.assigned_now and out.customer_id == "c1"


def test_missing_group_leaves_customer_unassigned_with_a_note() -> None:
    [out] = handle_mail_bound(
        bound(group="nope"),
        rotation=FakeManagerRotation(),
        records=FakeAssignmentRecords(),
        now=NOW,
    )
    assert isinstance(out, MailRouted) and out.manager_id is None
    assert out.assignment_note and "does not exist" in out.assignment_note


def test_redelivery_returns_the_same_manager_without_advancing() -> None:
    rotation = FakeManagerRotation({"g1": managers(("m1", "free", True), ("m2", "free", True))})
    first = handle_mail_bound(
        bound(1), rotation=rotation, records=FakeAssignmentRecords(), now=NOW
    )[0]
    again = handle_mail_bound(
        bound(1), rotation=rotation, records=FakeAssignmentRecords(), now=NOW
    )[0]
    nxt = handle_mail_bound(bound(2), rotation=rotation, records=FakeAssignmentRecords(), now=NOW)[
        0
    ]
    assert isinstance(first, MailRouted) and isinstance(again, MailRouted)
    assert first.manager_id == again.manager_id == "m1" and first.event_id == again.event_id
    assert isinstance(nxt, MailRouted) and nxt.manager_id == "m2"


def routed(*, assigned: bool, manager: str | None, notify: bool) -> MailRouted:
    b = bound(manager=manager, notify=notify)
    return MailRouted.caused_by(
        b,
        now=NOW,
        **{**b.model_dump(exclude={"event_id", "occurred_at"}), "assigned_now": assigned},
    )


def test_new_customer_gives_two_notifications_in_order() -> None:
    inbox = FakeNotificationInbox()
    handle_mail_routed(
        routed(assigned=True, manager="m1", notify=False), inbox=inbox, webhooks=NO_HOOKS, now=NOW
    )
    assert [d["kind"] for d in inbox.docs] == ["customer_assigned", "incoming_email"]
    assert inbox.docs[0]["created_at"] < inbox.docs[1]["created_at"]
    assert {d["user_id"] for d in inbox.docs} == {"m1"}


def test_incoming_email_only_with_notify_manager() -> None:
    inbox = FakeNotificationInbox()
    handle_mail_routed(
        routed(assigned=False, manager="m1", notify=False), inbox=inbox, webhooks=NO_HOOKS, now=NOW
    )
    assert inbox.docs == []
    handle_mail_routed(
        routed(assigned=False, manager="m1", notify=True), inbox=inbox, webhooks=NO_HOOKS, now=NOW
    )
    assert [d["kind"] for d in inbox.docs] == ["incoming_email"]


def test_no_manager_no_notification() -> None:
    inbox = FakeNotificationInbox()
    handle_mail_routed(
        routed(assigned=False, manager=None, notify=True), inbox=inbox, webhooks=NO_HOOKS, now=NOW
    )
    assert inbox.docs == []


def test_redelivered_routing_creates_nothing_new() -> None:
    inbox = FakeNotificationInbox()
    event = routed(assigned=True, manager="m1", notify=True)
    handle_mail_routed(event, inbox=inbox, webhooks=NO_HOOKS, now=NOW)
    handle_mail_routed(event, inbox=inbox, webhooks=NO_HOOKS, now=NOW)
    assert len(inbox.docs) == 2


def skipped(notify: bool) -> MailSkipped:
    return MailSkipped(
        event_id="s1",
        tenant_id="t",
        account_id="a",
        email_id="e1",
        occurred_at=NOW,
        options=AccountOptions(owner_id="owner", notify_skipped=notify),
        summary=MailSummary(from_address="x@y.z", subject="hey"),
        reason="no_customer",
    )


def test_skipped_mail_is_reported_to_the_owner_only_when_asked() -> None:
    inbox = FakeNotificationInbox()
    handle_mail_skipped(skipped(False), inbox=inbox, webhooks=NO_HOOKS, now=NOW)
    assert inbox.docs == []
    handle_mail_skipped(skipped(True), inbox=inbox, webhooks=NO_HOOKS, now=NOW)
    [doc] = inbox.docs
    assert doc["kind"] == "message_skipped" and doc["user_id"] == "owner"
    assert doc["reason"] == "no_customer" and "x@y.z" in doc["text"]


def test_account_error_once_per_incident() -> None:
    inbox = FakeNotificationInbox()
    event = AccountFailed(
        event_id="f1",
        tenant_id="t",
        account_id="a",
        occurred_at=NOW,
        owner_id="owner",
        incident_id="i1",
        reason="login_rejected",
        message="login rejected by host:993",
    )
    handle_account_failed(event, inbox=inbox, webhooks=NO_HOOKS, now=NOW)
    handle_account_failed(
        event.model_copy(update={"event_id": "f2"}), inbox=inbox, webhooks=NO_HOOKS, now=NOW
    )
    assert [d["kind"] for d in inbox.docs] == ["account_error"]
