"""The `mailintake` queues and dlq commands on the real RabbitMQ, the store and the binder."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from binder.adapters import customer_id_for
from shared.contracts import AccountOptions, MailFetched
from shared.messaging import Broker
from shared.settings import Settings
from shared.store import Store
from shared.wire import H_ACCOUNT, H_ERROR, H_FAILED_AT, H_TENANT, Outgoing, encode_event
from tests.conftest import make_mail, settings_env, store_accounts
from tests.integration.conftest import Cli
from tests.processes import StageProcesses, wait_until

pytestmark = pytest.mark.integration

TENANT, ACCOUNT = "tenant-ops", "acct-ops"


@pytest.fixture
def binder(settings: Settings, tmp_path: Path) -> Iterator[StageProcesses]:
    procs = StageProcesses(settings_env(settings), tmp_path)
    procs.start("binder")
    yield procs
    procs.stop_all()


def fetched(raw: bytes) -> tuple[MailFetched, bytes]:
    event = MailFetched.for_mail(
        email_id=f"mail-{len(raw)}",
        now=datetime.now(UTC),
        tenant_id=TENANT,
        account_id=ACCOUNT,
        options=AccountOptions(owner_id="u-admin", notify_manager=True, create_customer=True),
        protocol="imap",
        size=len(raw),
    )
    return event, raw


def dead_letter(broker: Broker, n: int, failed_at: datetime | None = None) -> str:
    """Put a message straight into the binder's DLQ, as the worker would; its id."""
    dlq = broker.topology.dead_letter_queue(broker.topology.work_queue("binder"))
    when = (failed_at or datetime.now(UTC)).isoformat()
    headers = {H_ERROR: f"boom {n}", H_TENANT: TENANT, H_ACCOUNT: ACCOUNT, H_FAILED_AT: when}
    broker.publish(
        [Outgoing(dlq, b"{}", exchange="", message_id=f"id-{n}", type="x", headers=headers)]
    )
    return f"id-{n}"


def depth(broker: Broker, stage: str, suffix: str = "") -> int:
    return broker.queue_counts(broker.topology.work_queue(stage) + suffix)[0]


def test_a_poisoned_mail_is_replayed_after_the_fix_and_processed_once(
    cli: Cli, broker: Broker, store: Store, binder: StageProcesses
) -> None:
    # Poisoned on purpose: the id the binder gives the new customer is taken by a customer
    # of another tenant, so creating it fails (at once: trying again cannot help) until that
    # stray document is removed.
    stray = {"_id": customer_id_for(TENANT, "lena@new.example"), "tenant_id": "other"}
    store.customers.insert_one({**stray, "emails": ["lena@new.example"]})
    event, raw = fetched(make_mail("Lena <lena@new.example>", "Do you ship to Norway?"))
    store_accounts(store, [event])
    broker.publish([encode_event(event, raw)])
    wait_until(lambda: depth(broker, "binder", ".dlq") == 1, 30, "the DLQ", binder.logs)

    [row] = json.loads(cli("dlq", "list", "binder", "--json").stdout)
    assert row["id"] == event.event_id and row["email"] == event.email_id
    assert (row["tenant"], row["account"]) == (TENANT, ACCOUNT)
    assert "exists in another tenant" in row["reason"]
    assert "retries exhausted" not in row["reason"]
    assert event.event_id in cli("dlq", "show", "binder", "--id", event.event_id).stdout
    assert "would replay 1" in cli("dlq", "replay", "binder", "--all", "--dry-run").stdout
    assert depth(broker, "binder", ".dlq") == 1

    store.customers.delete_one(stray)  # the fix
    out = cli("dlq", "replay", "binder", "--id", event.event_id).stdout
    assert "replayed 1 message(s)" in out

    wait_until(lambda: depth(broker, "assigner") == 1, 30, "the MailBound", binder.logs)
    [email] = list(store.emails.find({"tenant_id": TENANT}))
    assert email["customer_id"] == stray["_id"] and email["matched_by"] == "created"
    assert depth(broker, "binder", ".dlq") == 0
    assert "replayed 0 message(s)" in cli("dlq", "replay", "binder", "--all").stdout
    assert depth(broker, "assigner") == 1  # processed exactly once: one MailBound, one email
    assert store.customers.count_documents({"tenant_id": TENANT}) == 1


