"""Helpers the benchmarks share: a run's tenant, mixed mail, mailboxes, stage processes, output."""

from __future__ import annotations

import imaplib
import json
import os
import random
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from shared.crypto import SecretBox  # noqa: E402
from shared.messaging import Broker  # noqa: E402
from shared.settings import Settings  # noqa: E402
from shared.store import Store  # noqa: E402
from shared.topology import Topology  # noqa: E402
from tests.processes import StageProcesses  # noqa: E402
from tests.services import MailServer, load_local_env  # noqa: E402

RESULTS = REPO / "bench" / "results"
STAGES = ("fetcher", "binder", "assigner", "notifier")


def quick_default() -> bool:
    """`BENCH_QUICK=1` (e.g. `BENCH_QUICK=1 make bench`) makes --quick the default."""
    return os.environ.get("BENCH_QUICK", "") not in ("", "0")


# -- one run: its own namespace (queues) and database ------------------------------------
@dataclass
class Run:
    """A benchmark run's namespace, database and tenant; `close()` removes all of them."""

    settings: Settings
    store: Store
    tenant: str
    log_dir: Path
    secrets: SecretBox = field(init=False)

    def __post_init__(self) -> None:
        key = self.settings.secret_key.get_secret_value() if self.settings.secret_key else ""
        self.secrets = SecretBox(key)

    @classmethod
    def start(cls, prefix: str) -> Run:
        load_local_env()
        ns = f"{prefix}{uuid.uuid4().hex[:8]}"
        base = Settings()
        url = base.mongo_url.get_secret_value().split("?")[0].rsplit("/", 1)[0] + f"/{ns}"
        settings = Settings(mongo_url=url, namespace=ns, log_format="json")
        store = Store(url, ns)
        store.ping()
        store.ensure_indexes()
        log_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"mailintake-{ns}"
        log_dir.mkdir(parents=True, exist_ok=True)
        run = cls(settings, store, tenant=f"bench-{ns}", log_dir=log_dir)
        with run.broker() as broker:
            broker.declare()
        return run

    def broker(self) -> _BrokerContext:
        return _BrokerContext(self.settings)

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a stage process of this run."""
        s = self.settings
        env = dict(os.environ)
        env.update(
            MAILINTAKE_AMQP_URL=s.amqp_url.get_secret_value(),
            MAILINTAKE_MONGO_URL=s.mongo_url.get_secret_value(),
            MAILINTAKE_NAMESPACE=s.namespace,
            MAILINTAKE_LOG_FORMAT="json",
            MAILINTAKE_LOG_LEVEL="WARNING",
            **extra,
        )
        return env

    def stages(self, **extra: str) -> StageProcesses:
        return StageProcesses(self.env(**extra), self.log_dir)

    def replicas(self, stage: str, count: int, **extra: str) -> list[subprocess.Popen[bytes]]:
        """`count` processes of one stage (StageProcesses keeps one per stage)."""
        procs = []
        for k in range(count):
            with (self.log_dir / f"{stage}-{k}.log").open("ab") as log:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", stage],
                        env=self.env(**extra),
                        cwd=REPO,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        return procs

    def add_account(self, server: MailServer, user: str, **options: Any) -> str:
        """An IMAP (TLS) account of the run's tenant on the local Dovecot; its id."""
        account_id = f"{self.tenant}-{user}"
        self.store.accounts.insert_one(
            {
                "_id": account_id, "tenant_id": self.tenant, "owner_id": "u-owner",
                "protocol": "imap", "host": server.host, "port": server.imaps_port,
                "security": "ssl", "username": user, "folder": "INBOX",
                "ca_file": server.ca_file, "initial_sync": "all", "poll_interval": 5,
                "max_message_bytes": 25 * 1024 * 1024,
                "password_enc": self.secrets.encrypt(server.password), "enabled": True,
                "created_at": datetime.now(UTC), "state": {"status": "new"}, "sync": {},
                **options,
            }
        )  # fmt: skip
        return account_id

    def close(self) -> None:
        with self.broker() as broker:
            for queue in broker.topology.all_queues():
                broker.channel.queue_delete(queue)
            broker.channel.exchange_delete(broker.topology.exchange)
            broker.channel.exchange_delete(broker.topology.failures_exchange)
        self.store.client.drop_database(self.settings.namespace)
        self.store.close()


