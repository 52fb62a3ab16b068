"""The store's CPU per stage, command and collection: a recorded load replayed command by command.

`bench_pipeline.py --record-store DIR` records every store command of the stages (see
bench/recorder/). This replays them in the order they were sent, one at a time, on a scratch
database of the local store, and adds up the store's CPU (its pid file) around each: which
stage's writes to which collection cost what, per mail. One at a time, so work the store does
in the background (a checkpoint, Go's collector) is counted to the command it runs beside:
the small figures are rough, the large ones are what to work on.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import bson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import print_table, save_json, store_cpu
from shared.store import Store
from tests.services import load_local_env

DATABASE = "bench_store_replay"
SESSION_FIELDS = {"lsid", "$clusterTime", "txnNumber", "$db", "$readPreference"}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("directory", type=Path, help="what bench_pipeline.py --record-store wrote")
    p.add_argument("--top", type=int, default=25, help="rows shown (25)")
    return p.parse_args()


def load(directory: Path) -> list[dict[str, Any]]:
    """The recorded commands of the run's database, in the order they were sent."""
    records: list[dict[str, Any]] = []
    for path in sorted(directory.glob("commands-*.bson")):
        records.extend(bson.decode_all(path.read_bytes()))
    if not records:
        raise SystemExit(f"no recorded commands in {directory}")
    run_db = Counter(r["db"] for r in records).most_common(1)[0][0]
    return sorted((r for r in records if r["db"] == run_db), key=lambda r: r["t"])


def replay(store: Store, records: list[dict[str, Any]]) -> dict[tuple[str, str, str], list[float]]:
    """(stage, command, collection) -> [commands, documents, store CPU s]."""
    db = store.client[DATABASE]
    used: dict[tuple[str, str, str], list[float]] = {}
    for record in records:
        command = {k: v for k, v in record["command"].items() if k not in SESSION_FIELDS}
        name = next(iter(command))
        if name == "dropDatabase":
            continue
        if name == "find":
            command["batchSize"] = 1_000_000  # read whole: no getMore to replay
        target = command[name]
        key = (record["stage"], name, target if isinstance(target, str) else "")
        written = command.get("documents") or command.get("updates") or command.get("deletes")
        docs = len(written or [])
        before = store_cpu() or 0.0
        # A refused write (a duplicate insert, as in the run) is counted all the same.
        with contextlib.suppress(Exception):
            db.command(command)
        row = used.setdefault(key, [0, 0, 0.0])
        row[0] += 1
        row[1] += docs
        row[2] += (store_cpu() or 0.0) - before
    return used


def main() -> None:
    args = parse_args()
    load_local_env()
    records = load(args.directory)
    mails = sum(
        len(r["command"].get("documents") or [])
        for r in records
        if r["stage"] == "binder" and r["command"].get("insert") == "emails"
    )
    store = Store(os.environ.get("MAILINTAKE_MONGO_URL", "mongodb://127.0.0.1:27017"), DATABASE)
    store.client.drop_database(DATABASE)
    try:
        if store_cpu() is None:
            raise SystemExit("the store's CPU is read from the local store's pid file: none here")
        used = replay(store, records)
    finally:
        store.client.drop_database(DATABASE)
        store.close()
    total = sum(cpu for _, _, cpu in used.values())
    rows = [
        {"stage": stage, "command": name, "collection": coll, "commands": n, "documents": docs,
         "store cpu s": cpu, "ms per mail": cpu / max(mails, 1) * 1e3, "share %": 100 * cpu / total}
        for (stage, name, coll), (n, docs, cpu) in sorted(used.items(), key=lambda kv: -kv[1][2])
    ]  # fmt: skip
    print_table(f"Store CPU of a recorded load ({mails} mails), replayed", rows[: args.top])
    print(f"all: {total:.2f} s of store CPU, {total / max(mails, 1) * 1e3:.2f} ms per mail")
    save_json("store-replay", {"mails": mails, "rows": rows})


if __name__ == "__main__":
    main()
