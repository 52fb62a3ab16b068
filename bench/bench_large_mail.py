"""Large mail through the whole pipeline: peak RSS of each stage against its container limit.

A Dovecot mailbox holds 40 mails of 20 MiB (one attachment each) among 2,000 small mails of
the mix (bench/common.py's `mixed_mail`), the large ones spread through it. The four stages
run as processes with the settings' defaults (prefetch, inline limit, batch byte budget) on a
fresh tenant, from the fetcher's start until every mail has its `emails` document and the
binder's queue is empty. The account's max_message_bytes is 25 MiB, or --large-mib + 1 MiB
when that is more (within the 100 MiB ceiling). Printed: each stage's peak RSS (VmHWM)
against the memory limit of its container in deploy/k8s, and how long the load took.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
from datetime import UTC, datetime
from email.message import EmailMessage
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    STAGES,
    Run,
    cached_mailbox,
    mixed_mail,
    print_table,
    proc_status,
    save_json,
    seed_crm,
    wait_for,
)
from shared.errors import BrokerUnavailableError
from shared.messaging import Broker
from shared.settings import MAX_MESSAGE_BYTES_CEILING
from tests.services import MailServer, collection_size, mail_server

MiB = 1024 * 1024
K8S = Path(__file__).resolve().parents[1] / "deploy" / "k8s"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--large", type=int, default=40, help="mails of --large-mib MiB (40)")
    p.add_argument("--large-mib", type=int, default=20, help="size of a large mail (20)")
    p.add_argument("--small", type=int, default=2000, help="small mails of the mix (2000)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds given to the stages")
    return p.parse_args()


def message_limit(large_mib: int) -> int:
    """The account's max_message_bytes for large mails of `large_mib` MiB: 25 MiB, or one
    MiB over their size, within the ceiling (ValueError naming the size over it)."""
    limit = max(25 * MiB, (large_mib + 1) * MiB)
    if limit > MAX_MESSAGE_BYTES_CEILING:
        raise ValueError(
            f"--large-mib {large_mib}: a mail of {large_mib} MiB needs a limit over the "
            f"ceiling of {MAX_MESSAGE_BYTES_CEILING // MiB} MiB"
        )
    return limit


def large_mail(i: int, size: int) -> bytes:
    """A mail from a known customer whose one attachment makes it `size` bytes, about."""
    msg = EmailMessage()
    msg["From"], msg["To"] = f"known{i % 50}@customer.example", "shop@bench.example"
    msg["Subject"] = f"Large {i}"
    msg["Message-ID"] = f"<large-{i}-{size}@bench.example>"
    msg.set_content("The scans are attached.")
    payload = random.Random(i).randbytes(size * 3 // 4 * 76 // 78)  # base64, 76-char lines
    msg.add_attachment(payload, maintype="image", subtype="tiff", filename=f"scan{i}.tiff")
    return msg.as_bytes()


def maker(large: int, small: int, large_bytes: int) -> tuple[Any, set[int]]:
    """The mail at each index, and the indexes of the large ones (spread evenly)."""
    total = large + small
    big = {k * total // large for k in range(large)} if large else set()

    def make(i: int) -> bytes:
        return large_mail(i, large_bytes) if i in big else mixed_mail(i)

    return make, big


def memory_limits_mb() -> dict[str, float]:
    """Each stage's container memory limit in deploy/k8s, in MB."""
    limits = {}
    for stage in STAGES:
        text = (K8S / f"{stage}.yaml").read_text()
        match = re.search(r"limits: \{[^}]*memory: (\d+)(Mi|Gi)", text)
        if match:
            limits[stage] = int(match.group(1)) * (1024 if match.group(2) == "Gi" else 1)
    return limits


