"""The notifier trusts no event: recipients and account options are the store's."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from notifier.ports import Party
from notifier.trust import UntrustedEventError, trusted
from shared.contracts import AccountFailed, AccountOptions, MailRouted, MailSkipped, MailSummary
from tests.fakes import FakeRecipientDirectory

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
OWNER_A = AccountOptions(owner_id="owner-a", notify_manager=True, notify_skipped=True)


def directory() -> FakeRecipientDirectory:
    return FakeRecipientDirectory(
        accounts={("A", "acc-a"): OWNER_A, ("B", "acc-b"): AccountOptions(owner_id="owner-b")},
        customers={("A", "c1"): Party("c1", "m-a"), ("B", "c9"): Party("c9", "m-b")},
        orders={("A", "o1"): Party("o1", "m-order", "c1"), ("A", "o2"): Party("o2", None, "c1")},
    )


def routed(**fields: Any) -> MailRouted:
    base: dict[str, Any] = {
        "event_id": "r1", "tenant_id": "A", "account_id": "acc-a", "email_id": "e1",
        "occurred_at": NOW, "options": AccountOptions(owner_id="owner-a"),
        "summary": MailSummary(from_address="c@x.org"), "matched_by": "sender",
        "customer_id": "c1",
    }  # fmt: skip
    return MailRouted(**{**base, **fields})


def test_the_manager_and_options_are_the_stores_not_the_events() -> None:
    event = routed(manager_id="m-b", options=AccountOptions(owner_id="owner-a"))
    got = trusted(event, recipients=directory())
    assert isinstance(got, MailRouted)
    assert got.manager_id == "m-a" and got.options == OWNER_A


def test_the_owner_told_is_the_accounts_owner_whatever_the_event_names() -> None:
    got = trusted(routed(options=AccountOptions(owner_id="owner-b")), recipients=directory())
    assert isinstance(got, MailRouted) and got.options.owner_id == "owner-a"
    failed = AccountFailed(
        event_id="f", tenant_id="A", account_id="acc-a", occurred_at=NOW,
        owner_id="owner-b", incident_id="i", reason="r", message="m",
    )  # fmt: skip
    got_failed = trusted(failed, recipients=directory())
    assert isinstance(got_failed, AccountFailed) and got_failed.owner_id == "owner-a"


def test_an_orders_manager_comes_first_then_its_customers() -> None:
    got = trusted(routed(order_id="o1"), recipients=directory())
    assert isinstance(got, MailRouted) and got.manager_id == "m-order"
    got = trusted(routed(order_id="o2"), recipients=directory())
    assert isinstance(got, MailRouted) and got.manager_id == "m-a"


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (routed(account_id="acc-b"), "'acc-b' is not an account of tenant 'A'"),
        (routed(account_id="nope"), "'nope' is not an account of tenant 'A'"),
        (routed(customer_id="c9"), "customer 'c9' is not one of tenant 'A'"),
        (routed(order_id="o9"), "order 'o9' is not one of tenant 'A'"),
        (
            AccountFailed(
                event_id="f", tenant_id="A", account_id="acc-b", occurred_at=NOW,
                owner_id="owner-b", incident_id="i", reason="r", message="m",
            ),
            "'acc-b' is not an account of tenant 'A'",
        ),
        (
            MailSkipped(
                event_id="s", tenant_id="B", account_id="acc-a", email_id="e", occurred_at=NOW,
                options=AccountOptions(owner_id="owner-a"), reason="no_customer",
            ),
            "'acc-a' is not an account of tenant 'B'",
        ),
    ],
)  # fmt: skip
def test_an_event_naming_what_its_tenant_does_not_have_is_refused_with_the_reason(
    event: MailRouted | AccountFailed | MailSkipped, reason: str
) -> None:
    with pytest.raises(UntrustedEventError) as raised:
        trusted(event, recipients=directory())
    assert reason in str(raised.value)


def test_an_order_of_another_customer_is_refused() -> None:
    recipients = directory()
    recipients.customers[("A", "c2")] = Party("c2", None)
    with pytest.raises(UntrustedEventError, match="is not customer 'c2'"):
        trusted(routed(customer_id="c2", order_id="o1"), recipients=recipients)
