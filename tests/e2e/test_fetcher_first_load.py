"""A first load of 2,000 messages, killed half-way and resumed: nothing lost, nothing twice."""

from __future__ import annotations

import pytest

from shared.contracts import MailFetched
from shared.messaging import Broker
from shared.settings import Settings
from shared.store import Store
from tests.conftest import Mailbox, make_mail
from tests.integration.test_fetcher_imap import add_account, bind, take_published
from tests.processes import StageProcesses, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

COUNT = 2000


def fill(mailbox: Mailbox, count: int) -> None:
    """APPEND `count` distinct messages over one connection."""
    client = mailbox.connect()
    try:
        for i in range(count):
            client.append("INBOX", "", None, make_mail("bulk@x.org", f"bulk {i}", body=f"n{i}"))
    finally:
        client.logout()


def progress(store: Store, account_id: str) -> dict[str, int]:
    doc = store.accounts.find_one({"_id": account_id}) or {}
    return doc.get("progress") or {}


def test_first_load_killed_and_resumed_takes_every_message_once(
    mailbox: Mailbox, store: Store, broker: Broker, settings: Settings, stages: StageProcesses
) -> None:
    fill(mailbox, COUNT)
    account = add_account(store, settings, mailbox, create_customer=True)
    stages.env.update({"MAILINTAKE_LEASE_SECONDS": "2", "MAILINTAKE_FETCH_BATCH": "100"})
    stages.start("fetcher")
    wait_until(
        lambda: progress(store, account.id).get("done", 0) >= 300,
        timeout=60,
        what="a part of the first load",
        on_timeout=stages.logs,
    )
    stages.kill("fetcher")
    interrupted = progress(store, account.id)
    assert interrupted["done"] < COUNT, "the load finished before it could be interrupted"

    stages.start("fetcher")
    wait_until(
        lambda: progress(store, account.id).get("done") == COUNT,
        timeout=120,
        what="the resumed load",
        on_timeout=stages.logs,
    )
    final = progress(store, account.id)
    assert final["total"] == COUNT  # the resumed load counted on from where it stopped
    published = take_published(broker)
    ids = {e.email_id for e, _ in published if isinstance(e, MailFetched)}
    assert len(ids) == COUNT
    assert len(published) - COUNT <= 100  # at most the batch in flight at the kill, same ids
    assert not any("\\Seen" in flags for flags in mailbox.flags())  # no outcome yet
    bind(store, published)
    wait_until(
        lambda: all("\\Seen" in flags for flags in mailbox.flags()),
        timeout=90,
        what="every loaded mail marked read",
        on_timeout=stages.logs,
    )
