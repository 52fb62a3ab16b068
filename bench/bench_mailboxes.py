"""Idle mailboxes on one fetcher replica: ready time, memory, threads, idle CPU, pick-up.

N accounts on the local Dovecot (users `bm-<i>`, reused between runs; `initial_sync: new`, so
mail left from an earlier run is not loaded; one tenant per 10 mailboxes) and one
`python -m fetcher`. Ready: from the fetcher's start until its gauge
`mailintake_fetcher_mailboxes_idle` reads N (every mailbox logged in, selected and in IDLE).
Then, idle for `--idle-seconds`: the fetcher's CPU, RSS, threads and TCP connections to
RabbitMQ and to Dovecot. Then pick-up: `--picks` mails appended one at a time, each to a
mailbox chosen at random, each timed from the end of its APPEND to its `mail.fetched` in the
binder's queue (no binder runs). Dovecot's own IDLE notice takes about 0.5 s of that.

`--compare REV` runs the same with the fetcher of git revision REV (a worktree of it, the
same interpreter), for the table's comparison: the design before one replica could hold
thousands of mailboxes. Dovecot must be configured for N connections (deploy/local: up to
100 per imap process, inotify instances raised where the kernel allows).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    Run,
    cached_mailbox,
    imap,
    mixed_mail,
    print_table,
    quick_default,
    save_json,
    wait_for,
)
from tests.services import REPO, MailServer, load_local_env, mail_server

AMQP_PORT, MAX_WAIT = 5672, 20.0
SCRAPE_EVERY = 5.0  # seconds between looks at the replicas' gauges (--replicas)
PER_TENANT = 10


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mailboxes", type=int, help="idle mailboxes (5000; --quick: 200)")
    p.add_argument("--picks", type=int, help="mails appended for pick-up (100; --quick: 20)")
    p.add_argument("--idle-seconds", type=float, default=30.0, help="the idle CPU window")
    p.add_argument(
        "--ready-timeout", type=float, default=180.0, help="give up waiting for ready after"
    )
    p.add_argument(
        "--lease-seconds",
        type=float,
        help="the fetcher's MAILINTAKE_LEASE_SECONDS (its default: 30); a lease round renews "
        "every third of it, so thousands of mailboxes on a slow store want a longer one",
    )
    p.add_argument(
        "--busy",
        type=int,
        metavar="MAILS",
        help="once ready, add a mailbox of MAILS mails (first load: all) and measure the "
        "pick-up while it loads",
    )
    p.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="run K replicas instead (no pick-up): their shares, kill -9 of one and how long "
        "until the others hold every mailbox, then a replica added and how long until the "
        "shares are even again",
    )
    p.add_argument("--compare", metavar="REV", help="also run the fetcher of git revision REV")
    p.add_argument(
        "--quick",
        action="store_true",
        default=quick_default(),
        help="200 mailboxes, 20 picks (BENCH_QUICK=1)",
    )
    args = p.parse_args()
    args.mailboxes = args.mailboxes or (200 if args.quick else 5000)
    args.picks = args.picks or (20 if args.quick else 100)
    return args


def main() -> None:
    args = parse_args()
    load_local_env()
    server = mail_server()
    if args.replicas > 1:
        row = replicas(server, args)
        print_table(f"{args.mailboxes} idle mailboxes, {args.replicas} fetcher replicas", [row])
        save_json("mailboxes-replicas", {"args": vars(args), "row": row})
        return
    rows = []
    if args.compare:
        with worktree(args.compare) as tree:
            rows.append(measure(server, args, tree, f"{args.compare} (before)"))
    rows.append(measure(server, args, REPO, "this tree"))
    print_table(f"{args.mailboxes} idle mailboxes, one fetcher replica", rows)
    save_json("mailboxes", {"args": vars(args), "rows": rows})


@contextlib.contextmanager
def worktree(rev: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="bench-mailboxes-"))
    subprocess.run(["git", "worktree", "add", "--detach", str(path), rev], cwd=REPO, check=True)
    try:
        yield path
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=REPO, check=False)


def measure(server: MailServer, args: argparse.Namespace, tree: Path, label: str) -> dict[str, Any]:
    n = args.mailboxes
    run = Run.start("bm")
    users = [f"bm-{i}" for i in range(n)]
    try:
        ids = add_accounts(run, server, users)
        port = free_port()
        env = run.env(MAILINTAKE_METRICS_PORT=str(port)) | {"MAILINTAKE_LOG_LEVEL": "INFO"}
        if args.lease_seconds:
            env["MAILINTAKE_LEASE_SECONDS"] = str(args.lease_seconds)
        log = (run.log_dir / "fetcher.log").open("ab")
        fetcher = subprocess.Popen(
            [sys.executable, "-m", "fetcher"], env=env, cwd=tree, stdout=log, stderr=log
        )
        t0 = time.monotonic()
        try:
            ready = wait_ready(fetcher.pid, port, server.imaps_port, n, t0, args.ready_timeout)
            print(f"{label}: {n} mailboxes ready after {ready}", flush=True)
            row: dict[str, Any] = {"fetcher": label, "mailboxes": n, "ready s": ready}
            row.update(idle_figures(fetcher.pid, server, args.idle_seconds))
            if ready is not None:
                busy = start_busy(run, server, args.busy) if args.busy else None
                users_of = dict(zip(ids, users, strict=True))
                row.update(pick_up(run, server, users_of, args.picks, busy))
            row["AMQP conns"] = tcp_connections(fetcher.pid, AMQP_PORT)  # after publishing
            return row
        finally:
            fetcher.terminate()
            try:
                fetcher.wait(120)
            except subprocess.TimeoutExpired:
                fetcher.kill()
            log.close()
    finally:
        run.close()


class Replicas:
    """Fetcher processes of one run, each with its metrics port, read through its gauges."""

    def __init__(self, run: Run, env: dict[str, str]) -> None:
        self.run, self.env = run, env
        self.procs: dict[str, tuple[subprocess.Popen[bytes], int]] = {}

    def start(self, name: str) -> None:
        port = free_port()
        with (self.run.log_dir / f"fetcher-{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "fetcher"],
                env=self.env | {"MAILINTAKE_METRICS_PORT": str(port)},
                cwd=REPO,
                stdout=log,
                stderr=log,
            )
        self.procs[name] = (proc, port)

    def kill(self, name: str) -> None:
        proc, _port = self.procs.pop(name)
        proc.kill()
        proc.wait()

    def held(self) -> list[int]:
        name = "mailintake_fetcher_accounts_held"
        return [int(gauge(port, name) or 0) for _proc, port in self.procs.values()]

    def idle(self) -> int:
        name = "mailintake_fetcher_mailboxes_idle"
        return int(sum(gauge(port, name) or 0 for _proc, port in self.procs.values()))

    def even(self, n: int) -> bool:
        shares = self.held()
        return sum(shares) == n and max(shares) - min(shares) <= 1

    def stop(self) -> None:
        for proc, _port in self.procs.values():
            proc.terminate()
        for proc, _port in self.procs.values():
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()


def seconds_until(predicate: Callable[[], bool], timeout: float) -> float | None:
    """Seconds until `predicate` holds, looked at every SCRAPE_EVERY seconds; None: never."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if predicate():
            return round(time.monotonic() - t0, 1)
        time.sleep(SCRAPE_EVERY)
    return None


