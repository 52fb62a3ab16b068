"""One thread waits on the sockets of every mailbox in IDLE; the mailboxes' own threads sleep.

A mailbox in IDLE has nothing to do until its server writes. Each account's thread used to
poll its socket every second, to notice a stop in time: at 5,000 mailboxes that is 5,000
wake-ups a second of doing nothing. Here the thread of a mailbox in IDLE blocks on its own
event, which is set when the watcher's selector (epoll on Linux) sees its socket readable, when
the account is stopped, or not at all until its wait ends: an idle mailbox costs no CPU.
"""

from __future__ import annotations

import selectors
import threading
import time
from typing import Protocol

from shared.logging import get_logger

log = get_logger("mailintake.fetcher")


class Selectable(Protocol):
    def fileno(self) -> int: ...


class SocketWatcher:
    """Sets a waiter's event once its socket has something to read (one thread per replica)."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="idle-watcher", daemon=True)
        self._thread.start()

    def wait(self, sock: Selectable, wake: threading.Event, timeout: float) -> None:
        """Block until `sock` is readable, `wake` is set by someone else, or `timeout` passes.

        `wake` is cleared before this returns: whoever sets it to stop the caller also sets a
        flag the caller checks (the account's stop event)."""
        with self._lock:
            self._selector.register(sock, selectors.EVENT_READ, wake)
        try:
            wake.wait(timeout)
        finally:
            with self._lock:
                if sock.fileno() in self._selector.get_map():
                    self._selector.unregister(sock)
            wake.clear()

    def watching(self) -> int:
        """How many sockets are waited on now."""
        with self._lock:
            return len(self._selector.get_map())

    def _run(self) -> None:
        while True:
            try:
                # A socket registered while this waits is waited on too (epoll); the timeout
                # only bounds how long a selector without any socket sleeps.
                ready = self._selector.select(timeout=5.0)
            except (OSError, ValueError) as exc:  # a socket closed under us: the next round
                log.warning("idle_watcher_select_failed", error=str(exc))
                time.sleep(0.1)
                continue
            for key, _events in ready:
                with self._lock:
                    if self._selector.get_map().get(key.fd) is not key:
                        continue  # its wait ended meanwhile
                    self._selector.unregister(key.fileobj)
                key.data.set()
