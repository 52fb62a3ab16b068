"""/operator/…: queues, dead letters (the `mailintake dlq` code) and accounts in error, on the
real RabbitMQ, for operator tokens only."""

from __future__ import annotations

import pytest

from shared.messaging import Broker
from shared.settings import Settings
from shared.store import Store
from tests.apiclient import Api, open_api
from tests.integration.test_ops_cli import dead_letter, depth
from tests.processes import wait_until

pytestmark = pytest.mark.integration


def test_queues_show_each_stages_queues_and_their_depth(api: Api, broker: Broker) -> None:
    dead_letter(broker, 1)
    dlq, headers = broker.topology.work_queue("binder") + ".dlq", api.token(None)

    def shown() -> dict[str, dict[str, object]]:
        answer = api.client.get("/operator/queues", headers=headers)
        return {r["queue"]: r for r in answer.json()} if answer.status_code == 200 else {}

    # The management API's figures lag by a few seconds; without it the depth is exact.
    wait_until(lambda: shown().get(dlq, {}).get("ready") == 1, 30, "the DLQ's depth")
    assert shown()[dlq]["consumers"] == 0 and broker.topology.work_queue("notifier") in shown()


def settles(broker: Broker, dlq: int, work: int = 0) -> None:
    """The queues' depths once RabbitMQ has taken back what a request held (it does so after
    the answer: the requeue of a quorum queue is not instant)."""
    wait_until(
        lambda: (depth(broker, "binder", ".dlq"), depth(broker, "binder")) == (dlq, work),
        10,
        f"{dlq} dead letters and {work} in the work queue",
    )


def test_dead_letters_are_listed_shown_replayed_and_purged(
    api: Api, broker: Broker, store: Store
) -> None:
    ids = [dead_letter(broker, n) for n in range(3)]
    headers = api.token(None, name="ops-alice")
    listed = api.client.get("/operator/dlq/binder", headers=headers).json()
    assert [d["id"] for d in listed] == ids and listed[1]["reason"] == "boom 1"
    settles(broker, 3)  # listing takes nothing away
    shown = api.client.get(f"/operator/dlq/binder/{ids[0]}", headers=headers).json()
    assert shown["id"] == ids[0] and shown["body"] == "{}"

    dry = api.client.post("/operator/dlq/binder/replay", json={"all": True, "dry_run": True},
                          headers=headers)  # fmt: skip
    assert dry.json()["ids"] == ids
    settles(broker, 3)
    done = api.client.post("/operator/dlq/binder/replay", json={"id": ids[1]}, headers=headers)
    assert done.json() == {"work_queue": broker.topology.work_queue("binder"), "dry_run": False,
                           "ids": [ids[1]]}  # fmt: skip
    settles(broker, 2, 1)
    gone = api.client.post("/operator/dlq/binder/replay", json={"id": ids[1]}, headers=headers)
    assert gone.status_code == 404 and "no message with id" in gone.json()["detail"]

    unconfirmed = api.client.delete("/operator/dlq/binder?confirm=notifier", headers=headers)
    assert unconfirmed.status_code == 422
    purged = api.client.delete("/operator/dlq/binder?confirm=binder", headers=headers)
    assert purged.json()["purged"] == 2
    settles(broker, 0, 1)
    # Who did it is recorded, as for the command: the token's name (a dry run records nothing).
    records = list(store["audit"].find({}).sort("at", 1))
    assert [(r["action"], r["actor"], r["count"]) for r in records] == [
        ("replay", "ops-alice", 1),
        ("purge", "ops-alice", 2),
    ]
    assert records[0]["message_ids"] == [ids[1]]
    assert sorted(records[1]["message_ids"]) == sorted([ids[0], ids[2]])


def test_an_unknown_queue_or_a_bad_age_is_a_problem(api: Api, broker: Broker) -> None:
    headers = api.token(None)
    unknown = api.client.get("/operator/dlq/nosuch", headers=headers)
    assert unknown.status_code == 404 and "nosuch" in unknown.json()["detail"]
    bad_age = api.client.get("/operator/dlq/binder?older_than=soon", headers=headers)
    assert bad_age.status_code == 422
    assert bad_age.json()["errors"][0]["field"] == "query.older_than"


def test_accounts_in_error_across_tenants(api: Api, store: Store) -> None:
    error = {"status": "error", "message": "login rejected"}
    store.accounts.insert_many(
        [
            {"_id": "a1", "tenant_id": "t-a", "state": error},
            {"_id": "b1", "tenant_id": "t-b", "state": error},
            {"_id": "b2", "tenant_id": "t-b", "state": {"status": "ok"}},
            {"_id": "b3", "tenant_id": "t-b", "state": error, "enabled": False},
        ]
    )
    rows = api.client.get("/operator/accounts", headers=api.token(None)).json()
    assert [(r["tenant_id"], r["id"], r["message"]) for r in rows] == [
        ("t-a", "a1", "login rejected"),
        ("t-b", "b1", "login rejected"),
    ]


def test_a_broker_that_is_down_is_a_503_naming_it(settings: Settings, store: Store) -> None:
    down = Settings(**{**dict(settings), "amqp_url": "amqp://guest:guest@127.0.0.1:1/"})
    for api in open_api(down, store):
        answer = api.client.get("/operator/dlq/binder", headers=api.token(None))
        assert answer.status_code == 503
        assert answer.headers["content-type"] == "application/problem+json"
        assert "127.0.0.1:1" in answer.json()["detail"]
        assert answer.headers["retry-after"] == "5"
