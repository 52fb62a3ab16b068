"""POP3 on the real Dovecot: TLS verified, STLS, UIDL positions, DELE only after confirms."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from fetcher.adapters import BrokerEventPublisher, MongoPop3Positions
from fetcher.pop3 import PoplibMailbox
from fetcher.pop3sync import Pop3Sync
from fetcher.sync import SyncResult
from shared.accounts import Account
from shared.blobs import GridFsBlobStore
from shared.contracts import MailFetched
from shared.errors import MailboxRejectedError
from shared.messaging import Broker
from shared.settings import Settings
from shared.store import Store
from tests.conftest import Mailbox, make_mail
from tests.integration.test_fetcher_imap import (
    add_account,
    bind_published,
    binder_queue,
    drain,
    failures_for,
    mailbox_password,
    outcomes_left,
    settler_for,
)

pytestmark = pytest.mark.integration


def pop3_account(
    store: Store, settings: Settings, mailbox: Mailbox, **overrides: object
) -> Account:
    fields: dict[str, object] = {"protocol": "pop3", "port": mailbox.server.pop3s_port}
    return add_account(store, settings, mailbox, **{**fields, **overrides})


def run_once(account: Account, store: Store, broker: Broker, settings: Settings) -> SyncResult:
    """One pass as the runner makes it: the states of its DELEs recorded after QUIT."""
    settler = settler_for(account, store)
    sync = Pop3Sync(
        account,
        publisher=BrokerEventPublisher(broker),
        positions=MongoPop3Positions(store, account.tenant_id),
        blobs=GridFsBlobStore(store),
        settler=settler,
        clock=lambda: datetime.now(UTC),
        inline_limit=settings.inline_body_limit,
        failures=failures_for(account, store, broker),
    )
    with PoplibMailbox(account, mailbox_password(settings, account)) as pop:
        result = sync.run(pop)
    settler.record(result.settled)
    return result


def test_pop3_over_tls_takes_each_message_once(
    mailbox: Mailbox, store: Store, broker: Broker, settings: Settings
) -> None:
    mailbox.append(make_mail("a@x.org", "one"))
    mailbox.append(make_mail("b@x.org", "two"))
    account = pop3_account(store, settings, mailbox)
    assert run_once(account, store, broker, settings).fetched == 2
    assert run_once(account, store, broker, settings).fetched == 0
    events = drain(broker, binder_queue(broker))
    assert len(events) == 2 and all(isinstance(e, MailFetched) and e.uidl for e in events)
    assert mailbox.count() == 2  # without "delete loaded messages" the mail stays
    mailbox.append(make_mail("c@x.org", "three"))
    assert run_once(account, store, broker, settings).fetched == 1


def test_pop3_stls_with_delete_after_import_removes_loaded_mail(
    mailbox: Mailbox, store: Store, broker: Broker, settings: Settings
) -> None:
    store.customers.insert_one(
        {"_id": uuid.uuid4().hex, "tenant_id": "t-fetch", "emails": ["known@x.org"]}
    )
    for i in range(3):
        mailbox.append(make_mail("known@x.org", f"mail {i}"))
    mailbox.append(make_mail("stranger@x.org", "skipped: no such customer"))
    account = pop3_account(
        store,
        settings,
        mailbox,
        port=mailbox.server.pop3_port,
        security="starttls",
        delete_after_import=True,
    )
    assert run_once(account, store, broker, settings).fetched == 4
    assert mailbox.count() == 4  # nothing is deleted before the letters are stored
    assert len(bind_published(broker, store)) == 4
    assert run_once(account, store, broker, settings).fetched == 0
    assert mailbox.count() == 1  # the skipped mail stays
    assert outcomes_left(store, account) == 0
    assert run_once(account, store, broker, settings).fetched == 0
    doc = store.accounts.find_one({"_id": account.id})
    assert doc is not None and len(doc["pop3"]["taken"]) == 1  # pruned to what the server lists


def test_pop3_wrong_password_is_a_rejected_login(
    mailbox: Mailbox, store: Store, settings: Settings
) -> None:
    account = pop3_account(store, settings, mailbox, password="wrong-password")
    with pytest.raises(MailboxRejectedError) as info:
        PoplibMailbox(account, "wrong-password").__enter__()
    assert info.value.reason == "login_rejected"