def test_listing_keeps_every_message_and_filters_by_reason_and_age(
    cli: Cli, broker: Broker
) -> None:
    old = datetime(2026, 1, 1, tzinfo=UTC)
    ids = [dead_letter(broker, 1, old), dead_letter(broker, 2)]
    for _ in range(2):
        listed = json.loads(cli("dlq", "list", "binder.in.dlq", "--json").stdout)
        assert [r["id"] for r in listed] == ids  # still there, still in order
    by_reason = json.loads(cli("dlq", "list", "binder", "--reason", "BOOM 2", "--json").stdout)
    assert [r["id"] for r in by_reason] == ["id-2"]
    by_age = json.loads(cli("dlq", "list", "binder", "--older-than", "2d", "--json").stdout)
    assert [r["id"] for r in by_age] == ["id-1"]
    table = cli("dlq", "list", "binder").stdout
    assert "boom 1" in table and TENANT in table


def test_replay_honours_limit_and_marks_the_copy(cli: Cli, broker: Broker) -> None:
    for n in range(3):
        dead_letter(broker, n)
    assert "replayed 2 message(s)" in cli("dlq", "replay", "binder", "--all", "--limit", "2").stdout
    assert depth(broker, "binder", ".dlq") == 1 and depth(broker, "binder") == 2
    got = broker.get(broker.topology.work_queue("binder"))
    assert got is not None
    headers = got[0].headers
    assert headers["mailintake-replay-count"] == 1 and "mailintake-replayed-at" in headers
    assert H_ERROR not in headers and "x-death" not in headers
    broker.requeue_all()


def test_purge_asks_unless_yes(cli: Cli, broker: Broker) -> None:
    dead_letter(broker, 1)
    refused = cli("dlq", "purge", "binder", expect=2)
    assert "--yes" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert depth(broker, "binder", ".dlq") == 1
    assert "purged 1 message(s)" in cli("dlq", "purge", "binder", "--yes").stdout


def test_queues_shows_depth_with_and_without_the_management_api(cli: Cli, broker: Broker) -> None:
    dead_letter(broker, 1)
    rows = json.loads(cli("queues", "--json", MAILINTAKE_RABBITMQ_MANAGEMENT_URL="").stdout)
    by_name = {r["queue"]: r for r in rows}
    dlq = broker.topology.work_queue("binder") + ".dlq"
    assert by_name[dlq]["ready"] == 1 and by_name[dlq]["consumers"] == 0
    assert set(by_name) == set(broker.topology.all_queues())

    def managed() -> bool:
        rows = json.loads(cli("queues", "--json").stdout)
        return any(r["queue"] == dlq and r.get("ready") == 1 and "unacked" in r for r in rows)

    wait_until(managed, 30, "the management API's figures")  # it refreshes every few seconds


