"""The warning ahead of an OAuth2 consent's end, on the real Dovecot, RabbitMQ and store."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from fetcher.settings import FetcherSettings
from fetcher.supervisor import Supervisor
from notifier.__main__ import run as run_notifier
from shared.messaging import Broker
from shared.settings import Settings
from shared.store import Store
from tests.conftest import Mailbox, make_mail
from tests.integration.test_fetcher_imap import binder_queue
from tests.integration.test_oauth2 import account_doc, add_oauth_account
from tests.oauth_server import OAuthServer, running_oauth_server
from tests.processes import wait_until

pytestmark = pytest.mark.integration

CONSENT = timedelta(days=3)  # what the provider tells; the warning window is 7 days


def now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
def oauth() -> Iterator[OAuthServer]:
    with running_oauth_server() as server:
        server.state.refresh_lifetime = CONSENT.total_seconds()
        server.state.rotate = True  # each refresh recomputes (and saves) the consent's end
        server.state.access_lifetime = 1.0  # a new session about every second
        yield server


def refreshes(oauth: OAuthServer) -> int:
    return oauth.state.grants.count("refresh_token")


def test_a_consent_ending_soon_is_warned_once_over_many_sessions(
    mailbox: Mailbox, store: Store, broker: Broker, settings: Settings, oauth: OAuthServer
) -> None:
    authorized = now()
    account = add_oauth_account(
        store,
        settings,
        mailbox,
        oauth,
        oauth_authorized_at=authorized,  # as `accounts authorize` stores it
        oauth_refresh_expires_at=authorized + CONSENT,
    )
    notifier_queue = broker.topology.work_queue("notifier")
    stop = threading.Event()
    fetcher_settings = FetcherSettings.model_validate(
        {**settings.model_dump(), "lease_seconds": 3.0}
    )
    assert fetcher_settings.oauth_consent_warning_days == 7  # the default window
    sup = Supervisor(fetcher_settings, store, stop, clock=now)
    thread = threading.Thread(target=sup.run, daemon=True)
    thread.start()
    try:
        queue = binder_queue(broker)
        mailbox.append(make_mail("a@x.org", "first"))
        wait_until(lambda: broker.queue_counts(queue)[0] == 1, 20, "the first mail")
        # Idle, each session ends when its token is due: reconnect, refresh, check the consent.
        wait_until(lambda: refreshes(oauth) >= 4, 20, "sessions with renewed access tokens")
        mailbox.append(make_mail("a@x.org", "second"))
        wait_until(lambda: broker.queue_counts(queue)[0] == 2, 20, "the second mail")
        assert broker.queue_counts(notifier_queue)[0] == 1  # one AccountWarning, not one a session
        warned = account_doc(store, account)["state"]["consent_warned"]
        notifier_stop = threading.Event()
        notifier = threading.Thread(target=run_notifier, args=(settings, notifier_stop))
        notifier.start()
        try:
            wait_until(lambda: broker.queue_counts(notifier_queue)[0] == 0, 20, "the notifier")
            wait_until(lambda: store.notifications.count_documents({}) == 1, 20, "a notice")
        finally:
            notifier_stop.set()
            notifier.join(30)
    finally:
        stop.set()
        thread.join(30)
    [doc] = store.notifications.find({})
    assert doc["kind"] == "account_warning" and doc["user_id"] == "owner-1"
    assert doc["warning_id"] == warned and doc["account_id"] == account.id
    ends = doc["expires_at"]  # the end as the session that warned read it (rotations move it)
    assert abs(ends - (authorized + CONSENT)) < timedelta(minutes=1)
    assert doc["text"] == (
        f"The mailbox's sign-in expires on {ends.astimezone(UTC):%Y-%m-%d %H:%M} UTC: "
        f"run `mailintake accounts authorize {account.id}`"
    )
    assert oauth.state.refused == []
