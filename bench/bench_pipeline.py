"""First load: N mixed mails through all four stages vs imaplib, getmail6 and mbsync, same mailbox.

The mailbox (2-20 KB mails in utf-8, iso-8859-1, koi8-r and shift_jis, 1 in 10 with a 100 KB
attachment; 25 % order tags, 25 % known senders, 35 % new senders with "create customer" on,
15 % auto-replies from unknown senders, skipped) is filled once per size and reused. In one run:
a plain imaplib `UID FETCH BODY.PEEK[]` (the ceiling), getmail6 and mbsync into a Maildir
(mbsync with its default `FSync yes`, then with `FSync no`), then the four stages as processes
(durable quorum queues, confirms, acknowledged writes) from the fetcher's start to the last
notification, with each stage's peak RSS and CPU time, the CPU of every process of the load per
mail, and the store commands and documents per mail of each stage; then mbsync again (`FSync no`,
then `yes`), and the ratio to each mbsync is against both of its runs together. The command and
document counts, and the CPU of the stages and of RabbitMQ, are the figures that carry over to
MongoDB. `--record-store DIR` also records the stages' store commands, which
bench/store_replay.py breaks down by stage, command and collection.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    RESULTS,
    STAGES,
    Run,
    cached_mailbox,
    kind_of,
    mixed_mail,
    notifications_for,
    print_table,
    proc_status,
    quick_default,
    save_json,
    seed_crm,
    service_cpu,
    terminate,
    wait_for,
)
from bench.peers import ensure_tools, getmail6, imaplib_fetch, mbsync
from bench.profiling import Profile, summary
from tests.services import MailServer, collection_size, load_local_env, mail_server

TARGETS = {"getmail6": 4.0, "mbsync": 0.5}
RSS_LIMIT_MB = 200
RECORDER = Path(__file__).resolve().parent / "recorder"
# The commands that carry documents; the others (ping, endSessions, ...) make one row per stage.
DATA_COMMANDS = ("find", "getMore", "aggregate", "insert", "update", "delete")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, help="mails in the mailbox (20000; --quick: 300)")
    p.add_argument(
        "--quick",
        action="store_true",
        default=quick_default(),
        help="300 mails, under a minute once the mailbox exists (BENCH_QUICK=1)",
    )
    p.add_argument(
        "--peers",
        choices=["all", "mbsync", "none"],
        default="all",
        help="the download-only peers run on the same mailbox: getmail6 and mbsync (all, the "
        "default), mbsync alone (quicker: getmail6 takes minutes), or none",
    )
    p.add_argument("--no-peers", action="store_true", help="the same as --peers none")
    p.add_argument(
        "--profile",
        choices=["fetcher", "binder", "assigner", "notifier"],
        help="py-spy this stage during the load and print where its time went",
    )
    p.add_argument("--timeout", type=float, default=600, help="seconds given to the 4 stages")
    p.add_argument(
        "--record-store",
        type=Path,
        metavar="DIR",
        help="record the stages' store commands into DIR, for bench/store_replay.py DIR",
    )
    p.add_argument(
        "--binders",
        type=int,
        default=1,
        help="binder processes (the others: 1 each); their CPU is added up, their RSS is the peak",
    )
    args = p.parse_args()  # fmt: skip
    if args.no_peers:
        args.peers = "none"
    args.count = args.count or (300 if args.quick else 20_000)
    return args


def peers(server: MailServer, user: str, count: int, which: str) -> dict[str, tuple[int, float]]:
    imaplib_fetch(server, user)  # warm the page cache: every reader after it sees the same
    out = {"imaplib UID FETCH BODY.PEEK[] (ceiling)": imaplib_fetch(server, user)}
    if which != "none" and not ensure_tools():
        if which == "all":
            print(f"getmail6 on {count} mails...", flush=True)
            out["getmail6 -> Maildir"] = getmail6(server, user)
        out |= mbsync_runs(server, user, count, "before", (True, False))
    return out


def mbsync_runs(
    server: MailServer, user: str, count: int, when: str, fsyncs: tuple[bool, ...]
) -> dict[str, tuple[int, float]]:
    """mbsync with each `FSync` setting in turn; before the pipeline one way round, after it the
    other, so that neither setting always runs on the warmer or the quieter side of the load."""
    out = {}
    for fsync in fsyncs:
        peer = f"mbsync FSync {'yes' if fsync else 'no'}"
        print(f"{peer} on {count} mails, {when} the pipeline...", flush=True)
        out[f"{peer} -> Maildir, {when}"] = mbsync(server, user, fsync=fsync)
    return out


def pipeline(server: MailServer, user: str, count: int, args: argparse.Namespace) -> dict[str, Any]:
    """The four stages on a fresh tenant; mails/s from the fetcher's start to the last note."""
    run = Run.start("bp")
    try:
        seed_crm(run.store, run.tenant)
        run.add_account(
            server, user, create_customer=True, manager_group_id="g-new", notify_manager=True,
            notify_skipped=True, ignore_auto_replies=True,
        )  # fmt: skip
        expected = notifications_for(kind_of(i) for i in range(count))
        counts = run.log_dir / "store-counts"
        counts.mkdir()
        recording = _recorder_env(counts, args.record_store)
        stages = run.stages(**recording)
        stages.start("binder", "assigner", "notifier")
        more_binders = run.replicas("binder", args.binders - 1, **recording)
        with run.broker() as broker:
            queues = [broker.topology.work_queue(s) for s in ("binder", "assigner", "notifier")]
            wait_for(lambda: all(broker.queue_counts(q)[1] for q in queues), 60, "consumers")
        t0, services0 = datetime.now(UTC), service_cpu()
        stages.start("fetcher")
        profile = None
        if args.profile:
            profile = Profile(stages.procs[args.profile].pid, RESULTS / f"{args.profile}.raw")
        notes = run.store.notifications
        complete = True
        try:
            try:
                # The store is asked only once the binder's queue is empty: even collStats
                # (no document read) reads the store's page list, ~70 ms at 20,000 mails,
                # which the load would pay for. RabbitMQ answers the queue depth at no cost
                # to the stages. The times are the documents' own, so this does not change
                # them.
                with run.broker() as broker:
                    binder_queue = broker.topology.work_queue("binder")
                    wait_for(
                        lambda: broker.queue_counts(binder_queue)[0] == 0
                        and collection_size(notes) >= expected,
                        args.timeout, f"{expected} notifications", every=1.0,
                    )  # fmt: skip
            except TimeoutError as exc:  # report what was done in the time given
                print(f"INCOMPLETE: {exc}")
                complete = False
            services1 = service_cpu()
            usage = {s: proc_status(p.pid) for s, p in stages.procs.items()}
            for extra in (proc_status(p.pid) for p in more_binders):
                usage["binder"]["cpu_s"] += extra["cpu_s"]
                usage["binder"]["peak_rss_mb"] = max(
                    usage["binder"]["peak_rss_mb"], extra["peak_rss_mb"]
                )
            if not complete:  # a slow batch in hand would hold up SIGTERM
                for stage in list(stages.procs):
                    stages.kill(stage)
                for proc in more_binders:
                    proc.kill()
        finally:
            terminate(more_binders)
            if profile is not None:
                profile.stop()
            stages.stop_all()
        result = _figures(run, t0, count, expected, usage)
        services = {k: services1[k] - services0[k] for k in services1.keys() & services0.keys()}
        result["cpu"] = _cpu_table(count, usage, services)
        result["store_commands"] = _store_table(counts, count)  # the stages have exited: counted
        if profile is not None:
            result["profile"] = _show_profile(args.profile, profile.out)
        return result
    finally:
        run.close()