def load(
    server: MailServer, user: str, total: int, timeout: float, *, max_message_bytes: int
) -> dict[str, Any]:
    """The four stages on a fresh tenant until every mail is recorded; their peak RSS."""
    run = Run.start("bl")
    try:
        seed_crm(run.store, run.tenant)
        run.add_account(
            server,
            user,
            create_customer=True,
            manager_group_id="g-new",
            max_message_bytes=max_message_bytes,
        )
        stages = run.stages()
        stages.start("binder", "assigner", "notifier")
        with run.broker() as broker:
            queues = [broker.topology.work_queue(s) for s in ("binder", "assigner", "notifier")]
            wait_for(lambda: all(broker.queue_counts(q)[1] for q in queues), 60, "consumers")
        t0 = datetime.now(UTC)
        try:
            stages.start("fetcher")
            complete = wait_done(run, total, timeout)
            seconds = (datetime.now(UTC) - t0).total_seconds()
            alive = stages.alive()
            usage = {s: proc_status(p.pid) for s, p in stages.procs.items() if alive.get(s)}
        finally:
            stages.stop_all()
        emails = run.store.emails
        recorded = emails.count_documents({"tenant_id": run.tenant})
        failed = emails.count_documents({"tenant_id": run.tenant, "status": "failed"})
        large = {"tenant_id": run.tenant, "subject": {"$regex": "^Large "}}
        large_bound = emails.count_documents({**large, "status": "bound"})
        return {"seconds": seconds, "complete": complete, "recorded": recorded,
                "failed": failed, "large_bound": large_bound, "alive": alive,
                "usage": usage}  # fmt: skip
    finally:
        run.close()


def wait_done(run: Run, total: int, timeout: float) -> bool:
    """Wait until `total` e-mails are recorded and the binder's queue is empty (False: the
    time ran out); a dropped RabbitMQ connection is opened again."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with run.broker() as broker:
                binder = broker.topology.work_queue("binder")
                done = partial(_all_recorded, run, broker, binder, total)
                left = deadline - time.monotonic()
                wait_for(done, left, f"{total} e-mails recorded", every=2.0)
                return True
        except BrokerUnavailableError as exc:
            print(f"RabbitMQ connection lost, opened again: {exc}", flush=True)
        except TimeoutError as exc:
            print(f"INCOMPLETE: {exc}", flush=True)
            return False
    return False


def _all_recorded(run: Run, broker: Broker, queue: str, total: int) -> bool:
    return collection_size(run.store.emails) >= total and broker.queue_counts(queue)[0] == 0


def main() -> None:
    args = parse_args()
    limit = message_limit(args.large_mib)
    server = mail_server()
    total = args.large + args.small
    user = f"benchlarge{args.large}x{args.large_mib}s{args.small}v1"
    make, _ = maker(args.large, args.small, args.large_mib * MiB)
    reused, fill_s = cached_mailbox(server, user, total, make)
    print(f"mailbox {user}: {'reused' if reused else f'filled in {fill_s:.0f}s'}", flush=True)
    result = load(server, user, total, args.timeout, max_message_bytes=limit)
    limits = memory_limits_mb()
    rows = [
        {
            "stage": stage,
            "alive at the end": result["alive"].get(stage, False),
            "peak RSS MB": result["usage"].get(stage, {}).get("peak_rss_mb", float("nan")),
            "limit MB (deploy/k8s)": limits.get(stage, float("nan")),
            "share of limit %": 100
            * result["usage"].get(stage, {}).get("peak_rss_mb", float("nan"))
            / limits.get(stage, float("nan")),
        }
        for stage in STAGES
    ]
    title = (
        f"{args.large} x {args.large_mib} MiB + {args.small} small mails: "
        f"{result['recorded']}/{total} recorded ({result['failed']} failed, "
        f"{result['large_bound']}/{args.large} large ones bound) in "
        f"{result['seconds']:.0f} s{'' if result['complete'] else ' (INCOMPLETE)'}; "
        f"max_message_bytes {limit // MiB} MiB"
    )
    print_table(title, rows)
    save_json(
        "large_mail",
        {"args": vars(args), "max_message_bytes": limit, "result": result, "rows": rows},
    )


if __name__ == "__main__":
    main()
