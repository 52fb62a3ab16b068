"""What a fetcher replica's accounts share: the login rate, the IDLE watcher, the publishers."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Sequence
from typing import Any, cast

import pytest

from fetcher.logins import LoginGate
from fetcher.publishing import PublisherPool
from fetcher.watcher import SocketWatcher
from shared.messaging import Broker
from shared.wire import Outgoing


class Clock:
    def __init__(self) -> None:
        self.at = 100.0

    def __call__(self) -> float:
        return self.at


def test_logins_to_one_server_are_spaced_by_the_rate_and_other_servers_are_not_held_up() -> None:
    clock = Clock()
    gate = LoginGate(rate=4, clock=clock)
    assert [gate.delay("imap.a") for _ in range(4)] == [0.0, 0.25, 0.5, 0.75]
    assert gate.delay("imap.b") == 0.0
    clock.at += 2.0  # the slots were all used: no debt carried into a quiet second
    assert gate.delay("imap.a") == 0.0


def test_a_stop_ends_the_wait_for_a_login_slot() -> None:
    gate = LoginGate(rate=0.01)  # the second slot is 100 s away
    stop = threading.Event()
    assert gate.wait("imap.a", stop)
    threading.Timer(0.05, stop.set).start()
    started = time.monotonic()
    assert not gate.wait("imap.a", stop)
    assert time.monotonic() - started < 5


def test_a_login_rate_of_zero_is_refused_with_the_value() -> None:
    with pytest.raises(ValueError, match="not 0"):
        LoginGate(rate=0)


@pytest.fixture
def pair() -> Any:
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def test_the_watcher_wakes_a_waiter_when_its_socket_can_be_read(pair: Any) -> None:
    mine, server = pair
    watcher, wake = SocketWatcher(), threading.Event()
    threading.Timer(0.05, server.send, args=(b"* 1 EXISTS\r\n",)).start()
    started = time.monotonic()
    watcher.wait(mine, wake, timeout=30)
    assert time.monotonic() - started < 5
    assert mine.recv(100) == b"* 1 EXISTS\r\n"
    assert watcher.watching() == 0 and not wake.is_set()


def test_the_watcher_returns_at_the_timeout_or_when_woken_and_forgets_the_socket(
    pair: Any,
) -> None:
    mine, _server = pair
    watcher, wake = SocketWatcher(), threading.Event()
    started = time.monotonic()
    watcher.wait(mine, wake, timeout=0.2)
    assert 0.15 < time.monotonic() - started < 5
    threading.Timer(0.05, wake.set).start()
    started = time.monotonic()
    watcher.wait(mine, wake, timeout=30)
    assert time.monotonic() - started < 5
    assert watcher.watching() == 0


def test_one_watcher_waits_on_many_sockets_and_wakes_only_the_one_written_to() -> None:
    pairs = [socket.socketpair() for _ in range(50)]
    watcher = SocketWatcher()
    wakes = [threading.Event() for _ in pairs]
    woke: list[int] = []
    threads = [
        threading.Thread(
            target=lambda i=i: (watcher.wait(pairs[i][0], wakes[i], timeout=30), woke.append(i))
        )
        for i in range(len(pairs))
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while watcher.watching() < len(pairs) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert watcher.watching() == len(pairs)
    pairs[7][1].send(b"x")
    deadline = time.monotonic() + 1.0
    while not woke and time.monotonic() < deadline:
        time.sleep(0.01)
    assert woke == [7]  # the others sleep on until their event or their timeout
    for wake in wakes:
        wake.set()
    for t in threads:
        t.join(5)
    assert sorted(woke) == list(range(len(pairs)))
    for a, b in pairs:
        a.close()
        b.close()


class FakeBroker:
    """The Broker's publish and keep-alive, recorded; one publish at a time may block."""

    def __init__(self, name: str, hold: threading.Event | None = None) -> None:
        self.name, self.hold = name, hold
        self.published: list[Sequence[Outgoing]] = []
        self.closed = False
        self.entered = threading.Event()

    def publish(self, messages: Sequence[Outgoing]) -> None:
        self.entered.set()
        if self.hold is not None:
            self.hold.wait(5)
        self.published.append(messages)

    def keep_alive(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def test_a_publish_goes_through_a_free_connection_while_another_is_busy() -> None:
    release = threading.Event()
    busy, free = FakeBroker("busy", hold=release), FakeBroker("free")
    pool = PublisherPool(cast(list[Broker], [busy, free]))
    first = threading.Thread(target=pool.publish, args=(["m1"],))
    first.start()
    assert busy.entered.wait(5)
    pool.publish(cast(Sequence[Outgoing], ["m2"]))  # not held up by the first
    assert free.published == [["m2"]] and busy.published == []
    release.set()
    first.join(5)
    assert busy.published == [["m1"]]
    pool.close()
    assert busy.closed and free.closed
