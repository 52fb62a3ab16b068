"""Replays and purges of dead letters are audited: on the message and in `audit`."""

from __future__ import annotations

import json

import pytest

from ops.deadletters import H_REPLAYED_BY
from shared.messaging import Broker
from shared.store import Store
from tests.integration.conftest import Cli
from tests.integration.test_ops_cli import dead_letter, depth

pytestmark = pytest.mark.integration


def test_replay_and_purge_record_who_did_what_and_when_newest_first(
    cli: Cli, broker: Broker, store: Store
) -> None:
    for n in range(4):
        dead_letter(broker, n)
    cli("dlq", "replay", "binder", "--id", "id-0", "--by", "alice")
    cli("dlq", "replay", "binder", "--all", "--limit", "2", LOGNAME="night-operator")
    cli("dlq", "replay", "binder", "--all", "--dry-run")  # does nothing: no record
    cli("dlq", "purge", "binder", "--yes", "--by", "bob")
    assert depth(broker, "binder", ".dlq") == 0 and depth(broker, "binder") == 3

    replayed = {}
    for _ in range(3):
        got = broker.get(broker.topology.work_queue("binder"))
        assert got is not None
        replayed[got[0].message_id] = got[0].headers[H_REPLAYED_BY]
    broker.requeue_all()
    assert replayed == {"id-0": "alice", "id-1": "night-operator", "id-2": "night-operator"}

    dlq = broker.topology.dead_letter_queue(broker.topology.work_queue("binder"))
    rows = json.loads(cli("dlq", "audit", "--json").stdout)
    assert [(r["action"], r["actor"], r["count"], r["message_ids"]) for r in rows] == [
        ("purge", "bob", 1, ["id-3"]),
        ("replay", "night-operator", 2, ["id-1", "id-2"]),
        ("replay", "alice", 1, ["id-0"]),
    ]
    assert {r["queue"] for r in rows} == {dlq}
    assert rows[0]["at"] > rows[1]["at"] > rows[2]["at"]
    assert store["audit"].count_documents({}) == 3
    assert all("tenant_id" not in d for d in store["audit"].find())  # operator records
    table = cli("dlq", "audit").stdout
    assert "night-operator" in table and "id-1, id-2" in table
