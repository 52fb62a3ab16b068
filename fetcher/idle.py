"""Waiting for new mail in IMAP IDLE: re-issued well before 29 minutes, with a liveness check."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

CHANGES = (b"EXISTS", b"RECENT", b"EXPUNGE")


class IdleMailbox(Protocol):
    """An IMAP connection that can IDLE on its selected folder."""

    def idle_start(self) -> None: ...

    def idle_wait(self, timeout: float) -> list[Any]: ...

    def idle_stop(self) -> None: ...

    def noop(self) -> None: ...


def is_change(response: Any) -> bool:
    """An untagged response that means the folder's messages changed (`* 5 EXISTS`)."""
    return isinstance(response, tuple) and len(response) >= 2 and response[1] in CHANGES


def wait_for_mail(
    mailbox: IdleMailbox,
    stop: threading.Event,
    *,
    renew_after: float,
    check_every: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
) -> bool:
    """IDLE until the folder changes (True), or stop / renewal is due (False).

    Each wait is bounded by `check_every`, so a stop is honoured within it (a mailbox whose
    wait a stop cuts short may wait longer). A wait that returns early with nothing means the
    server closed the connection (or a stop): IDLE is ended and NOOP proves the connection
    alive (or raises), every time IDLE ends.
    """
    mailbox.idle_start()
    started, changed = clock(), False
    while not stop.is_set() and (left := renew_after - (clock() - started)) > 0:
        wait = min(check_every, left)
        before = clock()
        responses = mailbox.idle_wait(wait)
        if any(is_change(r) for r in responses):
            changed = True
            break
        if not responses and clock() - before < wait / 2:
            break
    mailbox.idle_stop()
    mailbox.noop()
    return changed
