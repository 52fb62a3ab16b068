"""The warning ahead of an OAuth2 consent's end: the fetcher's decision and the notifier's text."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fetcher.health import AccountHealth
from notifier.handlers import handle_account_warning
from notifier.ports import WebhookConfig
from shared.accounts import Account
from shared.contracts import AccountFailed, AccountWarning, NotificationCreated
from shared.errors import MailboxRejectedError, PublishNotConfirmedError
from shared.wire import decode_event, encode_event
from tests.fakes import FakeNotificationInbox, FakeWebhookDirectory
from tests.unit.test_contracts import as_incoming
from tests.unit.test_fetcher_sync import FakePublisher, FakeStates, account

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
WEEK = timedelta(days=7)
AUTHORIZED = NOW - timedelta(days=80)


def oauth_account(**overrides: Any) -> Account:
    fields: dict[str, Any] = {
        "auth": "oauth2",
        "oauth": {"provider": "google", "client_id": "cid"},
        "oauth_authorized_at": AUTHORIZED,
    }
    return account(**{**fields, **overrides})


def health(acc: Account | None = None) -> tuple[AccountHealth, FakeStates, FakePublisher]:
    states, pub = FakeStates(), FakePublisher()
    return AccountHealth(acc or oauth_account(), states, pub), states, pub


def test_a_consent_ending_within_the_window_is_told_once() -> None:
    h, states, pub = health()
    ends = NOW + timedelta(days=3)
    h.consent_ends(ends, now=NOW, window=WEEK)
    h.consent_ends(ends, now=NOW + timedelta(hours=1), window=WEEK)
    [event] = pub.events
    assert isinstance(event, AccountWarning)
    assert event.reason == "oauth_consent_expiring" and event.expires_at == ends
    assert event.owner_id == "owner" and event.account_id == "acc1"
    assert "2026-03-04 12:00 UTC" in event.message
    assert states.saved[-1]["consent_warned"] == event.warning_id


@pytest.mark.parametrize(
    ("ends", "window"),
    [
        (NOW + timedelta(days=8), WEEK),  # further off than the window
        (None, WEEK),  # the provider does not tell
        (NOW + timedelta(days=3), timedelta(0)),  # warnings turned off
    ],
)
def test_no_warning_outside_the_window(ends: datetime | None, window: timedelta) -> None:
    h, states, pub = health()
    h.consent_ends(ends, now=NOW, window=window)
    assert pub.events == [] and states.saved == []


def test_a_consent_already_warned_is_not_told_again_after_restarts_and_incidents() -> None:
    h, states, pub = health()
    ends = NOW + timedelta(days=3)
    h.consent_ends(ends, now=NOW, window=WEEK)
    h.failed(MailboxRejectedError("login_rejected", "refused"), now=NOW + timedelta(hours=1))
    h.succeeded(now=NOW + timedelta(hours=2))
    restarted = AccountHealth(oauth_account(state=states.saved[-1]), states, pub)
    # A rotation recomputes the end (issue time + lifetime): it moves by seconds.
    restarted.consent_ends(ends + timedelta(seconds=2), now=NOW + timedelta(hours=3), window=WEEK)
    assert [type(e) for e in pub.events] == [AccountWarning, AccountFailed]


def test_a_new_authorization_may_warn_again() -> None:
    h, states, pub = health()
    h.consent_ends(NOW + timedelta(days=3), now=NOW, window=WEEK)
    again = NOW + timedelta(days=2)
    renewed = oauth_account(oauth_authorized_at=again, state=states.saved[-1])
    AccountHealth(renewed, states, pub).consent_ends(
        again + timedelta(days=6), now=again, window=WEEK
    )
    first, second = pub.events
    assert isinstance(first, AccountWarning) and isinstance(second, AccountWarning)
    assert first.warning_id != second.warning_id and first.event_id != second.event_id


def test_an_unconfirmed_warning_is_published_again_with_the_same_id() -> None:
    h, states, pub = health()
    pub.fail_after = 0
    ends = NOW + timedelta(days=3)
    with pytest.raises(PublishNotConfirmedError):
        h.consent_ends(ends, now=NOW, window=WEEK)
    assert "consent_warned" not in h.state and states.saved == []
    pub.fail_after = None
    h.consent_ends(ends, now=NOW + timedelta(minutes=1), window=WEEK)
    h.consent_ends(ends, now=NOW + timedelta(minutes=2), window=WEEK)
    [event] = pub.events
    assert isinstance(event, AccountWarning) and h.state["consent_warned"] == event.warning_id


def warning(event_id: str = "w-event") -> AccountWarning:
    return AccountWarning(
        event_id=event_id,
        tenant_id="t",
        account_id="acc1",
        occurred_at=NOW,
        owner_id="owner",
        warning_id="w1",
        reason="oauth_consent_expiring",
        message="the provider ends the OAuth2 consent of u on 2026-03-04 12:00 UTC",
        expires_at=NOW + timedelta(days=3),
    )


def test_the_owner_gets_one_account_warning_naming_the_date_and_the_command() -> None:
    inbox = FakeNotificationInbox()
    hooks = FakeWebhookDirectory()
    handle_account_warning(warning(), inbox=inbox, webhooks=hooks, now=NOW)
    handle_account_warning(warning("w-event-2"), inbox=inbox, webhooks=hooks, now=NOW)
    [doc] = inbox.docs
    assert doc["kind"] == "account_warning" and doc["user_id"] == "owner"
    assert doc["text"] == (
        "The mailbox's sign-in expires on 2026-03-04 12:00 UTC: "
        "run `mailintake accounts authorize acc1`"
    )
    assert doc["reason"] == "oauth_consent_expiring" and doc["warning_id"] == "w1"


def test_an_account_warning_goes_to_the_tenants_webhook() -> None:
    inbox = FakeNotificationInbox()
    hooks = FakeWebhookDirectory({"t": WebhookConfig("https://crm.example/hook", "s")})
    [out] = handle_account_warning(warning(), inbox=inbox, webhooks=hooks, now=NOW)
    assert isinstance(out, NotificationCreated) and out.kind == "account_warning"
    assert out.notification_id == inbox.docs[0]["_id"]
    assert inbox.docs[0]["webhook"]["state"] == "pending"


def test_an_account_warning_travels_on_its_routing_key() -> None:
    out = encode_event(warning())
    assert out.routing_key == "account.warning"
    event, _payload = decode_event(as_incoming(out))
    assert event == warning()
