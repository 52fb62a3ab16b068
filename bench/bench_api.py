"""The HTTP API under load: reads of letters by customer at N concurrent clients, p50/p99.

Seeds a run's database with customers and their letters (documents as the binder writes them,
without blobs: the listing reads none), starts `python -m api` (uvicorn, one process) on a free
port, and has each client thread read one customer's newest page after another over a
keep-alive connection. Figures are printed (and saved under bench/results/), not asserted.
"""

from __future__ import annotations

import argparse
import http.client
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, Run, print_table, save_json
from ops.tokens import create_token


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


def main() -> int:
    args = parse_args()
    run = Run.start("bapi")
    port = free_port()
    process = None
    try:
        customers = seed(run, args.customers, args.letters)
        token = create_token(run.store, tenant_id=run.tenant, name="bench", now=datetime.now(UTC))
        env = run.env(MAILINTAKE_API_ADDR=f"127.0.0.1:{port}")
        with (run.log_dir / "api.log").open("ab") as log:
            process = subprocess.Popen([sys.executable, "-m", "api"], env=env, cwd=REPO,
                                       stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        wait_ready(port)
        latencies: list[float] = []
        errors: list[int] = []
        threads = [
            threading.Thread(target=client, args=(port, token, customers, args, latencies, errors))
            for _ in range(args.clients)
        ]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - started
        cuts = statistics.quantiles(latencies, n=100)
        row = {
            "clients": args.clients,
            "requests": len(latencies),
            "errors": len(errors),
            "p50_ms": round(cuts[49] * 1000, 1),
            "p99_ms": round(cuts[98] * 1000, 1),
            "max_ms": round(max(latencies) * 1000, 1),
            "req_per_s": round(len(latencies) / elapsed, 1),
            "letters_stored": args.customers * args.letters,
        }
        print_table("reads of letters by customer (GET /customers/{id}/letters)", [row])
        save_json("bench_api", {"args": vars(args), "result": row})
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=60)
        run.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
