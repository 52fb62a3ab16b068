"""OAuth2 mailboxes on the real Dovecot (oauth2 passdb) and the tests' OAuth2 server."""

from __future__ import annotations

import io
import logging
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog

from fetcher.imap import ImapClientMailbox
from fetcher.pop3 import PoplibMailbox
from fetcher.settings import FetcherSettings
from fetcher.supervisor import Supervisor
from shared.accounts import Account
from shared.contracts import AccountFailed, MailFetched
from shared.crypto import SecretBox
from shared.errors import MailboxRejectedError
from shared.logging import configure_logging
from shared.messaging import Broker
from shared.settings import Settings
from shared.store import Store
from tests.conftest import Mailbox, make_mail
from tests.integration.test_fetcher_imap import binder_queue, drain
from tests.oauth_server import CLIENT_ID, CLIENT_SECRET, OAuthServer, running_oauth_server
from tests.processes import wait_until

pytestmark = pytest.mark.integration


def now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
def oauth() -> Iterator[OAuthServer]:
    with running_oauth_server() as server:
        yield server


@pytest.fixture
def debug_logs() -> Iterator[io.StringIO]:
    """Every log line (mailintake at DEBUG, JSON) of this test, in a buffer."""
    saved, root = structlog.get_config(), logging.getLogger()
    handlers, level = root.handlers[:], logging.getLogger("mailintake").level
    buffer = io.StringIO()
    configure_logging("json", "DEBUG")
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=buffer))
    for handler in root.handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(buffer)
    yield buffer
    structlog.configure(**saved)
    root.handlers[:] = handlers
    logging.getLogger("mailintake").setLevel(level)


def box_of(settings: Settings) -> SecretBox:
    assert settings.secret_key is not None
    return SecretBox(settings.secret_key.get_secret_value())


def add_oauth_account(
    store: Store, settings: Settings, mailbox: Mailbox, oauth: OAuthServer, **overrides: Any
) -> Account:
    """An OAuth2 account document as `accounts add --auth oauth2` writes it."""
    s, box = mailbox.server, box_of(settings)
    refresh = overrides.pop("refresh_token", None) or oauth.state.issue_refresh_token(mailbox.user)
    doc: dict[str, Any] = {
        "_id": uuid.uuid4().hex[:16],
        "tenant_id": "t-oauth",
        "owner_id": "owner-1",
        "protocol": "imap",
        "host": s.host,
        "port": s.imaps_port,
        "security": "ssl",
        "username": mailbox.user,
        "ca_file": s.ca_file,
        "auth": "oauth2",
        "oauth": {
            "provider": "custom",
            "client_id": CLIENT_ID,
            "token_url": oauth.token_url,
            "auth_url": oauth.auth_url,
            "scope": "mail",
        },
        "oauth_client_secret_enc": box.encrypt(CLIENT_SECRET),
        "oauth_refresh_token_enc": box.encrypt(refresh),
        "enabled": True,
        "state": {"status": "new"},
        "sync": {},
        **overrides,
    }
    store.accounts.insert_one(doc)
    return Account.model_validate(doc)


def append_many(mailbox: Mailbox, count: int) -> None:
    """Fill the mailbox over one IMAP connection."""
    client = mailbox.connect()
    try:
        for i in range(count):
            client.append("INBOX", "", None, make_mail("a@x.org", f"mail {i}"))
    finally:
        client.logout()


def test_imap_logs_in_with_a_fresh_access_token(
    mailbox: Mailbox, store: Store, settings: Settings, oauth: OAuthServer
) -> None:
    mailbox.append(make_mail("a@x.org", "one"))
    account = add_oauth_account(store, settings, mailbox, oauth)
    token = oauth.state.issue_access_token(mailbox.user)
    with ImapClientMailbox(account, token) as box:
        assert b"AUTH=OAUTHBEARER" not in box.capabilities()  # logged in: no AUTH= any more
        box.select("INBOX")
        assert len(box.search(["ALL"])) == 1
    assert oauth.state.introspected == [True]


def test_pop3_logs_in_with_xoauth2_and_a_refused_token_is_named(
    mailbox: Mailbox, store: Store, settings: Settings, oauth: OAuthServer
) -> None:
    mailbox.append(make_mail("a@x.org", "one"))
    s = mailbox.server
    account = add_oauth_account(store, settings, mailbox, oauth, protocol="pop3", port=s.pop3s_port)
    with PoplibMailbox(account, oauth.state.issue_access_token(mailbox.user)) as pop:
        assert pop.stat() == 1
    expired = oauth.state.issue_access_token(mailbox.user, lifetime=0)
    with pytest.raises(MailboxRejectedError) as refused, PoplibMailbox(account, expired):
        pass
    assert refused.value.reason == "token_rejected"
    assert oauth.state.introspected == [True, False]


@pytest.fixture
def fetcher_settings(settings: Settings) -> FetcherSettings:
    return FetcherSettings.model_validate(
        {
            **settings.model_dump(),
            "fetch_backoff_base_seconds": 0.1,
            "fetch_backoff_max_seconds": 0.3,
            "lease_seconds": 3.0,
            "fetch_batch": 10,
        }
    )


