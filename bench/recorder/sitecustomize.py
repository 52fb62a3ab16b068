"""Records a stage's store commands for bench/store_replay.py.

Python imports this module at start-up (as `sitecustomize`) only in the stage processes of
`bench_pipeline.py --record-store DIR`, which puts this directory on their PYTHONPATH. Each
process appends its commands, as BSON documents, to DIR/commands-<pid>.bson.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

import bson
from pymongo import monitoring

# Cursor and session traffic: a replay reads each find whole and opens no sessions.
_SKIPPED = {"getMore", "killCursors", "endSessions", "ping", "hello", "isMaster", "ismaster"}


class _Recorder(monitoring.CommandListener):
    def __init__(self, directory: Path) -> None:
        self._path = directory / f"commands-{os.getpid()}.bson"
        self._stage = ""  # sys.argv is not set yet while sitecustomize is imported
        self._file: IO[bytes] | None = None
        self._lock = threading.Lock()

    def started(self, event: Any) -> None:
        if event.command_name in _SKIPPED:
            return
        if not self._stage:  # python -m <stage>: argv[0] is <stage>/__main__.py
            self._stage = Path(sys.argv[0]).resolve().parent.name
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


_directory = os.environ.get("MAILINTAKE_BENCH_RECORD")
if _directory:
    monitoring.register(_Recorder(Path(_directory)))
