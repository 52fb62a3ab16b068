"""Downloads of large raw sources through the HTTP API: the API's peak RSS against the blob size.

Stores one letter whose raw source is a GridFS blob of --mib MiB (documents as the binder
writes them), starts `python -m api` (uvicorn, one process) on a free port, and has --clients
threads download `/letters/{id}/raw` --rounds times each, at once, reading the answer in
1 MiB pieces. Printed (and saved under bench/results/), not asserted: the API's peak RSS
(VmHWM) before and after the downloads, its growth, and that growth against what holding each
download whole would take (clients x blob size).

Measured in the same run, as the baseline: the same blob read straight from the store in this
process (`GridFsBlobStore.open_own`, piece by piece), from as many threads; the ratio of the
two rates is what the API adds to a download.
"""

from __future__ import annotations

import argparse
import http.client
import random
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_api import api_process, free_port
from bench.common import Run, print_table, proc_status, save_json
from ops.tokens import create_token
from shared.blobs import GridFsBlobStore

MiB = 1024 * 1024


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mib", type=int, default=95, help="size of the raw source in MiB (95)")
    p.add_argument("--clients", type=int, default=4, help="concurrent downloads (4)")
    p.add_argument("--rounds", type=int, default=2, help="downloads per client (2)")
    return p.parse_args()


def seed(run: Run, size: int) -> str:
    """A bound letter whose raw source is a blob of `size` bytes; its id."""
    ref = f"raw/{run.tenant}-big"
    data = random.Random(1).randbytes(size)
    GridFsBlobStore(run.store).put(ref, data, tenant_id=run.tenant, content_type="message/rfc822")
    del data
    run.store.emails.insert_one(
        {"_id": "big", "tenant_id": run.tenant, "status": "bound", "size": size,
         "raw_ref": ref, "received_at": datetime.now(UTC)}
    )  # fmt: skip
    return "big"


def download(
    port: int, token: str, letter: str, args: argparse.Namespace, out: list[float]
) -> None:
    size = args.mib * MiB
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    for _ in range(args.rounds):
        started = time.perf_counter()
        conn.request("GET", f"/letters/{letter}/raw", headers={"Authorization": f"Bearer {token}"})
        answer = conn.getresponse()
        got = 0
        while piece := answer.read(MiB):
            got += len(piece)
        if answer.status != 200 or got != size:
            raise SystemExit(f"download: HTTP {answer.status}, {got} of {size} bytes")
        out.append(time.perf_counter() - started)


def straight(run: Run, ref: str, args: argparse.Namespace, out: list[float]) -> None:
    size = args.mib * MiB
    blobs = GridFsBlobStore(run.store)
    for _ in range(args.rounds):
        started = time.perf_counter()
        got = sum(len(piece) for piece in blobs.open_own(run.tenant, ref).pieces)
        if got != size:
            raise SystemExit(f"straight read: {got} of {size} bytes")
        out.append(time.perf_counter() - started)


def at_once(clients: int, work: Any) -> tuple[list[float], float]:
    """`work(out)` in `clients` threads; every download's seconds and the wall time."""
    out: list[float] = []
    threads = [threading.Thread(target=work, args=(out,)) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out, time.perf_counter() - started


def main() -> int:
    args = parse_args()
    size = args.mib * MiB
    run = Run.start("bdl")
    port = free_port()
    try:
        letter = seed(run, size)
        token = create_token(run.store, tenant_id=run.tenant, name="bench", now=datetime.now(UTC))
        with api_process(run, port) as api:
            idle = proc_status(api.pid)["peak_rss_mb"]
            base, base_wall = at_once(
                args.clients, lambda out: straight(run, f"raw/{run.tenant}-big", args, out)
            )
            served, wall = at_once(
                args.clients, lambda out: download(port, token, letter, args, out)
            )
            peak = proc_status(api.pid)["peak_rss_mb"]
        report(args, idle, peak, (base, base_wall), (served, wall))
    finally:
        run.close()
    return 0


def report(
    args: argparse.Namespace,
    idle: int,
    peak: int,
    base: tuple[list[float], float],
    served: tuple[list[float], float],
) -> None:
    moved = args.clients * args.rounds * args.mib
    whole = args.clients * args.mib
    rows = [
        {"what": "straight from the store (baseline)", "MB/s": round(moved / base[1], 1),
         "slowest_s": round(max(base[0]), 2)},
        {"what": "GET /letters/{id}/raw", "MB/s": round(moved / served[1], 1),
         "slowest_s": round(max(served[0]), 2)},
    ]  # fmt: skip
    memory = {
        "API peak RSS idle MB": idle,
        "API peak RSS after MB": peak,
        "growth MB": peak - idle,
        "downloads held whole would be MB": whole,
        "growth / held whole": round((peak - idle) / whole, 3),
        "rate API / baseline": round(rows[1]["MB/s"] / max(rows[0]["MB/s"], 0.001), 2),
    }
    title = f"{args.clients} concurrent downloads of a {args.mib} MiB raw source"
    print_table(title + f", {args.rounds} each", rows)
    print_table("the API's memory", [memory])
    save_json("bench_api_downloads", {"args": vars(args), "rates": rows, "memory": memory})


if __name__ == "__main__":
    sys.exit(main())
