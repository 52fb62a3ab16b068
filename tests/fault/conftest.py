"""Fault-suite fixtures: a mixed stream of mail on the real services, its rules, the table."""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from shared.messaging import Broker
from shared.settings import Settings
from shared.store import Store
from shared.topology import Topology
from tests.conftest import Mailbox, delete_topology, make_mail, settings_env
from tests.integration.test_fetcher_imap import add_account
from tests.processes import StageProcesses
from tests.services import REPO, MailServer

TENANT = "t-fault"
OWNER = "owner-fault"
GROUP = "g-new-customers"
GROUP_MANAGERS = ("m-new-1", "m-new-2", "m-new-3")
KNOWN_MANAGERS = ("m-known-1", "m-known-2")
ORDER_MANAGER = "m-orders"
KNOWN_CUSTOMERS = 12
ACCOUNTS = 3  # accounts 0 and 1 create customers; account 2 skips unknown senders
DELETING_ACCOUNT = 2  # deletes loaded messages: its bound mail goes, its skipped mail stays
RESULTS = REPO / "bench" / "results" / "fault_table.json"

Kind = Literal["tag", "known", "new", "skip"]
KINDS: tuple[Kind, ...] = ("tag", "known", "new", "skip")


@dataclass(frozen=True)
class Planned:
    """One mail of the stream and what the rules must make of it."""

    token: str
    kind: Kind
    account: int
    sender: str
    subject: str
    recipient: str | None  # who is told of it (None: a manager of the group)


@dataclass
class Stream:
    """The mixed stream and the CRM data it is played against."""

    mails: list[Planned]
    crm: dict[str, list[dict[str, Any]]]

    def of_kind(self, kind: Kind) -> list[Planned]:
        return [m for m in self.mails if m.kind == kind]

    def finishing_notifications(self) -> int:
        """incoming_email / message_skipped: exactly one per mail."""
        return len(self.mails)


def _crm() -> dict[str, list[dict[str, Any]]]:
    managers = [*GROUP_MANAGERS, *KNOWN_MANAGERS, ORDER_MANAGER]
    customers = [
        {
            "_id": f"c-known-{j}",
            "emails": [f"known{j}@customers.example"],
            "manager_id": KNOWN_MANAGERS[j % 2],
        }
        for j in range(KNOWN_CUSTOMERS)
    ]
    orders = [  # odd orders have no manager: their customer's manager is told
        {
            "_id": f"o-{j}",
            "number": str(7000 + j),
            "customer_id": f"c-known-{j}",
            "manager_id": ORDER_MANAGER if j % 2 == 0 else None,
        }
        for j in range(KNOWN_CUSTOMERS)
    ]
    return {
        "managers": [{"_id": m, "name": m, "status": "free", "online": True} for m in managers],
        "manager_groups": [{"_id": GROUP, "name": "new", "manager_ids": [*GROUP_MANAGERS]}],
        "customers": customers,
        "orders": orders,
    }