def replicas(server: MailServer, args: argparse.Namespace) -> dict[str, Any]:
    """K replicas over N mailboxes: ready, shares, a kill -9 taken over, a replica added.

    Read from each replica's gauges every SCRAPE_EVERY seconds (a scrape reads the accounts
    it holds from the store), so the times are to within that."""
    n, k, lease = args.mailboxes, args.replicas, args.lease_seconds or 30.0
    run = Run.start("bm")
    env = run.env() | {"MAILINTAKE_LOG_LEVEL": "INFO", "MAILINTAKE_LEASE_SECONDS": str(lease)}
    fleet = Replicas(run, env)
    try:
        add_accounts(run, server, [f"bm-{i}" for i in range(n)])
        for i in range(k):
            fleet.start(f"r{i}")
        row: dict[str, Any] = {"replicas": k, "mailboxes": n, "lease s": lease}
        ready = seconds_until(lambda: fleet.idle() >= n and fleet.even(n), args.ready_timeout)
        row.update({"ready s": ready, "shares": "/".join(map(str, fleet.held()))})
        fleet.kill("r0")
        row["after kill -9: all held s"] = seconds_until(
            lambda: sum(fleet.held()) == n, lease + 120
        )
        row["all idle s"] = seconds_until(lambda: fleet.idle() >= n, 120)
        fleet.start(f"r{k}")
        row["a replica added: even s"] = seconds_until(lambda: fleet.even(n), lease * 3 + 120)
        row["shares after"] = "/".join(map(str, fleet.held()))
        return row
    finally:
        fleet.stop()
        run.close()


