"""`mailintake demo`: a demo tenant, two mailboxes, sample mail, the pipeline, what happened."""

from __future__ import annotations

import argparse
import imaplib
import os
import ssl
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

from ops.context import Context
from ops.crm import import_data
from ops.output import UserError, print_table
from ops.run import STAGES
from ops.tokens import print_api_access

MANAGERS = [
    {"_id": "m-maria", "name": "Maria", "status": "free", "online": True},
    {"_id": "m-ivan", "name": "Ivan", "status": "free", "online": True},
    {"_id": "m-olga", "name": "Olga", "status": "lunch", "online": True},
]
SAMPLES = [  # (mailbox, sender, subject, the rule that should apply)
    ("shop", "Peter Novak <peter@customer.example>", "Re: [#3112] delivery date?", "subject_tag"),
    ("shop", "Anna <ANNA@customer.example>", "Invoice question", "sender"),
    ("shop", "Lena <lena@new.example>", "Do you ship to Norway?", "created"),
    ("shop", "Tom <tom@new.example>", "Wholesale prices", "created"),
    ("shop", "Eva <eva@new.example>", "Catalogue please", "created"),
    ("outlet", "Stranger <who@unknown.example>", "Hello?", "skipped"),
]
RULES = {
    "subject_tag": "order tag [#3112] -> the order (and its customer)",
    "sender": "known sender -> that customer",
    "created": "new sender, create on -> new customer, given to the group",
    "skipped": "new sender, create off -> skipped, the owner told",
}
# One each for the order's and Anna's manager, two per new customer, one for the skip.
EXPECTED_NOTIFICATIONS = 1 + 1 + 2 * 3 + 1


def register(commands: Any) -> None:
    d = commands.add_parser(
        "demo",
        help="run the whole pipeline on sample mail and show what happened",
        description="Seeds a demo tenant (managers, a manager group, customers, an order), "
        "connects two mailboxes of the local Dovecot, puts sample mail into them, runs the four "
        "stages and prints what happened to each mail and who was notified.",
    )
    d.add_argument("--imap-host", default=os.environ.get("MAILINTAKE_TEST_IMAP_HOST", "127.0.0.1"))
    d.add_argument(
        "--imap-port", type=int, default=int(os.environ.get("MAILINTAKE_TEST_IMAPS_PORT", "10993"))
    )
    d.add_argument("--ca-file", default=os.environ.get("MAILINTAKE_TEST_CA"))
    d.add_argument(
        "--password-env",
        default="MAILINTAKE_TEST_MAIL_PASSWORD",
        metavar="VAR",
        help="variable holding the demo mailboxes' password",
    )
    d.add_argument("--timeout", type=float, default=90.0)
    d.set_defaults(func=cmd_demo)


def _message(sender: str, subject: str) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, "shop@demo.example", subject
    msg["Date"], msg["Message-ID"] = formatdate(), make_msgid(domain="demo.example")
    msg.set_content(f"{subject}\n\nSent to the mailintake demo.")
    return msg.as_bytes()


def _append(args: argparse.Namespace, user: str, password: str, raw: bytes) -> None:
    context = ssl.create_default_context(cafile=args.ca_file)
    with imaplib.IMAP4_SSL(args.imap_host, args.imap_port, ssl_context=context) as client:
        client.login(user, password)
        client.append("INBOX", "", None, raw)


def _id(tenant: str, name: object) -> str:
    """The demo's CRM ids are the tenant's own: _ids are unique across tenants."""
    return f"{tenant}.{name}"


def _crm(tenant: str) -> dict[str, Any]:
    def own(name: object) -> str:
        return _id(tenant, name)

    return {
        "tenant_id": tenant,
        "managers": [{**m, "_id": own(m["_id"])} for m in MANAGERS],
        "manager_groups": [
            {
                "_id": own("g-new"),
                "name": "New customers",
                "manager_ids": [own(m["_id"]) for m in MANAGERS],
            }
        ],
        "customers": [
            {
                "_id": own("c-anna"),
                "emails": ["anna@customer.example"],
                "manager_id": own("m-olga"),
            },
            {"_id": own("c-peter"), "emails": ["peter@customer.example"], "manager_id": None},
        ],
        "orders": [
            {
                "_id": own("o-3112"),
                "number": "3112",
                "customer_id": own("c-peter"),
                "manager_id": own("m-ivan"),
            }
        ],
    }


def _add_accounts(
    ctx: Context, args: argparse.Namespace, tenant: str, password: str, stamp: str
) -> dict[str, str]:
    from shared.accounts import AccountConfig

    users = {"shop": f"demo-shop-{stamp}", "outlet": f"demo-outlet-{stamp}"}
    for name, user in users.items():
        config = AccountConfig(
            tenant_id=tenant,
            owner_id="u-admin",
            protocol="imap",
            host=args.imap_host,
            port=args.imap_port,
            security="ssl",
            username=user,
            ca_file=args.ca_file,
            shop_id=name,
            notify_manager=True,
            notify_skipped=True,
            poll_interval=1,
            create_customer=name == "shop",
            manager_group_id=_id(tenant, "g-new") if name == "shop" else None,
        )
        ctx.store.accounts.insert_one(
            {
                **config.model_dump(),
                "_id": f"{tenant}-{name}",
                "password_enc": ctx.secrets.encrypt(password),
                "enabled": True,
                "created_at": datetime.now(UTC),
                "state": {"status": "new"},
                "sync": {},
            }
        )
    return users


