"""Latency with IDLE: one mail APPENDed every 100 ms; time from APPEND to its notification.

The account has "notify manager" on and every mail comes from a known customer with a manager,
so each mail ends in one `incoming_email` notification. In the same run a plain imaplib IDLE
connection on the same mailbox times APPEND -> `* n EXISTS`: the floor any IMAP client sees
(Dovecot delays IDLE notices by a fixed 500 ms, NOTIFY_DELAY_MSECS).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    Run,
    imap,
    mixed_mail,
    print_table,
    quick_default,
    save_json,
    seed_crm,
    wait_for,
)
from tests.services import MailServer, load_local_env, mail_server

TARGETS = {"p50": 1.0, "p99": 3.0}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, help="how long to send (60; --quick: 10)")
    p.add_argument("--interval", type=float, default=0.1, help="seconds between APPENDs")
    p.add_argument(
        "--quick",
        action="store_true",
        default=quick_default(),
        help="send for 10 s (BENCH_QUICK=1)",
    )
    args = p.parse_args()  # fmt: skip
    args.seconds = args.seconds or (10.0 if args.quick else 60.0)
    return args


def known_mail(k: int, salt: str) -> bytes:
    """Mail k: from a known customer with a manager (mix index 5 mod 20), no attachment."""
    return mixed_mail(5 + 20 * k, salt=salt, subject=f"lat {salt} {k}")


class IdleWatch(threading.Thread):
    """A plain imaplib IDLE connection: when each `* n EXISTS` arrived."""

    def __init__(self, server: MailServer, user: str) -> None:
        super().__init__(daemon=True)
        self.client = imap(server, user)
        self.client.select("INBOX")
        self.seen: list[tuple[int, datetime]] = []
        self.stop = threading.Event()
        self.client.send(b"w1 IDLE\r\n")
        self.client.readline()  # "+ idling"

    def run(self) -> None:
        self.client.sock.settimeout(None)  # a timed-out socket file cannot be read again
        while not self.stop.is_set():
            try:
                line = self.client.readline()
            except (OSError, ValueError):  # closed by `close()`
                return
            parts = line.split()
            if len(parts) == 3 and parts[2] == b"EXISTS":
                self.seen.append((int(parts[1]), datetime.now(UTC)))

    def close(self) -> None:
        self.stop.set()
        self.client.shutdown()

    def arrival(self, seq: int) -> datetime | None:
        return next((at for n, at in self.seen if n >= seq), None)


def send(server: MailServer, user: str, args: argparse.Namespace, salt: str) -> list[datetime]:
    """APPEND one mail every `interval` seconds; when each APPEND was sent."""
    client = imap(server, user)
    sent: list[datetime] = []
    start = time.monotonic()
    for k in range(int(args.seconds / args.interval)):
        time.sleep(max(0.0, start + k * args.interval - time.monotonic()))
        raw = known_mail(k, salt)
        sent.append(datetime.now(UTC))
        client.append("INBOX", "", None, raw)
    client.logout()
    return sent


def stats(values: list[float]) -> dict[str, float]:
    q = statistics.quantiles(values, n=100, method="inclusive")
    return {"n": len(values), "min": min(values), "p50": statistics.median(values),
            "p90": q[89], "p99": q[98], "max": max(values)}  # fmt: skip


def measure(server: MailServer, args: argparse.Namespace) -> dict[str, Any]:
    run = Run.start("bl")
    salt, user = uuid.uuid4().hex[:8], f"benchlat{uuid.uuid4().hex[:10]}"
    try:
        seed_crm(run.store, run.tenant)
        run.add_account(server, user, notify_manager=True, initial_sync="all")
        stages = run.stages()
        stages.start("fetcher", "binder", "assigner", "notifier")
        notes = run.store.notifications
        try:
            imap(server, user).append("INBOX", "", None, known_mail(0, "warmup"))
            wait_for(lambda: notes.count_documents({"tenant_id": run.tenant}) >= 1, 120, "warm-up")
            watch = IdleWatch(server, user)
            watch.start()
            sent = send(server, user, args, salt)
            query = {"tenant_id": run.tenant, "kind": "incoming_email"}
            wait_for(lambda: notes.count_documents(query) >= len(sent) + 1, 60, "notifications")
            watch.close()
        finally:
            stages.stop_all()
        made = {
            n["subject"]: n["created_at"] - timedelta(milliseconds=1) for n in notes.find(query)
        }
        pipeline = [(made[f"lat {salt} {k}"] - at).total_seconds() for k, at in enumerate(sent)]
        floor = [
            (arrived - at).total_seconds()
            for k, at in enumerate(sent)
            if (arrived := watch.arrival(k + 2)) is not None  # the warm-up mail is number 1
        ]
        return {"mails": len(sent), "pipeline": stats(pipeline), "idle_floor": stats(floor)}
    finally:
        run.close()


def main() -> int:
    args = parse_args()
    load_local_env()
    result = measure(mail_server(), args)
    rows = [
        {"what": "APPEND -> incoming_email notification (4 stages)", **result["pipeline"]},
        {"what": "APPEND -> * EXISTS on a plain IDLE connection", **result["idle_floor"]},
    ]
    print_table(f"Latency, seconds ({result['mails']} mails, one every {args.interval}s)", rows)
    verdicts = [
        {"figure": k, "seconds": result["pipeline"][k], "target": f"<= {v}",
         "met": result["pipeline"][k] <= v, "over the IDLE floor": result["pipeline"][k]
         - result["idle_floor"][k]}
        for k, v in TARGETS.items()
    ]  # fmt: skip
    print_table("Targets", verdicts)
    save_json("latency", {**result, "interval": args.interval, "targets": verdicts})
    return 0


if __name__ == "__main__":
    sys.exit(main())
