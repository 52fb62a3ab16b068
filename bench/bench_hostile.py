"""What the fetcher reads from a hostile IMAP server, and what it holds for a large message.

For each behaviour of tests/hostile_server.py: one connection (ImapClientMailbox, a limit of
1 MiB a message, a budget of 256 KiB, a timeout of 1 s) fetches the bad message alone; printed
are the reason it ended with, the bytes the server got into the socket, and tracemalloc's peak
growth over the process (server included). `big`: an honest 20 MiB message (limit 25 MiB)
fetched whole, its peak against its size.   Usage: python bench/bench_hostile.py
"""

from __future__ import annotations

import sys
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fetcher.imap import ImapClientMailbox
from shared.accounts import Account
from shared.errors import MailboxError
from tests.hostile_server import HostileServer

MIB = 1024 * 1024
CASES = ("huge_literal", "lie_size", "long_line", "slowloris", "drop", "silent", "refuse", "big")


def account(port: int, limit: int) -> Account:
    return Account.model_validate(
        {
            "_id": "bench", "tenant_id": "bench", "owner_id": "o", "protocol": "imap",
            "host": "127.0.0.1", "port": port, "security": "none", "username": "u",
            "password_enc": "-", "max_message_bytes": limit,
        }
    )  # fmt: skip


def one(behaviour: str) -> tuple[str, int, int, int]:
    server = HostileServer(behaviour)
    port = server.start("imap")
    limit = 25 * MIB if behaviour == "big" else MIB
    tracemalloc.start()
    start, _ = tracemalloc.get_traced_memory()
    outcome, size = "ok", 0
    try:
        with ImapClientMailbox(account(port, limit), "pw", timeout=1.0, budget=256 * 1024) as box:
            box.select("INBOX")
            meta = [m for m in box.headers([1, 2, 3]) if m.uid == 2]
            try:
                (message,) = box.bodies(meta, max_bytes=limit)
                size = len(message.raw)
            except MailboxError as exc:
                outcome = exc.reason
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        server.stop()
    return outcome, server.sent, peak - start, size


def main() -> int:
    print(f"{'server':<14} {'ended with':<20} {'server sent':>14} {'peak growth':>14} {'size':>12}")
    for behaviour in CASES:
        outcome, sent, peak, size = one(behaviour)
        print(f"{behaviour:<14} {outcome:<20} {sent:>14,} {peak:>14,} {size:>12,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
