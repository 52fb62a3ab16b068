"""The replica's RabbitMQ connections, shared by every account it holds.

A connection per account grew with the mailboxes (5,000 idle mailboxes would be 5,000 AMQP
connections, each with its own heartbeats and buffers). A replica publishes through a few
connections instead, each used by one account's thread at a time (a pika connection is not
thread-safe), and kept alive between publishes by one thread.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence

from shared.messaging import Broker
from shared.wire import Outgoing

KEEP_ALIVE_SECONDS = 10.0  # well inside RabbitMQ's heartbeat timeout (60 s)


class PublisherPool:
    """Publishes with confirms through the first free one of `brokers`, else the next in turn."""

    def __init__(self, brokers: Sequence[Broker]) -> None:
        self._slots = [(broker, threading.Lock()) for broker in brokers]
        self._turn = itertools.count()
        self._closed = threading.Event()
        self._keeper = threading.Thread(target=self._keep_alive, name="amqp-keepalive", daemon=True)
        self._keeper.start()

    def publish(self, messages: Sequence[Outgoing]) -> None:
        for broker, lock in self._slots:
            if lock.acquire(blocking=False):
                try:
                    broker.publish(messages)
                    return
                finally:
                    lock.release()
        broker, lock = self._slots[next(self._turn) % len(self._slots)]
        with lock:
            broker.publish(messages)

    def close(self) -> None:
        self._closed.set()
        for broker, lock in self._slots:
            with lock:
                broker.close()

    def _keep_alive(self) -> None:
        while not self._closed.wait(KEEP_ALIVE_SECONDS):
            for broker, lock in self._slots:
                if lock.acquire(blocking=False):  # one in use answers its heartbeats itself
                    try:
                        broker.keep_alive()
                    finally:
                        lock.release()
