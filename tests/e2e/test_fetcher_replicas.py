"""Two fetcher replicas share six accounts fairly through leases; a killed one's are taken over."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fetcher.leases import MongoLeases
from shared.contracts import MailFetched
from shared.messaging import Broker
from shared.settings import Settings
from shared.store import Store
from tests.conftest import Mailbox, make_mail
from tests.integration.test_fetcher_imap import add_account, binder_queue, drain
from tests.processes import StageProcesses, wait_until

pytestmark = pytest.mark.e2e

LEASE = 3


def holders(store: Store, ids: list[str]) -> dict[str, str | None]:
    """Who holds each account's lease now (None: nobody)."""
    return MongoLeases(store, "observer", LEASE).holders(ids, now=datetime.now(UTC))


def spread(store: Store, ids: list[str]) -> list[int]:
    """How many of the accounts each holder holds, most first (unheld ones not counted)."""
    held = Counter(h for h in holders(store, ids).values() if h is not None)
    return sorted(held.values(), reverse=True)


def pid_of(holder: str | None) -> int:
    assert holder is not None
    return int(holder.split("-")[-2])


def test_replicas_share_accounts_fairly_and_take_over_a_killed_ones(
    mailbox: Mailbox,
    store: Store,
    broker: Broker,
    settings: Settings,
    stage_env: dict[str, str],
    tmp_path: Path,
) -> None:
    boxes = [Mailbox(mailbox.server, f"u{uuid.uuid4().hex[:12]}") for _ in range(6)]
    ids = [add_account(store, settings, box).id for box in boxes]
    for box in boxes:
        box.append(make_mail("a@x.org", "first"))
    env = {**stage_env, "MAILINTAKE_LEASE_SECONDS": str(LEASE)}
    replicas = [StageProcesses(env, tmp_path / name) for name in ("r1", "r2")]
    for replica in replicas:
        replica.log_dir.mkdir()

    def logs() -> str:
        return "\n".join(r.logs() for r in replicas)

    try:
        replicas[0].start("fetcher")  # alone, it takes all six
        queue = binder_queue(broker)
        wait_until(lambda: broker.queue_counts(queue)[0] >= 6, 30, "six mails", logs)
        assert spread(store, ids) == [6]
        replicas[1].start("fetcher")  # the first gives back what exceeds its fair share
        wait_until(lambda: spread(store, ids) == [3, 3], LEASE * 4, "three accounts each", logs)
        first = drain(broker, queue)  # every account fetched once, across the handover
        assert sorted(e.account_id for e in first if isinstance(e, MailFetched)) == sorted(ids)

        held = holders(store, ids)
        pids = {r.procs["fetcher"].pid: r for r in replicas}
        assert {pid_of(h) for h in held.values()} == set(pids)
        victim_holder = held[ids[0]]
        pids[pid_of(victim_holder)].kill("fetcher")
        survivor = next(h for h in held.values() if h != victim_holder)
        for box, account_id in zip(boxes, ids, strict=True):
            box.append(make_mail("b@x.org", f"second for {account_id}"))
        wait_until(  # a dead replica's leases lapse after LEASE s; a tick comes every LEASE/3 s
            lambda: set(holders(store, ids).values()) == {survivor},
            LEASE * 2,
            "the survivor holding all six",
            logs,
        )
        wait_until(lambda: broker.queue_counts(queue)[0] >= 6, LEASE * 5, "the second mails", logs)
        second = drain(broker, queue)
        assert sorted(e.account_id for e in second) == sorted(ids)  # each exactly once
    finally:
        for replica in replicas:
            replica.stop_all()
    assert set(holders(store, ids).values()) == {None}  # SIGTERM released every lease