def add_accounts(
    run: Run, server: MailServer, users: list[str], initial_sync: str = "new"
) -> list[str]:
    """An IMAP account per user, PER_TENANT to a tenant (one command); their ids."""
    password = run.secrets.encrypt(server.password)
    docs = [
        {
            "_id": f"{run.tenant}-{i // PER_TENANT}-{user}",
            "tenant_id": f"{run.tenant}-{i // PER_TENANT}", "owner_id": "u-owner",
            "protocol": "imap", "host": server.host, "port": server.imaps_port,
            "security": "ssl", "username": user, "folder": "INBOX", "ca_file": server.ca_file,
            "initial_sync": initial_sync, "password_enc": password, "enabled": True,
            "created_at": datetime.now(UTC), "state": {"status": "new"}, "sync": {},
        }
        for i, user in enumerate(users)
    ]  # fmt: skip
    run.store.accounts.insert_many(docs)
    return [d["_id"] for d in docs]


def start_busy(run: Run, server: MailServer, mails: int) -> str:
    """A mailbox of `mails` mails whose first load takes all: its account, once loading."""
    user = f"benchmix{mails}v1"  # bench_pipeline's mailbox of that size, reused
    cached_mailbox(server, user, mails, mixed_mail)
    [busy] = add_accounts(run, server, [user], initial_sync="all")
    wait_for(lambda: busy_progress(run, busy)[0] > 0, 120, "the busy mailbox's load")
    return busy


def busy_progress(run: Run, account_id: str) -> tuple[int, int]:
    """(done, total) of the account's first load."""
    doc = run.store.accounts.find_one({"_id": account_id}, {"progress": 1}) or {}
    progress = doc.get("progress") or {}
    return int(progress.get("done", 0)), int(progress.get("total", 0))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gauge(port: int, name: str) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60) as r:
            text = r.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def wait_ready(
    pid: int, port: int, imap_port: int, n: int, t0: float, timeout: float
) -> float | None:
    """Seconds until every mailbox is in IDLE, or None (never, within `timeout`). A fetcher
    without the IDLE gauge (`--compare` with an older one) counts as ready once it holds N
    IMAP connections at two looks 2 s apart."""
    held = 0
    while time.monotonic() - t0 < timeout:
        idle = gauge(port, "mailintake_fetcher_mailboxes_idle")
        if idle is not None and idle >= n:
            return round(time.monotonic() - t0, 1)
        if idle is None:
            connected = tcp_connections(pid, imap_port)
            if connected >= n and held >= n:
                return round(time.monotonic() - t0 - 2.0, 1)
            held = connected
        time.sleep(2.0)  # a scrape reads every account's state from the store
    return None