@pytest.mark.parametrize(
    ("args", "expect", "says"),
    [
        (("dlq", "list", "nosuch"), 2, "unknown stage 'nosuch'"),
        (("dlq", "show", "binder", "--id", "nope"), 2, "no message with id 'nope'"),
        (("dlq", "replay", "binder", "--id", "nope"), 2, "no message with id 'nope'"),
        (("dlq", "list", "binder", "--older-than", "soon"), 2, "--older-than 'soon'"),
        (("dlq", "list", "binder.in.retry"), 2, "is a retry queue"),
    ],
)
def test_user_mistakes_are_one_line_and_non_zero(
    cli: Cli, broker: Broker, args: tuple[str, ...], expect: int, says: str
) -> None:
    result = cli(*args, expect=expect)
    assert says in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_a_broker_that_is_down_is_named_with_its_address(cli: Cli) -> None:
    url = "amqp://guest:secret@127.0.0.1:1/"
    result = cli("queues", expect=1, MAILINTAKE_AMQP_URL=url, MAILINTAKE_RABBITMQ_MANAGEMENT_URL="")
    assert "RabbitMQ at amqp://***@127.0.0.1:1/ is not reachable" in result.stderr
    assert "secret" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_crm_import_refuses_ids_another_tenant_holds(
    cli: Cli, store: Store, tmp_path: Path
) -> None:
    def crm_file(tenant: str) -> str:
        path = tmp_path / f"{tenant}.json"
        path.write_text(json.dumps({
            "tenant_id": tenant,
            "customers": [{"_id": "c-anna", "emails": ["anna@x.example"]}],
            "managers": [{"_id": "m-1", "name": "One"}],
        }))  # fmt: skip
        return str(path)

    cli("crm", "import", crm_file(TENANT))
    cli("crm", "import", crm_file(TENANT))  # the same tenant again: updated in place
    refused = cli("crm", "import", crm_file("tenant-b"), expect=2)
    assert "customers: _id c-anna already belong(s) to another tenant" in refused.stderr
    assert "tenant-b" in refused.stderr
    assert [d["tenant_id"] for d in store.customers.find({"_id": "c-anna"})] == [TENANT]
    assert store.managers.count_documents({"tenant_id": "tenant-b"}) == 0


def test_crm_import_of_a_bad_file_names_each_bad_value_and_writes_nothing(
    cli: Cli, store: Store, tmp_path: Path
) -> None:
    path = tmp_path / "crm.json"
    path.write_text(json.dumps({
        "tenant_id": TENANT,
        "managers": [{"_id": "m-1", "name": "One"}],
        "customers": [{"_id": {"$gt": ""}, "emails": ["a@x.example"]},
                      {"_id": "c-2", "emails": "b@x.example"}],
    }))  # fmt: skip
    refused = cli("crm", "import", str(path), expect=2)
    lines = refused.stderr.strip().splitlines()
    assert lines[0] == "mailintake: error: 3 bad values, nothing imported:"
    assert '  customers[0]._id: expected a string or an integer, got an object {"$gt": ""}' in lines
    assert '  customers[1].emails: expected a list, got a string "b@x.example"' in lines
    assert "Traceback" not in refused.stderr
    assert store.managers.count_documents({"tenant_id": TENANT}) == 0
    assert store.customers.count_documents({}) == 0
    path.write_text("[]")
    listed = cli("crm", "import", str(path), expect=2)
    assert (
        listed.stderr.strip() == "mailintake: error: the file must hold one JSON object, not a list"
    )


def test_listings_of_an_unknown_tenant_or_user_are_refused(
    cli: Cli, store: Store, tmp_path: Path
) -> None:
    path = tmp_path / "crm.json"
    path.write_text(json.dumps({"tenant_id": TENANT, "managers": [{"_id": "m-1", "name": "One"}]}))
    listings = (("emails", "list"), ("notifications", "list"), ("managers", "list"))
    for command in (*listings, ("accounts", "list"), ("accounts", "status")):
        refused = cli(*command, "--tenant", "no-such-tenant", expect=2)
        assert "unknown tenant 'no-such-tenant'" in refused.stderr, command
    cli("crm", "import", str(path))
    assert cli("emails", "list", "--tenant", TENANT).stdout.strip() == "(none)"
    assert (
        cli("notifications", "list", "--tenant", TENANT, "--user", "m-1").stdout.strip() == "(none)"
    )
    refused = cli("notifications", "list", "--tenant", TENANT, "--user", "m-2", expect=2)
    assert f"unknown user 'm-2' in tenant '{TENANT}'" in refused.stderr
