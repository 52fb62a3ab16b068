"""Store round trips per mail, per stage: the stages' handlers in-process, every command counted.

Runs the binder, assigner and notifier handlers (as their `__main__` builds them) on the same
mixed mail as bench_pipeline, with a pymongo CommandListener counting each command and its time.
Usage: python bench/roundtrips.py [--count 300]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pymongo import monitoring

from bench.common import Run, mixed_mail, print_table, seed_crm
from shared.contracts import AccountOptions, Event, MailFetched
from shared.logging import configure_logging
from shared.topology import STAGE_BINDINGS


class Counting(monitoring.CommandListener):
    """Counts commands (and their total time) under the current `stage` label."""

    def __init__(self) -> None:
        self.stage = "setup"
        self.count: Counter[tuple[str, str]] = Counter()
        self.micros: defaultdict[tuple[str, str], int] = defaultdict(int)

        self._names: dict[int, str] = {}

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        target = event.command.get(event.command_name)
        name = f"{event.command_name} {target}" if isinstance(target, str) else event.command_name
        self._names[event.request_id] = name
        self.count[(self.stage, name)] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        self._done(event.request_id, event.duration_micros)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self._done(event.request_id, event.duration_micros)

    def _done(self, request_id: int, micros: int) -> None:
        self.micros[(self.stage, self._names.pop(request_id, "?"))] += micros


def fetched(i: int, tenant: str, options: AccountOptions) -> tuple[MailFetched, bytes]:
    raw = mixed_mail(i)
    event = MailFetched.for_mail(
        email_id=f"rt-{i}", now=datetime.now(UTC), tenant_id=tenant, account_id="acc",
        options=options, protocol="imap", folder="INBOX", uidvalidity=1, uid=i + 1, size=len(raw),
    )  # fmt: skip
    return event, raw


def run_stages(run: Run, count: int, listener: Counting) -> dict[str, float]:
    """Each stage's handler over every mail in turn; the seconds each stage took."""
    import assigner.__main__ as assigner
    import binder.__main__ as binder
    import notifier.__main__ as notifier

    handlers: dict[str, Callable[[Event, bytes | None], Any]] = {
        name: module.build_handler(run.settings, run.store)
        for name, module in (("binder", binder), ("assigner", assigner), ("notifier", notifier))
    }
    options = AccountOptions(
        owner_id="u-owner", create_customer=True, manager_group_id="g-new",
        notify_manager=True, notify_skipped=True, ignore_auto_replies=True,
    )  # fmt: skip
    inbox: dict[str, list[tuple[Event, bytes | None]]] = {
        "binder": [fetched(i, run.tenant, options) for i in range(count)],
        "assigner": [],
        "notifier": [],
    }
    seconds: dict[str, float] = {}
    for stage in ("binder", "assigner", "notifier"):
        listener.stage = stage
        t0 = time.perf_counter()
        outputs = [out for event, raw in inbox[stage] for out in handlers[stage](event, raw)]
        seconds[stage] = time.perf_counter() - t0
        for out in outputs:  # to the stage whose queue is bound to its routing key
            for consumer in ("assigner", "notifier"):
                if out.event_type in STAGE_BINDINGS[consumer]:
                    inbox[consumer].append((out, None))
    return seconds


def measure(count: int) -> dict[str, Any]:
    configure_logging("console", "WARNING")
    listener = Counting()
    monitoring.register(listener)  # before any client exists: every client reports to it
    run = Run.start("rt")
    try:
        seed_crm(run.store, run.tenant)
        seconds = run_stages(run, count, listener)
    finally:
        run.close()
    rows = []
    for stage in ("binder", "assigner", "notifier"):
        cmds = {c: n for (s, c), n in listener.count.items() if s == stage}
        total = sum(cmds.values())
        ms = sum(v for (s, _c), v in listener.micros.items() if s == stage) / 1000
        rows.append({
            "stage": stage, "round trips/mail": total / count, "ms in store/mail": ms / count,
            "ms/mail": 1000 * seconds[stage] / count, "mails/s": count / seconds[stage],
            "commands (per mail, ms each)": ", ".join(
                f"{c} {n / count:.2f} ({listener.micros[(stage, c)] / n / 1000:.1f})"
                for c, n in sorted(cmds.items())
            ),
        })  # fmt: skip
    return {"count": count, "stages": rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300)
    args = parser.parse_args()
    result = measure(args.count)
    print_table(
        f"Store round trips per mail ({args.count} mixed mails, in-process)", result["stages"]
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