def _recorder_env(counts: Path, record: Path | None) -> dict[str, str]:
    """The stage processes' environment that has them count their store commands into
    `counts`, and record them into `record` when given (see bench/recorder/)."""
    env = {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(RECORDER), os.environ.get("PYTHONPATH")])),
        "MAILINTAKE_BENCH_COUNT": str(counts),
    }
    if record is not None:
        record.mkdir(parents=True, exist_ok=True)
        env["MAILINTAKE_BENCH_RECORD"] = str(record.resolve())
    return env


def _figures(
    run: Run, t0: datetime, count: int, expected: int, usage: dict[str, dict[str, float]]
) -> dict[str, Any]:
    """When each stage wrote its last output, and what each process used."""
    store, tenant = run.store, run.tenant

    def last(coll: Any, field: str) -> float:
        doc = coll.find_one({"tenant_id": tenant}, sort=[(field, -1)])
        return (doc[field] - t0).total_seconds() if doc else float("nan")

    account = store.accounts.find_one({"tenant_id": tenant}) or {}
    fetched_at = (account.get("progress") or {}).get("updated_at")
    done = {
        "fetcher": (fetched_at - t0).total_seconds() if fetched_at else float("nan"),
        "binder": last(store.emails, "created_at"),
        "assigner": last(store["rotation_slots"], "claimed_at"),
        "notifier": last(store.notifications, "created_at"),
    }
    emails = store.emails.count_documents({"tenant_id": tenant})
    made = store.notifications.count_documents({"tenant_id": tenant})
    done_mails = count if made >= expected else int(count * made / expected)
    rows = [
        {
            "stage": s, "done after s": done[s], "mails/s (cumulative)": done_mails / done[s],
            "cpu s": usage[s]["cpu_s"], "mails per cpu s": count / max(usage[s]["cpu_s"], 0.01),
            "peak RSS MB": usage[s]["peak_rss_mb"],
        }
        for s in ("fetcher", "binder", "assigner", "notifier")
    ]  # fmt: skip
    return {"seconds": done["notifier"], "emails": emails, "notifications": made,
            "expected_notifications": expected, "mails_done": done_mails,
            "complete": made >= expected, "stages": rows}  # fmt: skip


