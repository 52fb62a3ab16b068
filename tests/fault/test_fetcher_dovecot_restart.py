"""Dovecot stopped and started again: the account goes to error once, then back to ok."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from fetcher.settings import FetcherSettings
from fetcher.supervisor import Supervisor
from shared.contracts import AccountFailed
from shared.messaging import Broker
from shared.settings import Settings
from shared.store import Store
from tests.conftest import Mailbox, make_mail
from tests.integration.test_fetcher_imap import add_account, binder_queue, drain
from tests.processes import wait_until
from tests.services import service_ctl

pytestmark = [pytest.mark.fault, pytest.mark.slow]


def status(store: Store, account_id: str) -> dict[str, object]:
    return dict((store.accounts.find_one({"_id": account_id}) or {}).get("state") or {})


@pytest.fixture
def running_fetcher(settings: Settings, store: Store) -> Iterator[None]:
    fetcher_settings = FetcherSettings.model_validate(
        {
            **settings.model_dump(),
            "fetch_backoff_base_seconds": 0.2,
            "fetch_backoff_max_seconds": 1.0,
        }
    )
    stop = threading.Event()
    sup = Supervisor(fetcher_settings, store, stop, clock=lambda: datetime.now(UTC))
    thread = threading.Thread(target=sup.run, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(30)


def test_dovecot_down_is_one_incident_and_fetching_resumes_after_restart(
    mailbox: Mailbox, store: Store, broker: Broker, settings: Settings, running_fetcher: None
) -> None:
    mailbox.append(make_mail("a@x.org", "before"))
    account = add_account(store, settings, mailbox)
    queue = binder_queue(broker)
    wait_until(lambda: broker.queue_counts(queue)[0] == 1, timeout=15, what="the first mail")
    try:
        service_ctl("dovecot", "stop")
        wait_until(lambda: status(store, account.id).get("status") == "error", 60, "error")
        first = status(store, account.id)
        wait_until(
            lambda: status(store, account.id).get("updated_at") != first.get("updated_at"),
            timeout=15,
            what="a retry within the incident",
        )
    finally:
        service_ctl("dovecot", "start")
    wait_until(lambda: status(store, account.id).get("status") == "ok", 60, "recovery")
    mailbox.append(make_mail("a@x.org", "after"))
    wait_until(lambda: broker.queue_counts(queue)[0] == 2, timeout=30, what="the mail after")

    failed = drain(broker, broker.topology.work_queue("notifier"))
    assert len(failed) == 1 and isinstance(failed[0], AccountFailed)
    assert failed[0].reason in ("connection_refused", "connection_failed")
    assert len({e.email_id for e in drain(broker, queue)}) == 2
