"""Counts, and on request records, a stage's store commands, for bench_pipeline.py.

Python imports this module at start-up (as `sitecustomize`) only in the stage processes that
`bench_pipeline.py` starts, which have this directory on their PYTHONPATH:

- MAILINTAKE_BENCH_COUNT=DIR (every run): each process keeps DIR/counts-<pid>.json current with
  how many commands it sent, and how many documents they wrote and read, by command and
  collection. Unlike the store's CPU, these figures carry over to another store (MongoDB).
- MAILINTAKE_BENCH_RECORD=DIR (`--record-store DIR`): each process appends its commands, as BSON
  documents, to DIR/commands-<pid>.bson, for bench/store_replay.py.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import bson
from pymongo import monitoring

# Cursor and session traffic: a replay reads each find whole and opens no sessions.
_SKIPPED = {"getMore", "killCursors", "endSessions", "ping", "hello", "isMaster", "ismaster"}


def _stage() -> str:
    """`python -m <stage>`: argv[0] is <stage>/__main__.py (not set yet while this is imported)."""
    return Path(sys.argv[0]).resolve().parent.name


class _Recorder(monitoring.CommandListener):
    def __init__(self, directory: Path) -> None:
        self._path = directory / f"commands-{os.getpid()}.bson"
        self._stage = ""
        self._file: IO[bytes] | None = None
        self._lock = threading.Lock()

    def started(self, event: Any) -> None:
        if event.command_name in _SKIPPED:
            return
        if not self._stage:
            self._stage = _stage()
        record = {
            "t": time.time(),
            "stage": self._stage,
            "db": event.database_name,
            "command": dict(event.command),
        }
        with self._lock:
            if self._file is None:
                self._file = self._path.open("ab")
            self._file.write(bson.encode(record))
            self._file.flush()

    def succeeded(self, event: Any) -> None:
        pass

    def failed(self, event: Any) -> None:
        pass


def _documents(command: str, reply: Mapping[str, Any]) -> tuple[int, int]:
    """(written, read): the documents a command inserted, modified, upserted or deleted (from
    its reply, so that a refused duplicate is not counted) and the documents it returned."""
    cursor = reply.get("cursor") or {}
    read = len(cursor.get("firstBatch") or cursor.get("nextBatch") or ())
    if command == "update":
        return reply.get("nModified", 0) + len(reply.get("upserted") or ()), read
    if command in ("insert", "delete"):
        return reply.get("n", 0), read
    return 0, read


class _Counter(monitoring.CommandListener):
    """Commands sent, documents written and read, by command and collection.

    The file is rewritten after a reply at most once a second, and at exit: a stage stopped
    with SIGTERM finishes its batch and exits through `atexit` with its full count; a killed
    one (an incomplete run) leaves its last save, at most a second short of its last reply.
    """

    def __init__(self, directory: Path) -> None:
        self._path = directory / f"counts-{os.getpid()}.json"
        self._counts: dict[tuple[str, str], list[int]] = {}  # [commands, written, read]
        self._sent: dict[int, tuple[str, str]] = {}  # request id -> its key, until the reply
        self._saved_at = 0.0
        self._lock = threading.Lock()
        atexit.register(self.save)

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        target = event.command.get(event.command_name)  # getMore's is a cursor id
        collection = target if isinstance(target, str) else event.command.get("collection", "")
        key = (event.command_name, collection)
        with self._lock:
            self._counts.setdefault(key, [0, 0, 0])[0] += 1
            self._sent[event.request_id] = key

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        written, read = _documents(event.command_name, event.reply)
        with self._lock:
            key = self._sent.pop(event.request_id, None)
            if key is not None:
                row = self._counts[key]
                row[1] += written
                row[2] += read
        if time.monotonic() - self._saved_at >= 1.0:
            self.save()

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        with self._lock:
            self._sent.pop(event.request_id, None)

    def save(self) -> None:
        with self._lock:  # one writer at a time: they share the temporary file
            self._saved_at = time.monotonic()
            rows = [[name, coll, *row] for (name, coll), row in self._counts.items()]
            tmp = self._path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"stage": _stage(), "commands": rows}))
            tmp.replace(self._path)  # a reader never sees half a file


if _directory := os.environ.get("MAILINTAKE_BENCH_COUNT"):
    monitoring.register(_Counter(Path(_directory)))
if _directory := os.environ.get("MAILINTAKE_BENCH_RECORD"):
    monitoring.register(_Recorder(Path(_directory)))