def _cpu_table(
    count: int, usage: dict[str, dict[str, float]], services: dict[str, float]
) -> list[dict[str, Any]]:
    """CPU per mail of every process of the load: the stages, and the local services from the
    fetcher's start to the last notification (with the benchmark's own queries on whether the
    load is done)."""
    stages = {s: usage[s]["cpu_s"] for s in STAGES}
    ours = sum(stages.values())
    total = ours + sum(services.values())
    used = {**stages, "mailintake (4 stages)": ours,
            **dict(sorted(services.items(), key=lambda kv: -kv[1])), "all": total}  # fmt: skip
    return [{"process": k, "cpu s": v, "ms per mail": v / count * 1e3, "share %": 100 * v / total}
            for k, v in used.items()]  # fmt: skip


def _store_table(directory: Path, count: int) -> list[dict[str, Any]]:
    """Store commands and documents per mail, by stage and command, from the counts the stages
    wrote (bench/recorder/): what the load asks of any MongoDB-compatible store, unlike its
    CPU. Documents written are those inserted, modified, upserted or deleted; read, those
    returned. getMore is counted: FerretDB's first batch is MongoDB's (101 documents), and its
    later ones are not smaller, so a MongoDB server is sent as many."""
    sums: defaultdict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    on: defaultdict[tuple[str, str], set[str]] = defaultdict(set)
    for path in directory.glob("counts-*.json"):
        counted = json.loads(path.read_text())
        for name, collection, commands, written, read in counted["commands"]:
            key = (counted["stage"], name if name in DATA_COMMANDS else "other")
            sums[key].update(commands=commands, written=written, read=read)
            on[key].add(collection if name in DATA_COMMANDS else name)
    order = {name: k for k, name in enumerate((*DATA_COMMANDS, "other"))}
    rows = []
    for stage in (*STAGES, "all"):
        keys = sorted((k for k in sums if stage in (k[0], "all")), key=lambda k: order[k[1]])
        if stage != "all":
            rows += [_store_row(stage, k[1], on[k], sums[k], count) for k in keys]
        rows.append(_store_row(stage, "all", set(), sum((sums[k] for k in keys), Counter()), count))
    return rows