def idle_figures(pid: int, server: MailServer, seconds: float) -> dict[str, Any]:
    cpu0, t0 = cpu_s(pid), time.monotonic()
    time.sleep(seconds)
    cpu = (cpu_s(pid) - cpu0) / (time.monotonic() - t0)
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    rss_mb = int(status["VmRSS"].split()[0]) / 1024
    return {
        "RSS MB": round(rss_mb),
        "threads": int(status["Threads"]),
        "idle CPU %": round(100 * cpu, 1),
        "IMAP conns": tcp_connections(pid, server.imaps_port),
    }


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tcp_connections(pid: int, remote_port: int) -> int:
    """Established TCP connections of `pid` to `remote_port` (its socket fds, /proc/net/tcp)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == "01" and int(f[2].rsplit(":", 1)[1], 16) == remote_port and f[9] in inodes:
                count += 1
    return count


def pick_up(
    run: Run, server: MailServer, users: dict[str, str], picks: int, busy: str | None
) -> dict[str, Any]:
    """Append `picks` mails one at a time to random mailboxes; seconds to each mail.fetched.

    The bench reads each from a queue of its own, bound to the picked account's routing key
    only while its mail is awaited (a busy mailbox's load goes past it). With `busy`, the
    picks made while that account's first load was going on are also counted apart."""
    chosen = random.sample(sorted(users), min(picks, len(users)))
    latencies: list[float | None] = []
    during: list[float | None] = []
    with run.broker() as broker:
        ch, exchange = broker.channel, broker.topology.exchange
        queue = ch.queue_declare("", exclusive=True).method.queue
        with ThreadPoolExecutor(1) as pool:
            for account_id in chosen:
                key = f"mail.fetched.{account_id}"
                ch.queue_bind(queue, exchange, key)
                loading = busy is not None and loading_now(run, busy)
                appended = pool.submit(append, server, users[account_id]).result()
                latency = wait_fetched(broker, queue, appended)
                latencies.append(latency)
                if loading and loading_now(run, busy):
                    during.append(latency)
                ch.queue_unbind(queue, exchange, key)
                time.sleep(0.1)
    row = {"picked": f"{sum(x is not None for x in latencies)}/{len(chosen)}"}
    row.update(percentiles("pick-up", latencies))
    if busy is not None:
        done, total = busy_progress(run, busy)
        row["busy load"] = f"{done}/{total}"
        row["picks during it"] = len(during)
        row.update(percentiles("during", during))
    return row


def loading_now(run: Run, account_id: str | None) -> bool:
    if account_id is None:
        return False
    done, total = busy_progress(run, account_id)
    return 0 < done < total


def percentiles(name: str, latencies: list[float | None]) -> dict[str, Any]:
    """p50 and p99 in seconds (a pick never seen counts as the longest)."""
    if not latencies:
        return {}
    got = sorted(MAX_WAIT if x is None else x for x in latencies)
    p99 = statistics.quantiles(got, n=100, method="inclusive")[98] if len(got) > 1 else got[0]
    return {f"{name} p50 s": round(statistics.median(got), 2), f"{name} p99 s": round(p99, 2)}


def append(server: MailServer, user: str) -> float:
    """APPEND one mail; the monotonic time its APPEND completed."""
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "a@example.org", f"{user}@example.org", "pick-up"
    msg.set_content("a new mail for an idle mailbox")
    client = imap(server, user)
    try:
        client.append("INBOX", "", None, msg.as_bytes())
        return time.monotonic()
    finally:
        client.logout()


def wait_fetched(broker: Any, queue: str, since: float) -> float | None:
    while time.monotonic() - since < MAX_WAIT:
        got = broker.get(queue)
        if got is not None:
            broker.ack(got[1])
            return time.monotonic() - since
        time.sleep(0.005)
    return None


if __name__ == "__main__":
    main()