def _wait(ctx: Context, tenant: str, timeout: float) -> int:
    """Wait until every mail and notification is in; the number of mails processed."""
    deadline, shown, done = time.monotonic() + timeout, "", 0
    while time.monotonic() < deadline:
        done = ctx.store.emails.count_documents({"tenant_id": tenant})
        notes = ctx.store.notifications.count_documents({"tenant_id": tenant})
        line = f"  mails processed: {done}/{len(SAMPLES)}  notifications: {notes}"
        if line != shown:
            print(line, flush=True)
            shown = line
        if done >= len(SAMPLES) and notes >= EXPECTED_NOTIFICATIONS:
            break
        time.sleep(0.3)
    return done


def _manager_of(ctx: Context, tenant: str, email: dict[str, Any]) -> str | None:
    if email.get("order_id"):
        order = ctx.store.orders.find_one({"tenant_id": tenant, "_id": email["order_id"]})
        if order and order.get("manager_id"):
            return str(order["manager_id"])
    customer = ctx.store.customers.find_one({"tenant_id": tenant, "_id": email.get("customer_id")})
    return str(customer["manager_id"]) if customer and customer.get("manager_id") else None


def _report(ctx: Context, tenant: str) -> list[str]:
    """Print what happened to each mail and who was told what; the mails that went wrong."""
    names = {_id(tenant, m["_id"]): m["name"] for m in MANAGERS}
    names["u-admin"] = "admin (account owner)"
    expected = {subject: rule for _box, _sender, subject, rule in SAMPLES}
    rows, wrong = [], []
    for e in ctx.store.emails.find({"tenant_id": tenant}).sort([("received_at", 1), ("_id", 1)]):
        outcome = e.get("matched_by") or "skipped"
        rule = expected.get(e.get("subject") or "", "?")
        if outcome != rule:
            wrong.append(f"{e.get('subject')!r}: expected {rule}, got {outcome}")
        manager = _manager_of(ctx, tenant, e)
        rows.append(
            {
                "from": e.get("from_address"),
                "subject": e.get("subject"),
                "outcome": outcome if e.get("matched_by") else f"skipped ({e.get('skip_reason')})",
                "order": e.get("order_id"),
                "customer": e.get("customer_id"),
                "manager": names.get(manager or "", manager),
                "as_expected": outcome == rule,
            }
        )
    print("\nWhat happened to each mail:")
    print_table(rows, ["from", "subject", "outcome", "order", "customer", "manager", "as_expected"])
    subjects = {e["_id"]: e.get("subject") for e in ctx.store.emails.find({"tenant_id": tenant})}
    notes = [
        {
            "to": names.get(n["user_id"], n["user_id"]),
            "kind": n["kind"],
            "about": subjects.get(n.get("email_id"), n.get("customer_id")),
        }
        for n in ctx.store.notifications.find({"tenant_id": tenant}).sort(
            [("user_id", 1), ("created_at", 1), ("_id", 1)]
        )
    ]
    print("\nNotifications, per manager, in the order they were made:")
    print_table(notes, ["to", "kind", "about"])
    return wrong


def cmd_demo(args: argparse.Namespace, ctx: Context) -> int:
    password = os.environ.get(args.password_env)
    if not password:
        raise UserError(
            f"{args.password_env} is not set: run `make demo`, or set it to the "
            "password of the local Dovecot's users"
        )
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    tenant = f"demo-{stamp}"
    print(
        f"Demo tenant {tenant}: 3 managers (Maria free, Ivan free, Olga at lunch), "
        "a group for new customers, 2 customers, order #3112"
    )
    import_data(ctx, _crm(tenant))
    users = _add_accounts(ctx, args, tenant, password, stamp)
    for box, sender, subject, rule in SAMPLES:
        _append(args, users[box], password, _message(sender, subject))
        print(f"  mail to {box:<6} from {sender:<38} {subject!r:<30} rule: {RULES[rule]}")
    log_path = os.path.join(tempfile.gettempdir(), f"mailintake-{tenant}.log")
    print(f"Running fetcher, binder, assigner and notifier (their logs: {log_path})...")
    with open(log_path, "ab") as log:
        children = [
            subprocess.Popen([sys.executable, "-m", s], stdout=log, stderr=log) for s in STAGES
        ]
        try:
            done = _wait(ctx, tenant, args.timeout)
        finally:
            _stop(children)
    wrong = _report(ctx, tenant)
    if done < len(SAMPLES) or wrong:
        missing = (
            [f"only {done} of {len(SAMPLES)} mails were processed"] if done < len(SAMPLES) else []
        )
        print(f"mailintake: error: {'; '.join(missing + wrong)} (see {log_path})", file=sys.stderr)
        return 1
    print(f"\nAll {len(SAMPLES)} mails went by the rules.")
    print_api_access(ctx, tenant)
    return 0


def _stop(children: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each stage (each finishes the message in hand), then wait for them."""
    for child in children:
        child.terminate()
    for child in children:
        try:
            child.wait(timeout=60)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
