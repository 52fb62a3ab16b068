"""Two fetcher replicas share six accounts through leases; a killed one's are taken over."""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path

import pytest

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
    docs = store.accounts.find({"_id": {"$in": ids}}, {"lease": 1})
    return {d["_id"]: (d.get("lease") or {}).get("holder") for d in docs}


def test_each_account_is_fetched_by_one_replica_and_taken_over_when_it_dies(
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
        replica.start("fetcher")
    try:
        queue = binder_queue(broker)
        wait_until(lambda: broker.queue_counts(queue)[0] >= 6, timeout=30, what="six mails")
        first = drain(broker, queue)
        assert sorted(e.account_id for e in first if isinstance(e, MailFetched)) == sorted(ids)

        held = holders(store, ids)
        pids = {r.procs["fetcher"].pid: r for r in replicas}
        assert all(h is not None and int(h.split("-")[-2]) in pids for h in held.values())
        busiest, _n = Counter(held.values()).most_common(1)[0]
        assert busiest is not None
        victim = pids[int(busiest.split("-")[-2])]
        victim.kill("fetcher")
        orphans = [i for i, h in held.items() if h == busiest]

        for box, account_id in zip(boxes, ids, strict=True):
            box.append(make_mail("b@x.org", f"second for {account_id}"))
        wait_until(lambda: broker.queue_counts(queue)[0] >= 6, timeout=LEASE * 5, what="takeover")
        second = drain(broker, queue)
        assert sorted(e.account_id for e in second) == sorted(ids)  # each exactly once
        now_held = holders(store, orphans)
        assert all(h not in (None, busiest) for h in now_held.values())
    finally:
        for replica in replicas:
            replica.stop_all()
    assert set(holders(store, ids).values()) == {None}  # SIGTERM released every lease
