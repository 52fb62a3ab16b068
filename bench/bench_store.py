"""The store's share of a first load, without the pipeline: its CPU per mail.

The commands the stages send for N mails (mixed as bench_pipeline mixes them, in batches as the
binder takes them): the binder's reads of a batch's e-mails, customers and orders, its inserts of
new customers and e-mails; the assigner's reads of the new customers' e-mails (their binding
only), of their account and of the customers, its updates of them and of their e-mails; the
notifier's inserts of notifications. No attachments, no broker, no mailbox: a change to the
store (deploy/local/ferretdb's patches) is measured here in seconds, on a database of its own,
with the store's CPU per step. CPU is the local store's (its pid file); on another store, wall
time only.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pymongo import UpdateOne

from assigner.bindings import BINDING_FIELDS
from bench.common import print_table, save_json, store_cpu
from shared.accounts import OPTION_FIELDS
from shared.store import Store, bulk_write_in_chunks
from tests.services import load_local_env

DATABASE = "bench_store"
KNOWN = 200
NOTIFY_CHUNK = 40  # about what the notifier writes at a time while it keeps up


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=20_000, help="mails (20000)")
    p.add_argument("--batch", type=int, default=150, help="mails per binder batch (150)")
    return p.parse_args()


def seed(store: Store) -> None:
    store.ensure_indexes()
    store.customers.insert_many(
        [{"_id": f"k{j}", "tenant_id": "t", "emails": [f"known{j}@c.example"],
          "manager_id": "m1"} for j in range(KNOWN)]
    )  # fmt: skip
    store.orders.insert_many(
        [{"_id": f"o{j}", "tenant_id": "t", "number": str(10_000 + j), "customer_id": f"k{j}"}
         for j in range(KNOWN)]
    )  # fmt: skip


def email(i: int, sender: str, now: datetime) -> dict[str, Any]:
    return {
        "_id": f"e{i}", "tenant_id": "t", "account_id": "a", "shop_id": None, "size": 12_345,
        "received_at": now, "created_at": now, "event_id": f"ev{i}", "message_id": f"m{i}@x",
        "from_address": sender, "from_name": "Some One", "subject": f"Question {i}",
        "preview": "Здравствуйте, подскажите, когда придёт мой заказ? " * 10, "sent_at": now,
        "in_reply_to": [], "references": [], "auto_reply": None, "status": "bound",
        "matched_by": "sender", "customer_id": f"c{i}", "order_id": None, "manager_id": None,
        "customer_created": False, "attachments": [],
    }  # fmt: skip


class Steps:
    """The store's CPU seconds spent in each named step, added up over the batches."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        before = store_cpu() or 0.0
        yield
        self.cpu[name] = self.cpu.get(name, 0.0) + (store_cpu() or 0.0) - before


def batch(store: Store, ids: range, now: datetime, step: Steps) -> None:
    """One binder batch and what the assigner and the notifier write for it."""
    senders = [f"known{i % KNOWN}@c.example" if i % 20 < 10 else f"new{i}@n.example" for i in ids]
    new = [i for i in ids if 10 <= i % 20 < 17]
    with step("binder: read e-mails, customers, orders"):
        list(store.emails.find({"tenant_id": "t", "_id": {"$in": [f"e{i}" for i in ids]}}))
        wanted = {"$in": sorted(set(senders))}
        list(store.customers.find({"tenant_id": "t", "emails": wanted}).sort("_id", 1))
        numbers = {"$in": [str(10_000 + i % KNOWN) for i in ids if i % 20 < 5]}
        list(store.orders.find({"tenant_id": "t", "number": numbers}).sort("_id", 1))
    with step("binder: insert customers"):
        store.customers.insert_many(
            [{"_id": f"mail-{i}", "tenant_id": "t", "emails": [f"new{i}@n.example"],
              "manager_id": None, "created_at": now, "source": "mail"} for i in new]
        )  # fmt: skip
    with step("binder: insert e-mails"):
        store.emails.insert_many([email(i, s, now) for i, s in zip(ids, senders, strict=True)])
    with step("assigner: read e-mails, accounts"):
        list(
            store.emails.find(
                {"tenant_id": "t", "_id": {"$in": [f"e{i}" for i in new]}}, BINDING_FIELDS
            )
        )
        list(store.accounts.find({"tenant_id": "t", "_id": {"$in": ["a"]}}, OPTION_FIELDS))
    with step("assigner: read customers"):
        list(store.customers.find({"tenant_id": "t", "_id": {"$in": [f"mail-{i}" for i in new]}}))
    with step("assigner: update customers"):
        bulk_write_in_chunks(
            store.customers,
            [UpdateOne({"tenant_id": "t", "_id": f"mail-{i}"}, {"$set": {"manager_id": "m2"}})
             for i in new],
            ordered=False,
        )  # fmt: skip
    with step("assigner: update e-mails"):
        bulk_write_in_chunks(
            store.emails,
            [UpdateOne({"_id": f"e{i}", "tenant_id": "t"}, {"$set": {"manager_id": "m2"}})
             for i in new],
            ordered=False,
        )  # fmt: skip
    notes = [
        {"_id": f"n{i}-{k}", "tenant_id": "t", "user_id": "m2", "kind": "incoming_email",
         "email_id": f"e{i}", "text": f"New mail: Question {i}", "created_at": now}
        for i in ids for k in range(2 if i in new else 1)
    ]  # fmt: skip
    with step("notifier: insert notifications"):
        for start in range(0, len(notes), NOTIFY_CHUNK):
            store.notifications.insert_many(notes[start : start + NOTIFY_CHUNK])


def main() -> None:
    args = parse_args()
    load_local_env()
    store = Store(os.environ.get("MAILINTAKE_MONGO_URL", "mongodb://127.0.0.1:27017"), DATABASE)
    store.client.drop_database(DATABASE)
    try:
        seed(store)
        now, cpu0, t0, step = datetime.now(UTC), store_cpu(), time.perf_counter(), Steps()
        for start in range(0, args.count, args.batch):
            batch(store, range(start, min(start + args.batch, args.count)), now, step)
        wall, cpu1 = time.perf_counter() - t0, store_cpu()
    finally:
        store.client.drop_database(DATABASE)
        store.close()
    cpu = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
    per_mail = None if cpu is None else cpu / args.count * 1e3
    row = {
        "mails": args.count, "batch": args.batch, "seconds": wall,
        "store cpu s": cpu, "store cpu ms per mail": per_mail,
    }  # fmt: skip
    print_table("The store's work for a first load (no broker, no mailbox)", [row])
    steps = [
        {"step": name, "store cpu s": cpu_s, "ms per mail": cpu_s / args.count * 1e3}
        for name, cpu_s in step.cpu.items()
    ]
    if cpu is not None:
        print_table("Store CPU by step", steps)
    save_json("store", {"rows": [row], "steps": steps})


if __name__ == "__main__":
    main()
