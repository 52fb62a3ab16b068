"""The HTTP API under load: reads of letters by customer at N concurrent clients, p50/p99.

Seeds a run's database with customers and their letters (documents as the binder writes them,
without blobs: the listing reads none), starts `python -m api` (uvicorn, one process) on a free
port, and has each client thread read one customer's newest page after another over a
keep-alive connection. Figures are printed (and saved under bench/results/), not asserted.

Measured in the same run, as the baseline: the same reads sent straight to the store with
pymongo from as many threads (the query the API sends: the page's fields, newest first). The
ratio of the two is what the API adds. The figures that carry over to another store (MongoDB)
are the API's own CPU per request and the store commands per request, counted by a pymongo
listener in the API's process (bench/recorder/).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from api.letters import _LIST_FIELDS
from bench.common import REPO, Run, _cpu_s, print_table, save_json, store_cpu
from ops.tokens import create_token

RECORDER = Path(__file__).resolve().parent / "recorder"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=50, help="concurrent clients (50)")
    p.add_argument("--requests", type=int, default=40, help="requests per client (40)")
    p.add_argument("--customers", type=int, default=200, help="customers (200)")
    p.add_argument("--letters", type=int, default=50, help="letters per customer (50)")
    p.add_argument("--page", type=int, default=20, help="letters per page (20)")
    return p.parse_args()


def seed(run: Run, customers: int, letters: int) -> list[str]:
    now = datetime.now(UTC)
    ids = [f"c{n}" for n in range(customers)]
    run.store.customers.insert_many(
        [{"_id": c, "tenant_id": run.tenant, "emails": []} for c in ids]
    )
    docs = [
        {
            "_id": f"{c}-m{k}",
            "tenant_id": run.tenant,
            "account_id": "a1",
            "customer_id": c,
            "status": "bound",
            "matched_by": "sender",
            "from_address": f"{c}@example.com",
            "subject": f"letter {k}",
            "received_at": now - timedelta(minutes=k),
        }
        for c in ids
        for k in range(letters)
    ]
    for start in range(0, len(docs), 5000):
        run.store.emails.insert_many(docs[start : start + 5000])
    return ids


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def api_process(run: Run, port: int, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m api` of the run on `port`, ready; stopped at the end (its log in the run's)."""
    environment = run.env(MAILINTAKE_API_ADDR=f"127.0.0.1:{port}", **env)
    with (run.log_dir / "api.log").open("ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "api"], env=environment, cwd=REPO,
                                   stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        wait_ready(port)
        yield process
    finally:
        process.terminate()
        process.wait(timeout=60)


def wait_ready(port: int) -> None:
    for _ in range(300):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit("the API did not get ready")


def client(port: int, token: str, customers: list[str], args: argparse.Namespace,
           out: list[float], errors: list[int]) -> None:  # fmt: skip
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": f"Bearer {token}"}
    pick = random.Random(threading.get_ident())
    for _ in range(args.requests):
        path = f"/customers/{pick.choice(customers)}/letters?limit={args.page}"
        started = time.perf_counter()
        conn.request("GET", path, headers=headers)
        answer = conn.getresponse()
        answer.read()
        out.append(time.perf_counter() - started)
        if answer.status != 200:
            errors.append(answer.status)


def direct(run: Run, customers: list[str], args: argparse.Namespace,
           out: list[float]) -> None:  # fmt: skip
    """One client's reads sent straight to the store: the baseline."""
    pick = random.Random(threading.get_ident())
    for _ in range(args.requests):
        query = {"tenant_id": run.tenant, "customer_id": pick.choice(customers)}
        started = time.perf_counter()
        list(
            run.store.emails.find(query, _LIST_FIELDS)
            .sort([("received_at", -1), ("_id", -1)])
            .limit(args.page + 1)
        )
        out.append(time.perf_counter() - started)


def load(clients: int, work: Any) -> tuple[list[float], float, float | None]:
    """Latencies of `clients` threads each running `work(out)`, the wall time, the store's CPU."""
    latencies: list[float] = []
    threads = [threading.Thread(target=work, args=(latencies,)) for _ in range(clients)]
    store_before, started = store_cpu(), time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed, store_after = time.perf_counter() - started, store_cpu()
    used = None if store_before is None or store_after is None else store_after - store_before
    return latencies, elapsed, used


def figures(what: str, latencies: list[float], elapsed: float, store_s: float | None,
            errors: int = 0) -> dict[str, Any]:  # fmt: skip
    cuts = statistics.quantiles(latencies, n=100)
    return {
        "reads": what,
        "requests": len(latencies),
        "errors": errors,
        "p50_ms": round(cuts[49] * 1000, 1),
        "p99_ms": round(cuts[98] * 1000, 1),
        "max_ms": round(max(latencies) * 1000, 1),
        "req_per_s": round(len(latencies) / elapsed, 1),
        "store_cpu_ms_per_req": None
        if store_s is None
        else round(store_s / len(latencies) * 1e3, 2),
    }


def commands(directory: Path) -> dict[str, int]:
    """Store commands the API's process sent so far, by command (bench/recorder/ counts)."""
    sent: dict[str, int] = {}
    for path in directory.glob("counts-*.json"):
        for name, _collection, n, _written, _read in json.loads(path.read_text())["commands"]:
            sent[name] = sent.get(name, 0) + n
    return sent


def main() -> int:
    args = parse_args()
    run = Run.start("bapi")
    port = free_port()
    try:
        customers = seed(run, args.customers, args.letters)
        token = create_token(run.store, tenant_id=run.tenant, name="bench", now=datetime.now(UTC))
        counts = Path(tempfile.mkdtemp(prefix="bench-api-counts-"))
        path = os.pathsep.join(filter(None, [str(RECORDER), os.environ.get("PYTHONPATH")]))
        with api_process(run, port, PYTHONPATH=path, MAILINTAKE_BENCH_COUNT=str(counts)) as api:
            measure(run, args, port, token, customers, api, counts)
    finally:
        run.close()
    return 0


def measure(run: Run, args: argparse.Namespace, port: int, token: str, customers: list[str],
            process: subprocess.Popen[bytes], counts: Path) -> None:  # fmt: skip
    """The baseline, then the same reads through the API; the figures printed and saved."""
    baseline = load(args.clients, lambda out: direct(run, customers, args, out))
    errors: list[int] = []
    time.sleep(1.2)  # the counts file is saved at most once a second
    sent_before, cpu_before = commands(counts), _cpu_s(process.pid)
    served = load(args.clients, lambda out: client(port, token, customers, args, out, errors))
    cpu_used = _cpu_s(process.pid) - cpu_before
    time.sleep(1.2)
    sent = commands(counts)
    per_request = {
        name: round((n - sent_before.get(name, 0)) / len(served[0]), 3)
        for name, n in sorted(sent.items())
        if n > sent_before.get(name, 0)
    }
    rows = [
        figures("straight to the store (baseline)", *baseline),
        figures("GET /customers/{id}/letters", *served, errors=len(errors)),
    ]
    ratio = rows[1]["p50_ms"] / max(rows[0]["p50_ms"], 0.001)
    ours = {
        "API CPU ms per request": round(cpu_used / len(served[0]) * 1e3, 2),
        "store commands per request": per_request,
        "p50 API / p50 baseline": round(ratio, 2),
        "clients": args.clients,
        "letters stored": args.customers * args.letters,
    }
    print_table(f"reads of letters by customer, {args.clients} concurrent clients", rows)
    print_table("what carries over to another store", [ours])
    save_json("bench_api", {"args": vars(args), "result": rows, "ours": ours})


if __name__ == "__main__":
    sys.exit(main())
