"""Logins at a bounded rate per mail server: a replica taking 5,000 mailboxes does not burst.

Servers such as Gmail refuse a burst of logins from one address; a replica started, or taking
over a dead one's share, would otherwise open every connection within a second.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class LoginGate:
    """Hands out login slots `1 / rate` seconds apart for each server host, in order of asking."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0:
            raise ValueError(f"a login rate must be above 0 per second, not {rate}")
        self._interval = 1.0 / rate
        self._clock = clock
        self._next: dict[str, float] = {}
        self._lock = threading.Lock()

    def delay(self, host: str) -> float:
        """Take the host's next slot: how many seconds from now it is."""
        with self._lock:
            now = self._clock()
            slot = max(now, self._next.get(host, now))
            self._next[host] = slot + self._interval
            if len(self._next) > 10_000:  # hosts whose slots are all past are forgotten
                self._next = {h: t for h, t in self._next.items() if t > now}
        return slot - now

    def wait(self, host: str, stop: threading.Event) -> bool:
        """Wait for the host's next slot; False when `stop` was set meanwhile."""
        delay = self.delay(host)
        return not (delay > 0 and stop.wait(delay))
