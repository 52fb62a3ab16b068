"""Two tenants with a customer of the same address, through the real pipeline: no crossing over."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from shared.settings import Settings
from shared.store import Store
from tests.conftest import Mailbox, make_mail, settings_env
from tests.integration.test_fetcher_imap import add_account
from tests.processes import StageProcesses, wait_until
from tests.services import REPO, MailServer

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.slow]

SHARED = "shared@customer.example"  # a customer of both tenants
NEWBIE = "newbie@prospect.example"  # unknown to both: each tenant makes its own customer
TENANTS = ("tenant-a", "tenant-b")


def seed(store: Store, tenant: str) -> None:
    """A known customer with the shared address, a group of one manager; order 100 in A only."""
    for m in ("known", "new", "order"):
        store.managers.insert_one(
            {
                "_id": f"{tenant}-{m}",
                "tenant_id": tenant,
                "name": m,
                "status": "free",
                "online": True,
            }
        )
    store.manager_groups.insert_one(
        {"_id": f"{tenant}-g", "tenant_id": tenant, "name": "g", "manager_ids": [f"{tenant}-new"]}
    )
    store.customers.insert_one(
        {
            "_id": f"{tenant}-c",
            "tenant_id": tenant,
            "emails": [SHARED],
            "manager_id": f"{tenant}-known",
        }
    )
    if tenant == "tenant-a":
        store.orders.insert_one(
            {"_id": "a-order-100", "tenant_id": tenant, "number": "100",
             "customer_id": f"{tenant}-c", "manager_id": f"{tenant}-order"}
        )  # fmt: skip


def mailbox_of(store: Store, settings: Settings, mail: MailServer, tenant: str) -> str:
    box = Mailbox(mail, f"u{uuid.uuid4().hex[:12]}")
    box.append(make_mail(SHARED, f"hello from {tenant}"))
    box.append(make_mail(NEWBIE, f"first contact {tenant}"))
    if tenant == "tenant-b":  # names A's order: B has no order 100, so B makes a customer
        box.append(make_mail("other@unknown.example", "about [#100]"))
    account = add_account(
        store, settings, box, tenant_id=tenant, owner_id=f"{tenant}-owner",
        create_customer=True, manager_group_id=f"{tenant}-g", notify_manager=True,
    )  # fmt: skip
    return account.id


def listing(env: dict[str, str], *args: str) -> list[dict[str, Any]]:
    result = subprocess.run(
        [sys.executable, "-m", "ops.cli", *args, "--json"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows


def test_two_tenants_with_the_same_customer_address_never_see_each_others_mail(
    settings: Settings, store: Store, mail: MailServer, tmp_path: Path
) -> None:
    for tenant in TENANTS:
        seed(store, tenant)
    accounts = {t: mailbox_of(store, settings, mail, t) for t in TENANTS}
    env = settings_env(settings) | {"MAILINTAKE_LEASE_SECONDS": "3"}
    stages = StageProcesses(env, tmp_path)
    stages.start("fetcher", "binder", "assigner", "notifier")
    try:
        wait_until(
            lambda: store.notifications.count_documents({}) >= 8,  # 3 in A, 5 in B
            timeout=90, what="every notification", on_timeout=stages.logs,
        )  # fmt: skip
    finally:
        stages.stop_all()
    for tenant in TENANTS:
        check_tenant(store, tenant, accounts[tenant])
    a_new = store.customers.find_one({"tenant_id": "tenant-a", "emails": NEWBIE}) or {}
    b_new = store.customers.find_one({"tenant_id": "tenant-b", "emails": NEWBIE}) or {}
    assert a_new and b_new and a_new["_id"] != b_new["_id"]
    b_tagged = store.emails.find_one({"tenant_id": "tenant-b", "subject": "about [#100]"}) or {}
    assert b_tagged.get("order_id") is None and b_tagged.get("matched_by") == "created"
    for tenant in TENANTS:
        rows = listing(env, "emails", "list", "--tenant", tenant)
        notes = listing(env, "notifications", "list", "--tenant", tenant)
        assert rows and {r["tenant_id"] for r in rows} == {tenant}
        assert notes and {n["tenant_id"] for n in notes} == {tenant}


def check_tenant(store: Store, tenant: str, account_id: str) -> None:
    """The tenant's mail came from its own account and points only at its own documents."""
    emails = list(store.emails.find({"tenant_id": tenant}))
    assert len(emails) == (2 if tenant == "tenant-a" else 3)
    assert {e["account_id"] for e in emails} == {account_id}
    own_customers = {c["_id"] for c in store.customers.find({"tenant_id": tenant})}
    assert {e["customer_id"] for e in emails} <= own_customers
    shared = next(e for e in emails if e["from_address"] == SHARED)
    assert shared["customer_id"] == f"{tenant}-c"
    notes = list(store.notifications.find({"tenant_id": tenant}))
    assert len(notes) == (3 if tenant == "tenant-a" else 5)
    assert {n["user_id"] for n in notes} <= {f"{tenant}-known", f"{tenant}-new", f"{tenant}-order"}
    assert {n["email_id"] for n in notes} <= {e["_id"] for e in emails}
    assert {n["customer_id"] for n in notes} <= own_customers