def _store_row(
    stage: str, command: str, on: set[str], sums: Counter[str], count: int
) -> dict[str, Any]:
    return {"stage": stage, "command": command, "on": ", ".join(sorted(on)),
            "commands per 1,000 mails": sums["commands"] / count * 1e3,
            "docs written per mail": sums["written"] / count,
            "docs read per mail": sums["read"] / count}  # fmt: skip


def _show_profile(stage: str, raw: Path) -> dict[str, Any]:
    own, areas = summary(raw)
    print_table(f"py-spy: {stage}, time by area (all threads, idle included)", areas)
    print_table(f"py-spy: {stage}, own time per function (top 15)", own)
    return {"stage": stage, "areas": areas, "functions": own, "raw": str(raw)}


def report(count: int, base: dict[str, tuple[int, float]], load: dict[str, Any]) -> dict[str, Any]:
    rows = [{"what": k, "mails": n, "seconds": s, "mails/s": n / s} for k, (n, s) in base.items()]
    rate = load["mails_done"] / load["seconds"]
    what = "mailintake, 4 stages (fetch -> last notification)"
    if not load["complete"]:
        what += f" INCOMPLETE: {load['mails_done']} of {count} in the time given"
    rows.append({"what": what, "mails": load["mails_done"],
                 "seconds": load["seconds"], "mails/s": rate})  # fmt: skip
    print_table(f"First load of {count} mixed mails (same mailbox, same run)", rows)
    print_table("Per stage (cumulative: upstream stages bound each one)", load["stages"])
    print_table("CPU per mail, every process of the load", load["cpu"])
    print_table(
        "Store commands and documents per mail, by stage (carry over to MongoDB)",
        load["store_commands"],
    )
    # A peer run more than once (mbsync, before and after the pipeline) counts as all its runs
    # together: this machine's speed drifts by half within minutes (speed_s in the JSON).
    runs: dict[str, list[tuple[int, float]]] = {}
    for k, run in base.items():
        runs.setdefault(k.removesuffix(", before").removesuffix(", after"), []).append(run)
    ratios = {k: rate / (sum(n for n, _ in r) / sum(s for _, s in r)) for k, r in runs.items()}
    verdicts: list[dict[str, Any]] = []
    for peer, ratio in ratios.items():
        target = TARGETS.get(peer.split()[0])  # none for imaplib: the ceiling
        verdicts.append({"vs": peer, "ratio": ratio,
                         "target": f">= {target}" if target else "(ceiling)",
                         "met": ratio >= target if target else None})  # fmt: skip
    peak = max(r["peak RSS MB"] for r in load["stages"])
    verdicts.append({"vs": "peak RSS per stage (MB)", "ratio": float(peak),
                     "target": f"<= {RSS_LIMIT_MB}", "met": peak <= RSS_LIMIT_MB})  # fmt: skip
    print_table("mailintake / peer throughput", verdicts)
    return {"count": count, "rows": rows, "ratios": verdicts, "pipeline": load}


def main() -> int:
    args = parse_args()
    load_local_env()
    server = mail_server()
    user = f"benchmix{args.count}v1"
    reused, fill_s = cached_mailbox(server, user, args.count, mixed_mail)
    print(f"mailbox {user}: {'reused' if reused else f'filled in {fill_s:.0f}s'}", flush=True)
    base = peers(server, user, args.count, args.peers)
    print(f"mailintake on {args.count} mails...", flush=True)
    load = pipeline(server, user, args.count, args)
    if any(k.startswith("mbsync") for k in base):  # again, right after, on the same mailbox
        base |= mbsync_runs(server, user, args.count, "after", (False, True))
    if load["complete"] and load["emails"] != args.count:
        print(f"WARNING: {load['emails']} emails documents for {args.count} mails")
    result = report(args.count, base, load)
    result["binders"] = args.binders
    save_json("pipeline", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
