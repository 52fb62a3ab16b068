"""RabbitMQ through pika — the only module that imports pika.

Publisher confirms with `mandatory` everywhere; manual acks with a bounded prefetch; a failed
message goes to its queue's `.retry` (delayed by a per-message TTL) or `.dlq` with the reason.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pika
import pika.exceptions as pex
from pika import frame as pika_frame
from pika.adapters.blocking_connection import BlockingChannel
from pika.adapters.select_connection import SelectConnection
from pika.adapters.utils.io_services_utils import _AsyncTransportBase
from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    stop_when_event_set,
    wait_exponential,
)

from shared.errors import BrokerUnavailableError, PublishNotConfirmedError
from shared.logging import get_logger, redact_text
from shared.topology import STAGE_BINDINGS, Topology
from shared.wire import (
    H_ERROR,
    H_ERROR_CLASS,
    H_FAILED_AT,
    H_QUEUE,
    H_ROUTING_KEY,
    Incoming,
    Outgoing,
)

log = get_logger("mailintake.messaging")

# This module uses pika's private parts: the connection class it builds (`_impl_class`), its
# frame decoding and output (`_FrameReader` below), the underlying channel and its I/O wait
# (`_impl`, `_flush_output`, for the window of publisher confirms) and its receive size.
# They are read and tested against this release only: pyproject.toml pins it, and
# tests/unit/test_messaging_pika.py fails on any other (review these parts, then move both).
PIKA_VERSION = "1.4.4"

# pika reads its socket 4 KB at a time and hands each read to the frame decoder: a 27 KB mail
# took seven reads, seven passes of the event loop and a copy of the growing buffer each time.
# A read of up to 256 KB takes what has arrived at once (consuming: 170 -> 90 us a message).
setattr(_AsyncTransportBase, "_MAX_RECV_BYTES", 256 * 1024)  # noqa: B010 (not in pika's stubs)

_CONNECTION_ERRORS = (pex.AMQPConnectionError, pex.AMQPChannelError, pex.StreamLostError)
BatchHandler = Callable[[Sequence[Incoming]], Sequence[Outgoing]]


class Broker:
    """A confirmed-publish, manual-ack connection to RabbitMQ for one process."""

    def __init__(
        self,
        url: str,
        topology: Topology,
        *,
        prefetch: int = 100,
        connect_timeout: float = 30.0,
        heartbeat: int = 60,
    ) -> None:
        self.topology = topology
        self._params = pika.URLParameters(url)
        self._params.heartbeat = heartbeat
        self._params.blocked_connection_timeout = 60
        self._params.connection_attempts = 1
        self._address = redact_text(url)
        self._prefetch = prefetch
        self._connect_timeout = connect_timeout
        self._connection: pika.BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self._confirms: _Confirms | None = None
        # Test hook for the fault suite: every message is published twice, as a flaky
        # network or a publisher retrying after a lost confirm would do.
        self._duplicate = os.environ.get(DUPLICATE_PUBLISH_ENV) == "1"

    # -- connection ---------------------------------------------------------------------
    def connect(self, stop: threading.Event | None = None) -> None:
        """Open the connection and a confirming channel, retrying until connect_timeout.

        With `stop`, setting it ends the retrying at once (a SIGTERM during an outage).
        """
        stop = stop or threading.Event()
        for attempt in Retrying(
            retry=retry_if_exception_type(BrokerUnavailableError),
            wait=wait_exponential(multiplier=0.2, max=5),
            stop=stop_after_delay(self._connect_timeout) | stop_when_event_set(stop),
            sleep=_interruptible_sleep(stop),
            reraise=True,
            before_sleep=lambda s: log.warning(
                "broker_connect_retry", address=self._address, attempt=s.attempt_number
            ),
        ):
            with attempt:
                self._open()

    def _open(self) -> None:
        self.close()
        try:
            self._connection = pika.BlockingConnection(self._params, _impl_class=_READER)
            self._channel = self._connection.channel()
            self._confirms = _Confirms(self._connection, self._channel)
            self._channel.basic_qos(prefetch_count=self._prefetch)
        except _CONNECTION_ERRORS as exc:
            raise BrokerUnavailableError(
                f"RabbitMQ at {self._address} is not reachable: {type(exc).__name__} {exc}"
            ) from exc

    def close(self) -> None:
        """Close the connection if open; never raises."""
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except Exception as exc:  # closing a broken connection may fail in many ways
                log.debug("broker_close_failed", error=str(exc))

    def keep_alive(self) -> None:
        """Let an idle connection answer RabbitMQ's heartbeats (a BlockingConnection does only
        while it is used); one found dead is closed, to be opened again at its next use."""
        connection = self._connection
        if connection is None or not connection.is_open:
            return
        try:
            connection.process_data_events(time_limit=0)
        except _CONNECTION_ERRORS as exc:
            log.info("broker_connection_lost_while_idle", address=self._address, error=str(exc))
            self.close()

    @property
    def channel(self) -> BlockingChannel:
        if self._channel is None or not self._channel.is_open:
            self.connect()
        assert self._channel is not None
        return self._channel

    @contextmanager
    def _translated(self, what: str) -> Iterator[None]:
        try:
            yield
        except (pex.UnroutableError, pex.NackError) as exc:
            raise PublishNotConfirmedError(f"{what}: RabbitMQ did not confirm: {exc}") from exc
        except _CONNECTION_ERRORS as exc:
            self.close()
            raise BrokerUnavailableError(
                f"{what}: lost RabbitMQ at {self._address}: {type(exc).__name__} {exc}"
            ) from exc

    # -- topology -----------------------------------------------------------------------
    def declare(self, stages: Sequence[str] = tuple(STAGE_BINDINGS)) -> None:
        """Declare the exchanges and, per stage, its work, retry and dead-letter queues, the
        retry and dead-letter queues bound to the failures exchange by their own names.

        A user without `configure` (a stage's own user) is refused: then the topology must be
        there already, declared by the operator, and is only checked (passive declares).
        """
        try:
            self._declare(stages)
        except BrokerUnavailableError as exc:
            cause = exc.__cause__
            if not (isinstance(cause, pex.ChannelClosedByBroker) and cause.reply_code == 403):
                raise
            log.info("topology_declare_refused", address=self._address, checking="passive")
            self._check_declared(stages)

    def _check_declared(self, stages: Sequence[str]) -> None:
        t = self.topology
        exchanges = (t.exchange, t.failures_exchange)
        names = [*exchanges] + [
            q + s for q in map(t.work_queue, stages) for s in ("", ".retry", ".dlq")
        ]
        for name in names:
            try:
                with self._translated(f"check {name}"):
                    if name in exchanges:
                        self.channel.exchange_declare(name, passive=True)
                    else:
                        self.channel.queue_declare(name, passive=True)
            except BrokerUnavailableError as exc:
                cause = exc.__cause__
                if isinstance(cause, pex.ChannelClosedByBroker) and cause.reply_code == 404:
                    raise BrokerUnavailableError(
                        f"{name} is not declared, and this user may not declare it: "
                        "the operator declares the topology (python -m shared.brokeraccess apply)"
                    ) from exc
                raise

    def _declare(self, stages: Sequence[str]) -> None:
        t = self.topology
        with self._translated("declare"):
            ch = self.channel
            ch.exchange_declare(t.exchange, exchange_type="topic", durable=True)
            ch.exchange_declare(t.failures_exchange, exchange_type="topic", durable=True)
            for stage in stages:
                queue = t.work_queue(stage)
                ch.queue_declare(
                    t.dead_letter_queue(queue), durable=True, arguments={"x-queue-type": "quorum"}
                )
                ch.queue_declare(
                    t.retry_queue(queue),
                    durable=True,
                    arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": queue},
                )
                ch.queue_declare(
                    queue,
                    durable=True,
                    arguments={
                        "x-queue-type": "quorum",
                        "x-delivery-limit": t.delivery_limit,
                        "x-dead-letter-exchange": "",
                        "x-dead-letter-routing-key": t.dead_letter_queue(queue),
                    },
                )
                for key in STAGE_BINDINGS[stage]:
                    ch.queue_bind(queue, t.exchange, routing_key=key)
                # A failure is sent by its queue's name; what RabbitMQ dead-letters itself (a
                # retry's delay over, a delivery limit reached) still goes through the default
                # exchange, which is not subject to any user's permissions.
                for failures in t.failure_queues(stage):
                    ch.queue_bind(failures, t.failures_exchange, routing_key=failures)

    def queue_counts(self, queue: str) -> tuple[int, int]:
        """(ready messages, consumers) of an existing queue."""
        with self._translated(f"inspect {queue}"):
            ok = self.channel.queue_declare(queue, passive=True).method
            return int(ok.message_count), int(ok.consumer_count)

    def queue_exists(self, queue: str) -> bool:
        """Whether `queue` is declared (a passive declare; RabbitMQ closes the channel if not)."""
        try:
            with self._translated(f"inspect {queue}"):
                self.channel.queue_declare(queue, passive=True)
        except BrokerUnavailableError as exc:
            cause = exc.__cause__
            if isinstance(cause, pex.ChannelClosedByBroker) and cause.reply_code == 404:
                return False
            raise
        return True

    # -- publishing ---------------------------------------------------------------------
    def publish(self, messages: Sequence[Outgoing]) -> None:
        """Publish and return once RabbitMQ confirmed every message; raise if one is refused.

        Up to PUBLISH_WINDOW messages are in flight before waiting for their confirms: about
        ten times the rate of waiting for each confirm in turn.
        """
        if self._duplicate:
            messages = [m for m in messages for _ in (1, 2)]
        with self._translated("publish"):
            ch: Any = self.channel  # its private parts: see below
            assert self._confirms is not None
            # The underlying channel only buffers a publish; BlockingChannel's would also
            # flush I/O after each one. The buffer is written every PUBLISH_FLUSH_BYTES, and
            # at the end of the window while waiting for its confirms. The publishes between
            # two writes are handed to the socket as one buffer (one send, not one each).
            impl = ch._impl
            connection: _FrameReader = impl.connection
            for start in range(0, len(messages), PUBLISH_WINDOW):
                buffered = 0
                connection.hold_output()
                try:
                    for m in messages[start : start + PUBLISH_WINDOW]:
                        exchange = self.topology.exchange if m.exchange is None else m.exchange
                        self._confirms.expect()  # before sending: a flush may bring the ack
                        impl.basic_publish(
                            exchange, m.routing_key, m.body, _properties(m), mandatory=True
                        )
                        buffered += len(m.body)
                        if buffered >= PUBLISH_FLUSH_BYTES:
                            connection.release_output()
                            ch._flush_output()
                            connection.hold_output()
                            buffered = 0
                finally:  # also on failure: nothing the connection writes may stay held
                    connection.release_output()
                self._confirms.wait(CONFIRM_TIMEOUT)

    # -- consuming ----------------------------------------------------------------------
    def consume(self, queue: str, handle_batch: BatchHandler, stop: threading.Event) -> None:
        """Deliver `queue` in batches to `handle_batch` until `stop` is set.

        A batch is the messages already delivered (up to the prefetch); what `handle_batch`
        returns is published and confirmed, then the whole batch is acked with one ack. A
        redelivered message is a batch of its own, so a message that kills its consumer
        cannot use up the delivery count of others. The batch in hand is finished before
        `stop`; a batch whose outputs are not confirmed is not acked (it comes back).
        """
        buffer: deque[tuple[Any, pika.BasicProperties, bytes]] = deque()
        with self._translated(f"consume {queue}"):
            ch = self.channel
            assert self._connection is not None
            tag = ch.basic_consume(queue, lambda _c, m, p, b: buffer.append((m, p, b)))
            while not stop.is_set():
                if not buffer:
                    self._connection.process_data_events(time_limit=0.5)
                    continue
                batch = _take_batch(buffer, self._prefetch)
                self.publish(handle_batch([_incoming(queue, *delivery) for delivery in batch]))
                ch.basic_ack(int(batch[-1][0].delivery_tag or 0), multiple=True)
            ch.basic_cancel(tag)

    def get(self, queue: str) -> tuple[Incoming, int] | None:
        """Take one message without acking it: (message, delivery tag), or None if empty."""
        with self._translated(f"get {queue}"):
            method, props, body = self.channel.basic_get(queue, auto_ack=False)
            if method is None:
                return None
            return _incoming(queue, method, props, body), int(method.delivery_tag or 0)

    def ack(self, delivery_tag: int) -> None:
        with self._translated("ack"):
            self.channel.basic_ack(delivery_tag)

    def requeue_all(self) -> None:
        """Give back every message taken with `get` and not acked (keeps their order)."""
        with self._translated("requeue"):
            self.channel.basic_nack(0, multiple=True, requeue=True)

    def purge(self, queue: str) -> int:
        with self._translated(f"purge {queue}"):
            return int(self.channel.queue_purge(queue).method.message_count or 0)


def _interruptible_sleep(stop: threading.Event) -> Callable[[float], None]:
    def sleep(seconds: float) -> None:
        stop.wait(seconds)

    return sleep


def _properties(m: Outgoing) -> pika.BasicProperties:
    return pika.BasicProperties(
        content_type=m.content_type,
        delivery_mode=pika.DeliveryMode.Persistent,
        message_id=m.message_id,
        correlation_id=m.correlation_id,
        type=m.type,
        headers=m.headers or None,
        expiration=str(m.expiration_ms) if m.expiration_ms is not None else None,
    )


def _incoming(
    queue: str, method: Any, props: pika.BasicProperties | None, body: bytes | None
) -> Incoming:
    props = props or pika.BasicProperties()
    return Incoming(
        queue=queue,
        routing_key=method.routing_key,
        exchange=method.exchange,
        body=body or b"",
        content_type=props.content_type,
        message_id=props.message_id,
        correlation_id=props.correlation_id,
        type=props.type,
        headers=dict(props.headers or {}),
        redelivered=bool(method.redelivered),
    )


def failure_headers(message: Incoming, exc: BaseException) -> dict[str, Any]:
    """The headers that say where a message failed and why (kept across retries)."""
    headers = {k: v for k, v in message.headers.items() if not k.startswith("x-")}
    headers.update(
        {
            H_ERROR: redact_text(str(exc))[:1000] or type(exc).__name__,
            H_ERROR_CLASS: type(exc).__name__,
            H_QUEUE: message.queue,
            H_ROUTING_KEY: headers.get(H_ROUTING_KEY, message.routing_key),
            H_FAILED_AT: datetime.now(UTC).isoformat(),
        }
    )
    return headers


PUBLISH_WINDOW = 1000
PUBLISH_FLUSH_BYTES = 4 * 1024 * 1024  # publishes buffered before they are written
DUPLICATE_PUBLISH_ENV = "MAILINTAKE_TEST_DUPLICATE_PUBLISH"  # test hook: "1" publishes twice
CONFIRM_TIMEOUT = 60.0


def _take_batch(buffer: deque[Any], limit: int) -> list[Any]:
    """The next messages to handle together: a redelivered one always alone."""
    first = buffer.popleft()
    batch = [first]
    if first[0].redelivered:
        return batch
    while buffer and len(batch) < limit and not buffer[0][0].redelivered:
        batch.append(buffer.popleft())
    return batch


class _Confirms:
    """Publisher confirms tracked by delivery tag, so many publishes share one wait.

    pika's BlockingChannel waits for each confirm in turn; its underlying channel (`_impl`)
    takes callbacks instead, which is what this uses — pika stays inside this module.
    """

    def __init__(self, connection: pika.BlockingConnection, channel: Any) -> None:
        self._connection = connection
        self._channel: Any = channel  # its _flush_output waits on I/O for a condition
        self._next = 0
        self._pending: set[int] = set()
        self._failures: list[str] = []
        selected: list[object] = []
        impl = channel._impl
        impl.add_on_return_callback(self._on_return)
        impl.confirm_delivery(ack_nack_callback=self._on_confirm, callback=selected.append)
        self._channel._flush_output(lambda: bool(selected))

    def expect(self) -> None:
        """Count one more publish (call before sending it)."""
        self._next += 1
        self._pending.add(self._next)

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        tags = {method.delivery_tag}
        if method.multiple:
            tags = {t for t in self._pending if t <= method.delivery_tag}
        self._pending -= tags
        if isinstance(method, pika.spec.Basic.Nack):
            self._failures.append(f"{len(tags)} message(s) nacked")

    def _on_return(self, _channel: Any, method: Any, _props: Any, _body: bytes) -> None:
        self._failures.append(
            f"returned unroutable: exchange={method.exchange!r} routing_key={method.routing_key!r}"
        )

    def wait(self, timeout: float) -> None:
        """Block until every publish so far is confirmed; raise if one was refused."""
        timed_out: list[bool] = []
        # A timer of the I/O loop itself: BlockingConnection's own timers fire only inside
        # process_data_events, not while _flush_output waits.
        loop: Any = self._connection._impl  # type: ignore[attr-defined]
        timer = loop._adapter_call_later(timeout, lambda: timed_out.append(True))
        try:
            self._channel._flush_output(lambda: not self._pending or bool(timed_out))
        finally:
            loop._adapter_remove_timeout(timer)
        failures, self._failures = self._failures, []
        if failures:
            raise PublishNotConfirmedError(f"RabbitMQ refused: {'; '.join(failures[:3])}")
        if self._pending:
            count, self._pending = len(self._pending), set()
            raise PublishNotConfirmedError(
                f"{count} publish(es) not confirmed by RabbitMQ within {timeout:.0f}s"
            )


class _FrameReader(SelectConnection):
    """pika's connection, reading the frames of a read in place and writing a batch of
    publishes as one buffer.

    pika decodes a frame from the start of its buffer, then copies the rest of the buffer
    to drop that frame: three copies of up to 256 KB per message. Here each frame is cut
    out of the read once, then decoded and processed as pika does; what is left of an
    incomplete frame waits for the next read. pika also queues each frame (a message's
    method, header and body) on its own, and sends each with its own system call: between
    hold_output and release_output, everything written goes out as one buffer.
    """

    _held: list[bytes] | None = None

    def hold_output(self) -> None:
        """Keep what is written from now on until release_output."""
        if self._held is None:
            self._held = []

    def release_output(self) -> None:
        """Hand what was kept to the socket, as one buffer."""
        held, self._held = self._held, None
        if held:
            super()._adapter_emit_data(b"".join(held))  # type: ignore[misc]

    def _adapter_emit_data(self, data: bytes) -> None:
        if self._held is not None:
            self._held.append(data)
        else:
            super()._adapter_emit_data(data)  # type: ignore[misc]

    def _on_data_available(self, data_in: bytes) -> None:
        conn: Any = self  # pika's private parts, which its type stubs do not list
        buffer = conn._frame_buffer + data_in if conn._frame_buffer else data_in
        pos, end = 0, len(buffer)
        while end - pos >= _FRAME_HEADER:
            if buffer[pos : pos + 4] == b"AMQP":  # a protocol header: pika's own reading
                conn._frame_buffer = b""
                super()._on_data_available(buffer[pos:])  # type: ignore[misc]
                return
            size = int.from_bytes(buffer[pos + 3 : pos + 7], "big")
            after = pos + _FRAME_HEADER + size + 1
            if after > end:
                break
            consumed, value = pika_frame.decode_frame(buffer[pos:after])
            if value is None:  # never for a whole frame (pika returns None for a part)
                break
            pos += consumed
            conn.bytes_received += consumed
            conn._process_frame(value)
        conn._frame_buffer = buffer[pos:] if pos else buffer


_FRAME_HEADER = 7  # type (1), channel (2), size (4); the frame end octet follows the payload
_READER: Any = _FrameReader  # BlockingConnection's stubs type _impl_class as an instance