class _BrokerContext:
    def __init__(self, settings: Settings) -> None:
        topology = Topology(settings.namespace, settings.delivery_limit)
        self._broker = Broker(settings.amqp_url.get_secret_value(), topology)

    def __enter__(self) -> Broker:
        self._broker.connect()
        return self._broker

    def __exit__(self, *_exc: object) -> None:
        self._broker.close()


# -- the CRM and the mixed mail ---------------------------------------------------------
MANAGERS = [f"m-{i}" for i in range(5)]
KNOWN, ORDERS = 200, 200
CHARSETS = {  # charset: (sample text, transfer encoding)
    "utf-8": ("Grüße, где мой заказ? ご注文について。 ", None),
    "iso-8859-1": ("Grüße aus München, ça va? Déjà vu, señor. ", "quoted-printable"),
    "koi8-r": ("Здравствуйте, подскажите, когда придёт мой заказ? ", "8bit"),
    "shift_jis": ("ご注文の配送日について教えてください。", "base64"),
}


def kind_of(i: int) -> str:
    """25 % order tag, 25 % known sender, 35 % new sender, 15 % skipped (auto-reply)."""
    r = i % 20
    return "order" if r < 5 else "known" if r < 10 else "new" if r < 17 else "skipped"


def notifications_for(kinds: Iterable[str]) -> int:
    """What the rules require: two for a new customer (assigned, then the mail), else one."""
    return sum(2 if k == "new" else 1 for k in kinds)


def seed_crm(store: Store, tenant: str) -> None:
    """Managers (one group for new customers), known customers and orders with managers."""
    store.managers.insert_many(
        [{"_id": m, "tenant_id": tenant, "name": m, "status": "free", "online": True}
         for m in MANAGERS]
    )  # fmt: skip
    store.manager_groups.insert_one(
        {"_id": "g-new", "tenant_id": tenant, "name": "new", "manager_ids": MANAGERS[:4]}
    )
    now = datetime.now(UTC)
    store.customers.insert_many(
        [{"_id": f"c-{j}", "tenant_id": tenant, "emails": [f"known{j}@customer.example"],
          "manager_id": MANAGERS[j % 5], "created_at": now} for j in range(KNOWN)]
    )  # fmt: skip
    store.orders.insert_many(
        [{"_id": f"o-{j}", "tenant_id": tenant, "number": str(10000 + j),
          "customer_id": f"c-{j}", "manager_id": MANAGERS[(j + 1) % 5]} for j in range(ORDERS)]
    )  # fmt: skip


