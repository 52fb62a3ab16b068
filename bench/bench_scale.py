"""Scale-out: the binder with 1 and 2 replicas on a pre-filled queue, the fetcher with 1 and 2
replicas over 10 accounts; throughput and the 2-replica / 1-replica ratio of each.

Binder: N MailFetched messages (the mixed mail of bench_pipeline) are published to `binder.in`
first, then the replicas start; the rate is over the span of the `emails` documents they wrote.
Fetcher: 10 mailboxes of M mails each; the rate is over the span of the accounts' progress
(first load started -> last batch saved), the fetched mail left in `binder.in`.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    Run,
    cached_mailbox,
    mixed_mail,
    print_table,
    quick_default,
    save_json,
    seed_crm,
    terminate,
    wait_for,
)
from shared.contracts import AccountOptions, MailFetched
from shared.wire import encode_event
from tests.services import MailServer, collection_size, load_local_env, mail_server

OPTIONS = AccountOptions(
    owner_id="u-owner", create_customer=True, manager_group_id="g-new", notify_manager=True,
    notify_skipped=True, ignore_auto_replies=True,
)  # fmt: skip


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--binder-mails", type=int, help="N (1000; --quick: 100)")
    p.add_argument("--fetcher-mails", type=int, help="M per account (500; --quick: 100)")
    p.add_argument("--accounts", type=int, default=10)
    p.add_argument(
        "--quick",
        action="store_true",
        default=quick_default(),
        help="small counts, under a minute once mailboxes exist (BENCH_QUICK=1)",
    )
    args = p.parse_args()  # fmt: skip
    args.binder_mails = args.binder_mails or (100 if args.quick else 1000)
    args.fetcher_mails = args.fetcher_mails or (100 if args.quick else 500)
    return args


def _span(first: Any, last: Any) -> float:
    return max((last - first).total_seconds(), 1e-3)


def binder(replicas: int, count: int) -> dict[str, Any]:
    run = Run.start("bsb")
    try:
        seed_crm(run.store, run.tenant)
        # the binder reads the account's options from the store, not from the events
        run.store.accounts.insert_one(
            {"_id": "acc", "tenant_id": run.tenant, **OPTIONS.model_dump()}
        )
        now = datetime.now(UTC)
        with run.broker() as broker:
            messages = []
            for i in range(count):
                raw = mixed_mail(i)
                event = MailFetched.for_mail(
                    email_id=f"scale-{i}", now=now, tenant_id=run.tenant, account_id="acc",
                    options=OPTIONS, protocol="imap", folder="INBOX", uidvalidity=1, uid=i + 1,
                    size=len(raw),
                )  # fmt: skip
                messages.append(encode_event(event, raw))
            broker.publish(messages)
        procs = run.replicas("binder", replicas)
        emails = run.store.emails
        try:
            wait_for(lambda: collection_size(emails) >= count, 1800, "emails")
        finally:
            terminate(procs)
        first = emails.find_one({"tenant_id": run.tenant}, sort=[("created_at", 1)])
        last = emails.find_one({"tenant_id": run.tenant}, sort=[("created_at", -1)])
        assert first is not None
        assert last is not None
        seconds = _span(first["created_at"], last["created_at"])
        return {"stage": "binder", "replicas": replicas, "messages": count, "seconds": seconds,
                "per s": (count - 1) / seconds}  # fmt: skip
    finally:
        run.close()


def fetcher(replicas: int, server: MailServer, users: list[str], per: int) -> dict[str, Any]:
    run = Run.start("bsf")
    try:
        for user in users:
            run.add_account(server, user)
        total = per * len(users)
        procs = run.replicas("fetcher", replicas)
        try:
            with run.broker() as broker:
                queue = broker.topology.work_queue("binder")
                wait_for(lambda: broker.queue_counts(queue)[0] >= total, 1800, "fetched mail")
        finally:
            terminate(procs)
        progress = [a.get("progress") or {} for a in run.store.accounts.find({})]
        started = min(p["started_at"] for p in progress)
        ended = max(p["updated_at"] for p in progress)
        seconds = _span(started, ended)
        return {"stage": "fetcher", "replicas": replicas, "messages": total, "seconds": seconds,
                "per s": total / seconds}  # fmt: skip
    finally:
        run.close()


def main() -> int:
    args = parse_args()
    load_local_env()
    server = mail_server()
    users = [f"benchscale{args.fetcher_mails}a{k}v1" for k in range(args.accounts)]
    for user in users:
        cached_mailbox(server, user, args.fetcher_mails, mixed_mail)
    rows = []
    for replicas in (1, 2):
        print(f"binder x{replicas} on {args.binder_mails} messages...", flush=True)
        rows.append(binder(replicas, args.binder_mails))
    for replicas in (1, 2):
        print(f"fetcher x{replicas} on {args.accounts} x {args.fetcher_mails} mails...", flush=True)
        rows.append(fetcher(replicas, server, users, args.fetcher_mails))
    print_table("Scale-out (2 cores shared by everything)", rows)
    ratios = [
        {"stage": s, "2 replicas / 1": rows[k + 1]["per s"] / rows[k]["per s"]}
        for k, s in ((0, "binder"), (2, "fetcher"))
    ]
    print_table("Ratios", ratios)
    save_json("scale", {"rows": rows, "ratios": ratios})
    return 0


if __name__ == "__main__":
    sys.exit(main())
