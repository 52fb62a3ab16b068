"""First-load throughput: N messages through the fetcher vs a plain imapclient BODY.PEEK[] fetch.

Both read the same fresh Dovecot mailbox in the same run. The fetcher also publishes each mail
with a publisher confirm, records fingerprints, saves its position and asks the store for the
binder's outcomes after each batch (no binder runs here, so nothing is marked read).
Both imapclient connections run with `client._imap.debug = 0` (imaplib's debug formatting
otherwise dominates).   Usage: python bench/bench_fetch.py [--count N]
"""

from __future__ import annotations

import argparse
import ssl
import sys
import time
import uuid
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import imapclient

from bench.common import quick_default
from fetcher.adapters import (
    BrokerEventPublisher,
    MongoFailedMail,
    MongoFetchFailures,
    MongoMailOutcomes,
    MongoPositionStore,
    MongoTakenMail,
)
from fetcher.failures import MessageFailures
from fetcher.imap import ImapClientMailbox
from fetcher.settle import Settler
from fetcher.sync import ImapSync
from shared.accounts import Account
from shared.blobs import GridFsBlobStore
from shared.messaging import Broker
from shared.settings import Settings
from shared.store import Store
from shared.topology import Topology
from tests.services import load_local_env, mail_server


def mail(i: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = "bench@example.com"
    msg["To"] = "shop@example.com"
    msg["Subject"] = f"bench {i}"
    msg["Message-ID"] = f"<bench-{i}-{uuid.uuid4().hex}@example.com>"
    msg.set_content(f"Order question number {i}.\n" + "Lorem ipsum dolor sit amet. " * 40)
    return msg.as_bytes()


def connect(host: str, port: int, ca: str, user: str, password: str) -> imapclient.IMAPClient:
    client = imapclient.IMAPClient(host, port=port, ssl=True, ssl_context=_ctx(ca), timeout=60)
    client._imap.debug = 0
    client.login(user, password)
    return client


def _ctx(ca: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca)


def baseline(client: imapclient.IMAPClient) -> int:
    """Plain imapclient: SEARCH ALL, then FETCH BODY.PEEK[] in batches of 500."""
    client.select_folder("INBOX")
    uids = client.search(["ALL"])
    total = 0
    for start in range(0, len(uids), 500):
        total += len(client.fetch(uids[start : start + 500], ["BODY.PEEK[]"]))
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, help="messages (5000; --quick or BENCH_QUICK=1: 1000)")
    parser.add_argument("--quick", action="store_true", default=quick_default())
    args = parser.parse_args()
    args.count = args.count or (1000 if args.quick else 5000)
    load_local_env()
    server = mail_server()
    user, ns = f"bench{uuid.uuid4().hex[:10]}", f"bench{uuid.uuid4().hex[:8]}"
    client = connect(server.host, server.imaps_port, server.ca_file, user, server.password)
    t0 = time.perf_counter()
    for i in range(args.count):
        client.append("INBOX", mail(i))
    fill = time.perf_counter() - t0

    t0 = time.perf_counter()
    plain = baseline(client)
    plain_s = time.perf_counter() - t0
    client.logout()

    base = Settings()
    settings = Settings(
        namespace=ns, mongo_url=base.mongo_url.get_secret_value().rsplit("/", 1)[0] + f"/{ns}"
    )
    store = Store(settings.mongo_url.get_secret_value(), ns)
    broker = Broker(settings.amqp_url.get_secret_value(), Topology(ns))
    broker.connect()
    broker.declare()
    try:
        account = Account.model_validate(
            {
                "_id": "bench", "tenant_id": "bench", "owner_id": "o", "protocol": "imap",
                "host": server.host, "port": server.imaps_port, "username": user,
                "ca_file": server.ca_file, "password_enc": "-", "initial_sync": "all",
            }
        )  # fmt: skip
        store.accounts.insert_one({**account.model_dump(by_alias=True)})
        positions = MongoPositionStore(store, "bench")
        outcomes = MongoMailOutcomes(store, "bench")

        def now() -> datetime:
            return datetime.now(UTC)

        sync = ImapSync(
            account,
            publisher=BrokerEventPublisher(broker),
            positions=positions,
            taken=MongoTakenMail(store, "bench"),
            blobs=GridFsBlobStore(store),
            settler=Settler(account, outcomes=outcomes, positions=positions, clock=now),
            clock=now,
            inline_limit=settings.inline_body_limit,
            failures=MessageFailures(
                account,
                store=MongoFetchFailures(store, "bench"),
                archive=MongoFailedMail(store),
                publisher=BrokerEventPublisher(broker),
                attempts=3,
                clock=now,
            ),
        )
        t0 = time.perf_counter()
        with ImapClientMailbox(account, server.password, timeout=60) as box:
            fetched = sync.run(box).fetched
        fetcher_s = time.perf_counter() - t0
    finally:
        for queue in broker.topology.all_queues():
            broker.channel.queue_delete(queue)
        broker.channel.exchange_delete(broker.topology.exchange)
        broker.channel.exchange_delete(broker.topology.failures_exchange)
        broker.close()
        store.client.drop_database(ns)
        store.close()

    rows = [
        ("fill (APPEND, one connection)", args.count, fill),
        ("imapclient FETCH BODY.PEEK[] (baseline)", plain, plain_s),
        ("fetcher first load (publish+confirm)", fetched, fetcher_s),
    ]
    print(f"{'what':48} {'messages':>9} {'seconds':>9} {'msg/s':>9}")
    for name, n, secs in rows:
        print(f"{name:48} {n:9d} {secs:9.2f} {n / secs:9.0f}")
    print(f"fetcher / baseline throughput ratio: {(fetched / fetcher_s) / (plain / plain_s):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