def mixed_mail(i: int, *, salt: str = "", subject: str | None = None) -> bytes:
    """Mail number i of the mix: 2-20 KB of text in one of four charsets, 1 in 10 with a
    100 KB attachment; deterministic in i (and `salt`, which makes new senders new again)."""
    rng = random.Random(i)
    kind = kind_of(i)
    msg = EmailMessage()
    sender = {
        "order": f"known{i % ORDERS}@customer.example",
        "known": f"Known Customer <known{i % KNOWN}@customer.example>",
        "new": f"New Person {i} <new{i}{salt}@new.example>",
        "skipped": f"Mailer <daemon{i}@unknown.example>",
    }[kind]
    msg["From"], msg["To"] = sender, "shop@bench.example"
    tag = f" [#{10000 + i % ORDERS}]" if kind == "order" else ""
    msg["Subject"] = subject or f"Question {i}{tag}"
    msg["Date"] = format_datetime(datetime(2026, 1, 1, tzinfo=UTC))
    msg["Message-ID"] = f"<bench-{i}{salt}@bench.example>"
    if kind == "skipped":
        msg["Auto-Submitted"] = "auto-replied"
    charset = list(CHARSETS)[i % 4]
    text, cte = CHARSETS[charset]
    size = rng.randint(2_000, 20_000)
    body = text * (size // len(text.encode(charset)) + 1)
    msg.set_content(body, charset=charset, cte=cte)
    if i % 10 == 3:
        msg.add_attachment(
            rng.randbytes(100_000), maintype="application", subtype="pdf", filename=f"doc{i}.pdf"
        )
    return msg.as_bytes()


# -- mailboxes ----------------------------------------------------------------------------
def imap(server: MailServer, user: str) -> imaplib.IMAP4_SSL:
    context = ssl.create_default_context(cafile=server.ca_file)
    client = imaplib.IMAP4_SSL(server.host, server.imaps_port, ssl_context=context, timeout=120)
    client.login(user, server.password)
    return client


def message_count(server: MailServer, user: str) -> int:
    client = imap(server, user)
    try:
        return int(client.select("INBOX")[1][0] or 0)
    finally:
        client.logout()


def fill(
    server: MailServer, user: str, count: int, make: Callable[[int], bytes], connections: int = 4
) -> float:
    """APPEND mails 0..count-1 over `connections` parallel connections; the seconds taken."""
    t0 = time.perf_counter()

    def worker(part: Sequence[int]) -> None:
        client = imap(server, user)
        try:
            for i in part:
                client.append("INBOX", "", None, make(i))
        finally:
            client.logout()

    threads = [
        threading.Thread(target=worker, args=(range(k, count, connections),))
        for k in range(connections)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def cached_mailbox(
    server: MailServer, user: str, count: int, make: Callable[[int], bytes]
) -> tuple[bool, float]:
    """A mailbox `user` holding `count` mails: reused when it already does (True), else
    emptied and filled; (reused, seconds spent filling)."""
    have = message_count(server, user)
    if have == count:
        return True, 0.0
    if have:
        client = imap(server, user)
        client.select("INBOX")
        client.uid("STORE", "1:*", "+FLAGS.SILENT", r"(\Deleted)")
        client.expunge()
        client.logout()
    return False, fill(server, user, count, make)


# -- processes and output -------------------------------------------------------------------
def proc_status(pid: int) -> dict[str, float]:
    """Peak RSS (VmHWM) in MB and CPU seconds (user + system) of a live process."""
    status = Path(f"/proc/{pid}/status").read_text()
    hwm = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM"))
    return {"peak_rss_mb": hwm // 1024, "cpu_s": _cpu_s(pid)}


def _cpu_s(pid: int, *, children: bool = False) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    used = int(fields[11]) + int(fields[12])  # utime, stime
    if children:  # cutime, cstime: the children it waited for
        used += int(fields[13]) + int(fields[14])
    return used / os.sysconf("SC_CLK_TCK")


def _local_pid_files() -> dict[str, Path]:
    """deploy/local's pid file of each service."""
    local = Path(os.environ.get("MAILINTAKE_LOCAL_DIR", "/var/tmp/mailintake-local"))
    return {
        "rabbitmq": local / "rabbitmq" / "rabbit.pid",
        "store": local / "ferretdb.pid",
        "dovecot": local / "dovecot" / "run" / "master.pid",
    }


def _service_cpu_s(name: str, pid_file: Path) -> float | None:
    """CPU seconds of one local service so far; None if it is not local or not running."""
    try:
        pid = int(pid_file.read_text().split()[0])
        if name != "dovecot":
            return _cpu_s(pid)
        # Dovecot's work is done by its children: the ones it reaped and the live ones.
        return _cpu_s(pid, children=True) + sum(_cpu_s(child) for child in _children(pid))
    except (OSError, ValueError, IndexError):
        return None


def service_cpu() -> dict[str, float]:
    """CPU seconds used so far by each local service: RabbitMQ, the store and Dovecot. A service
    that is not local (no pid file, or not running) is left out."""
    used = {name: _service_cpu_s(name, path) for name, path in _local_pid_files().items()}
    return {name: cpu for name, cpu in used.items() if cpu is not None}


def store_cpu() -> float | None:
    """CPU seconds of the local store so far, or None if the store is not the local one."""
    return _service_cpu_s("store", _local_pid_files()["store"])


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                found.append(int(entry.name))
    return found


def terminate(procs: Iterable[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each (it finishes what it holds), then wait."""
    procs = list(procs)
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(timeout=120)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, every: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def print_table(title: str, rows: list[dict[str, Any]]) -> None:
    """A plain-text table of `rows` (their keys are the columns)."""
    if not rows:
        return
    cols = list(rows[0])
    cells = [[_cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[k]) for row in cells)) for k, c in enumerate(cols)]
    print(f"\n{title}")
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    for row in cells:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    return "" if value is None else str(value)


def save_json(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"{name}-{stamp}.json"
    data = {"bench": name, "at": stamp, "machine": machine(), **data}
    path.write_text(json.dumps(data, indent=2, default=str))
    (RESULTS / f"{name}-latest.json").write_text(path.read_text())
    print(f"\nresults: {path} (machine: {data['machine']})")
    return path


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "load_avg": os.getloadavg(), "speed_s": speed()}


def speed() -> float:
    """Seconds a fixed pure-Python loop takes now: how fast this shared machine runs at the
    moment (it has been seen to vary by half within an hour)."""
    start, total = time.perf_counter(), 0
    for i in range(2_000_000):
        total += i
    return round(time.perf_counter() - start, 3)