@pytest.fixture
def supervisor(fetcher_settings: FetcherSettings, store: Store) -> Iterator[Supervisor]:
    stop = threading.Event()
    sup = Supervisor(fetcher_settings, store, stop, clock=now)
    thread = threading.Thread(target=sup.run, daemon=True)
    thread.start()
    yield sup
    stop.set()
    thread.join(30)


def account_doc(store: Store, account: Account) -> dict[str, Any]:
    return store.accounts.find_one({"_id": account.id}) or {}


@pytest.mark.slow
def test_a_long_first_load_renews_its_token_and_keeps_its_position(
    mailbox: Mailbox,
    store: Store,
    broker: Broker,
    settings: Settings,
    oauth: OAuthServer,
    debug_logs: io.StringIO,
) -> None:
    oauth.state.access_lifetime = 0.25  # renewed after 0.2 s: several times during the load
    oauth.state.rotate = True
    append_many(mailbox, 300)
    account = add_oauth_account(store, settings, mailbox, oauth)
    stop = threading.Event()
    fetcher = FetcherSettings.model_validate(
        {**settings.model_dump(), "fetch_batch": 5, "lease_seconds": 3.0}
    )
    sup = Supervisor(fetcher, store, stop, clock=now)
    thread = threading.Thread(target=sup.run, daemon=True)
    thread.start()
    try:
        queue = binder_queue(broker)
        wait_until(lambda: broker.queue_counts(queue)[0] >= 300, timeout=90, what="300 mails")
        wait_until(
            lambda: account_doc(store, account).get("progress", {}).get("done") == 300,
            timeout=10,
            what="the progress",
        )
    finally:
        stop.set()
        thread.join(30)
    events = drain(broker, binder_queue(broker))
    assert sorted(e.uid or 0 for e in events if isinstance(e, MailFetched)) == list(range(1, 301))
    doc = account_doc(store, account)
    assert doc["sync"]["INBOX"]["last_uid"] == 300
    assert doc["state"]["status"] == "ok"
    renewals = oauth.state.grants.count("refresh_token")
    # The first login's grant, then at least one renewal in the middle of the load.
    assert renewals >= 2, renewals
    assert oauth.state.refused == []  # each rotated refresh token was used once, in turn
    [newest] = oauth.state.active_refresh_tokens(mailbox.user)
    assert box_of(settings).decrypt(doc["oauth_refresh_token_enc"]) == newest
    raw = repr(doc)
    issued = [*oauth.state.refresh_tokens, *oauth.state.access_tokens, CLIENT_SECRET]
    assert not [t for t in issued if t in raw]  # the document holds none of them in clear
    logs = debug_logs.getvalue()
    assert "oauth_access_refreshed" in logs and "oauth_session_renewed" in logs
    assert not [t for t in issued if t in logs]


def test_a_refused_cached_token_is_refreshed_once_and_the_login_retried(
    mailbox: Mailbox,
    store: Store,
    broker: Broker,
    settings: Settings,
    oauth: OAuthServer,
    supervisor: Supervisor,
) -> None:
    mailbox.append(make_mail("a@x.org", "one"))
    box = box_of(settings)
    cached = oauth.state.issue_access_token(mailbox.user, lifetime=0)  # the server says expired
    account = add_oauth_account(
        store,
        settings,
        mailbox,
        oauth,
        oauth_access_token_enc=box.encrypt(cached),
        oauth_access_issued_at=now(),
        oauth_access_expires_at=datetime(2100, 1, 1, tzinfo=UTC),  # we believe it valid
    )
    queue = binder_queue(broker)
    wait_until(lambda: broker.queue_counts(queue)[0] == 1, timeout=15, what="the mail")
    assert oauth.state.grants == ["refresh_token"]
    assert oauth.state.introspected[:2] == [False, True]
    wait_until(  # the pass's state is saved once its mail is published and remembered
        lambda: account_doc(store, account)["state"]["status"] == "ok", 15, "the account ok"
    )


def test_a_revoked_refresh_token_is_an_account_error_with_one_notice(
    mailbox: Mailbox,
    store: Store,
    broker: Broker,
    settings: Settings,
    oauth: OAuthServer,
    supervisor: Supervisor,
) -> None:
    account = add_oauth_account(store, settings, mailbox, oauth)
    oauth.state.revoke_user(mailbox.user)
    retries: set[object] = set()

    def failed_several_times() -> bool:
        state = account_doc(store, account).get("state", {})
        if state.get("status") == "error":
            retries.add(state.get("updated_at"))
        return len(retries) >= 4

    wait_until(failed_several_times, timeout=30, what="the account in error")
    state = account_doc(store, account)["state"]
    assert state["reason"] == "oauth_invalid_grant"
    assert "invalid_grant" in state["message"]
    failed = drain(broker, broker.topology.work_queue("notifier"))
    assert len(failed) == 1
    assert isinstance(failed[0], AccountFailed) and failed[0].reason == "oauth_invalid_grant"
    assert oauth.state.refused == ["invalid_grant"]  # a refused token is not sent again
