"""py-spy on a running stage: raw stacks while it works, then the functions that took the time."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path


class Profile:
    """`py-spy record --format raw` attached to one pid until `stop()` (SIGINT makes it write)."""

    def __init__(self, pid: int, out: Path, rate: int = 50) -> None:
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.out = out
        self._proc = subprocess.Popen(
            [spy, "record", "-p", str(pid), "-r", str(rate), "-f", "raw", "-o", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)
        self._proc.wait(timeout=60)


def summary(raw: Path, top: int = 15) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """(own time per function, time per top-level area) from py-spy's collapsed stacks.

    Areas: the first frame (from the inside) in pymongo, pika, ssl/socket, email, pydantic,
    or mailintake's own code, so that "where the time goes" reads in one table.
    """
    own: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        own[frames[-1]] += n
        areas[_area(frames)] += n
    rows = [{"function": f[:90], "own %": 100 * n / total} for f, n in own.most_common(top)]
    by_area = [{"area": a, "%": 100 * n / total} for a, n in areas.most_common()]
    return rows, by_area


AREAS = (
    ("periodic_executor", "idle/waiting"),  # pymongo's monitor threads, sleeping
    ("pymongo", "store (pymongo/bson)"),
    ("bson", "store (pymongo/bson)"),
    ("gridfs", "store (gridfs)"),
    ("pika", "broker (pika)"),
    ("imaplib", "imap"),
    ("imapclient", "imap"),
    ("ssl.py", "tls/socket"),
    ("socket.py", "tls/socket"),
    ("/email/", "mime parsing (email)"),
    ("pydantic", "events (pydantic)"),
    ("structlog", "logging"),
    ("threading.py", "idle/waiting"),
    ("selectors.py", "idle/waiting"),
)


def _area(frames: list[str]) -> str:
    for frame in reversed(frames):
        for needle, name in AREAS:
            if needle in frame:
                return name
    return "mailintake code / other"
