"""A mail APPENDed to Dovecot goes through four separate processes to a notification."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.store import Store
from tests.conftest import Mailbox, make_mail
from tests.processes import StageProcesses, wait_until

pytestmark = pytest.mark.e2e

TENANT = "tenant-e2e"


def seed(tmp_path: Path, cli: object) -> None:
    data = {
        "tenant_id": TENANT,
        "managers": [{"_id": "m-ann", "name": "Maria", "status": "free", "online": True}],
        "customers": [{"_id": "cust-ann", "emails": ["Ann@Example.com"], "manager_id": "m-ann"}],
    }
    path = tmp_path / "crm.json"
    path.write_text(json.dumps(data))
    cli("crm", "import", str(path))  # type: ignore[operator]


def add_account(cli: object, mailbox: Mailbox) -> str:
    s = mailbox.server
    result = cli(  # type: ignore[operator]
        "accounts",
        "add",
        "--tenant",
        TENANT,
        "--owner",
        "owner-1",
        "--protocol",
        "imap",
        "--host",
        s.host,
        "--port",
        str(s.imaps_port),
        "--username",
        mailbox.user,
        "--password-env",
        "MI_TEST_PW",
        "--ca-file",
        s.ca_file,
        "--notify-manager",
        "--poll-interval",
        "1",
        env={"MI_TEST_PW": s.password},
    )
    return str(result.stdout.strip())


def test_mail_flows_from_dovecot_to_a_managers_notification(
    tmp_path: Path, cli: object, mailbox: Mailbox, store: Store, stages: StageProcesses
) -> None:
    seed(tmp_path, cli)
    account_id = add_account(cli, mailbox)
    stages.start("fetcher", "binder", "assigner", "notifier")
    mailbox.append(make_mail("Ann <ann@example.com>", "Where is my parcel?"))

    wait_until(
        lambda: store.notifications.find_one({"tenant_id": TENANT, "user_id": "m-ann"}),
        timeout=60,
        what="the manager's notification",
        on_timeout=stages.logs,
    )

    [email] = list(store.emails.find({"tenant_id": TENANT}))
    assert email["account_id"] == account_id
    assert email["status"] == "bound" and email["matched_by"] == "sender"
    assert email["customer_id"] == "cust-ann"
    assert email["subject"] == "Where is my parcel?"
    [note] = list(store.notifications.find({"tenant_id": TENANT}))
    assert note["kind"] == "incoming_email" and note["email_id"] == email["_id"]
    wait_until(lambda: "\\Seen" in mailbox.flags()[0], timeout=10, what="the \\Seen flag")
    assert all(stages.alive().values())
    assert stages.stop_all() == {"fetcher": 0, "binder": 0, "assigner": 0, "notifier": 0}