def _plan(i: int) -> Planned:
    kind, token, j = KINDS[i % 4], f"m{i:05d}", i % KNOWN_CUSTOMERS
    if kind == "tag":
        subject = f"Re: [#{7000 + j}] question {token}"
        recipient = ORDER_MANAGER if j % 2 == 0 else KNOWN_MANAGERS[j % 2]
        return Planned(token, kind, i % ACCOUNTS, f"tagger{i}@anywhere.example", subject, recipient)
    if kind == "known":
        sender = f"known{j}@customers.example"
        return Planned(token, kind, i % ACCOUNTS, sender, f"hello {token}", KNOWN_MANAGERS[j % 2])
    if kind == "new":
        return Planned(token, kind, (i // 4) % 2, f"new{i}@prospects.example", f"hi {token}", None)
    return Planned(token, kind, 2, f"stranger{i}@nowhere.example", f"offer {token}", OWNER)


def mixed_stream(count: int) -> Stream:
    """`count` mails: a quarter each of order tags, known senders, new senders, mail to skip."""
    return Stream([_plan(i) for i in range(count)], _crm())


def seed(store: Store, stream: Stream) -> None:
    """The CRM's documents of the tenant, as the CRM writes them."""
    for collection, docs in stream.crm.items():
        store[collection].insert_many([{**d, "tenant_id": TENANT} for d in docs])


def fill(mailbox: Mailbox, mails: list[Planned]) -> None:
    """APPEND the mails over one IMAP connection."""
    client = mailbox.connect()
    try:
        for m in mails:
            client.append("INBOX", "", None, make_mail(m.sender, m.subject, body=f"body {m.token}"))
    finally:
        client.logout()


@dataclass
class World:
    """A seeded tenant with its filled mailboxes and accounts, and the stages to run on it."""

    stream: Stream
    store: Store
    broker: Broker
    mailboxes: list[Mailbox]
    account_ids: list[str]
    stages: StageProcesses
    settings: Settings
    events: list[str] = field(default_factory=list)


def fault_settings(settings: Settings) -> Settings:
    """Retries that outlast a restarted service (~40 s), as production's defaults do."""
    return settings.model_copy(
        update={
            "retry_base_seconds": 0.5,
            "retry_max_seconds": 4.0,
            "max_retries": 12,
            "delivery_limit": 6,
        }
    )


def _accounts(store: Store, settings: Settings, mailboxes: list[Mailbox]) -> list[str]:
    options = {"tenant_id": TENANT, "owner_id": OWNER, "notify_manager": True}
    creating = {"create_customer": True, "manager_group_id": GROUP}
    ids = []
    for index, mailbox in enumerate(mailboxes):
        extra = creating if index < 2 else {"notify_skipped": True}
        if index == DELETING_ACCOUNT:
            extra = {**extra, "delete_after_import": True}
        ids.append(add_account(store, settings, mailbox, **options, **extra).id)
    return ids


@pytest.fixture
def world(
    settings: Settings, mail: MailServer, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[World]:
    """The tenant of one scenario, mailboxes filled (not yet fetched), stages not yet started."""
    count = int(os.environ.get("MAILINTAKE_FAULT_MAILS", "2000"))
    stream, cfg = mixed_stream(count), fault_settings(settings)
    store = Store(cfg.mongo_url.get_secret_value(), cfg.mongo_database)
    store.ensure_indexes()
    broker = Broker(cfg.amqp_url.get_secret_value(), Topology(cfg.namespace, cfg.delivery_limit))
    broker.connect()
    broker.declare()
    seed(store, stream)
    mailboxes = [Mailbox(mail, f"u{uuid.uuid4().hex[:12]}") for _ in range(ACCOUNTS)]
    fillers = [
        threading.Thread(target=fill, args=(box, [m for m in stream.mails if m.account == i]))
        for i, box in enumerate(mailboxes)
    ]
    for t in (*fillers,):
        t.start()
    for t in fillers:
        t.join()
    # Small fetch batches keep the first load going long enough for a fault to hit it.
    batch = str(max(1, count // 200))
    env = settings_env(cfg) | {"MAILINTAKE_LEASE_SECONDS": "3", "MAILINTAKE_FETCH_BATCH": batch}
    stages = StageProcesses(env, tmp_path)
    w = World(stream, store, broker, mailboxes, _accounts(store, cfg, mailboxes), stages, cfg)
    yield w
    stages.stop_all()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(stages.logs())
    delete_topology(broker)
    broker.close()
    store.client.drop_database(cfg.mongo_database)
    store.close()


@dataclass(frozen=True)
class FaultRow:
    """One line of the fault table."""

    fault: str
    mails: int
    in_flight: int
    lost: int
    duplicated: int
    recovery_seconds: float | None
    ok: bool


ROWS = pytest.StashKey[list[FaultRow]]()


@pytest.fixture
def fault_rows(request: pytest.FixtureRequest) -> list[FaultRow]:
    """The session's table; rows are printed and written to bench/results at the end."""
    return request.config.stash.setdefault(ROWS, [])


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    rows = config.stash.get(ROWS, [])
    if not rows:
        return
    write = terminalreporter.write_line
    terminalreporter.section("fault table")
    header = f"{'fault':<24} {'mails':>6} {'in flight':>9} {'lost':>5} {'dup':>5} {'recovery':>9}"
    write(header)
    for r in rows:
        recovery = "-" if r.recovery_seconds is None else f"{r.recovery_seconds:.1f}s"
        write(
            f"{r.fault:<24} {r.mails:>6} {r.in_flight:>9} {r.lost:>5} {r.duplicated:>5} "
            f"{recovery:>9}{'' if r.ok else '  FAILED'}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
    write(f"written to {RESULTS.relative_to(REPO)}")
