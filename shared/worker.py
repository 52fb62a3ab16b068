"""The consumer side of a stage: decode, call the handler, publish, settle failures, reconnect."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any, Protocol

from shared.contracts import Event, MailFetched
from shared.errors import (
    BrokerUnavailableError,
    DeliveryLimitError,
    PermanentError,
    PublishNotConfirmedError,
    StoreUnavailableError,
)
from shared.logging import debug_enabled, get_logger, message_context
from shared.messaging import Broker, failure_headers
from shared.topology import Topology
from shared.wire import H_ATTEMPT, H_ERROR, Incoming, Outgoing, decode_event, encode_event

log = get_logger("mailintake.worker")

EventHandler = Callable[[Event, bytes | None], Sequence[Event]]
Batch = Sequence[tuple[Event, bytes | None]]
Decoded = tuple[Event, bytes | None] | Exception
DEFAULT_BATCH_MAX_BYTES = 64 * 1024 * 1024


class UnitOfWork(Protocol):
    """A consumed batch as one unit of work: begun with the batch's events, committed once.

    Between `begin` and `commit` the stage's ports keep what the batch writes (and show it to
    the batch's own reads, where a rule needs that); `commit` stores all of it before any of
    the batch's events is published.
    """

    def begin(self, batch: Batch) -> None:
        """Start a batch: drop what an earlier one kept; read what this one will look up.

        Raising does not fail the batch: each handler call reads what it needs itself.
        """
        ...

    def commit(self) -> None:
        """Store what the batch's handler calls wrote. Raising retries the whole batch."""
        ...


@dataclass(frozen=True)
class StageHandler:
    """A stage's event handler and the unit of work its ports keep a batch's writes in
    (None: they write at once)."""

    handle: EventHandler
    unit_of_work: UnitOfWork | None = None


class DeadLetterRecorder(Protocol):
    """What a stage records of a message it gives up on, as it goes to the dead-letter queue."""

    def record(self, event: Event, reason: str) -> Sequence[Event]:
        """Record that `event` failed for `reason`; the events to publish with its dead letter.

        Raising leaves the message for a later retry instead, so that it is recorded.
        """
        ...


@dataclass(frozen=True)
class RetryPolicy:
    """Growing delays for transient failures, then the dead-letter queue."""

    max_retries: int = 8
    base_seconds: float = 1.0
    max_seconds: float = 300.0

    def delay_ms(self, attempt: int) -> int:
        return int(min(self.base_seconds * 2**attempt, self.max_seconds) * 1000)


def settle_failure(
    message: Incoming, exc: BaseException, policy: RetryPolicy, topology: Topology
) -> list[Outgoing]:
    """Where a failed message goes: its `.retry` queue with a delay, or its `.dlq`, both
    through `topology`'s failures exchange.

    Permanent errors go to the DLQ at once; anything else is retried with a growing delay
    (an unknown error may be a passing one) until `policy.max_retries` is used up.
    """
    headers = failure_headers(message, exc)
    if not isinstance(exc, PermanentError):
        if message.attempt < policy.max_retries:
            return [retry_later(message, headers, policy, topology)]
        headers[H_ERROR] = f"retries exhausted ({message.attempt}): {headers[H_ERROR]}"
    dlq = Topology.dead_letter_queue(message.queue)
    return [message.forward(dlq, headers, exchange=topology.failures_exchange)]


def retry_later(
    message: Incoming, headers: dict[str, Any], policy: RetryPolicy, topology: Topology
) -> Outgoing:
    """`message` to its `.retry` queue with `headers`, delayed by its attempt's delay."""
    delay = policy.delay_ms(message.attempt)
    retried = {**headers, H_ATTEMPT: message.attempt + 1}
    return message.forward(
        Topology.retry_queue(message.queue),
        retried,
        exchange=topology.failures_exchange,
        expiration_ms=delay,
    )


class StageWorker:
    """Runs one stage's handler on its work queue until stopped."""

    def __init__(
        self,
        stage: str,
        broker: Broker,
        handler: EventHandler,
        *,
        policy: RetryPolicy | None = None,
        on_outcome: Callable[[str, Event | None, float], None] | None = None,
        unit_of_work: UnitOfWork | None = None,
        dead_letters: DeadLetterRecorder | None = None,
        batch_max_bytes: int = DEFAULT_BATCH_MAX_BYTES,
    ) -> None:
        self.stage = stage
        self._batch_max_bytes = batch_max_bytes
        self.broker = broker
        self.queue = broker.topology.work_queue(stage)
        self._handler = handler
        self._policy = policy or RetryPolicy()
        self._on_outcome = on_outcome
        self._dead_letters = dead_letters
        self._unit_of_work = unit_of_work
        self.stop = threading.Event()
        self.consuming = threading.Event()
        self._started = time.monotonic()

    def handle(self, event: Event, payload: bytes | None) -> list[Outgoing]:
        """Run the handler with the ids bound to the log context; its outputs, encoded."""
        with message_context(
            tenant_id=event.tenant_id,
            account_id=event.account_id,
            email_id=event.email_id,
            event_id=event.event_id,
            queue=self.queue,
        ):
            outputs = self._handler(event, payload)
            if debug_enabled():  # the logger proxy costs a bind per call, even when filtered
                log.debug("event_handled", event_type=event.event_type, outputs=len(outputs))
        return [encode_event(e) for e in outputs]

    def handle_batch(self, messages: Sequence[Incoming]) -> list[Outgoing]:
        """Every message's outputs, or where it goes instead when its handling failed.

        Each message is decoded once, and the delivered batch is cut into units of work of
        at most `batch_max_bytes` of mail (`_cut_by_bytes`), each handled by `handle_unit`.
        """
        decoded = [(message, _decoded(message)) for message in messages]
        return [
            output
            for unit in _cut_by_bytes(decoded, self._batch_max_bytes)
            for output in self.handle_unit(unit)
        ]

    def handle_unit(self, unit: Sequence[tuple[Incoming, Decoded]]) -> list[Outgoing]:
        """Handle `unit` as one unit of work: begun with its decoded events, each message
        handled, then committed once; only then are its messages handled ("ok").

        A failed commit stores nothing the unit's events announce. If the store is away, the
        unit's messages are retried. Any other failure may be one message's doing: the unit
        is handled again in halves, down to the message alone, which is settled (retried,
        or dead-lettered with the reason) while the others pass.
        """
        self.begin([d for _, d in unit if not isinstance(d, Exception)])
        settled: list[Outgoing] = []
        handled: list[tuple[Incoming, Decoded, list[Outgoing], Event, float]] = []
        for message, event_payload in unit:
            self._started = time.monotonic()
            event = None if isinstance(event_payload, Exception) else event_payload[0]
            try:
                if isinstance(event_payload, Exception):
                    raise event_payload
                self._check_delivery_limit(message)
                outputs = self.handle(*event_payload)
                took = time.monotonic() - self._started
                handled.append((message, event_payload, outputs, event_payload[0], took))
            except Exception as exc:  # settled: retried or dead-lettered
                settled.extend(self.settle(message, exc, event))
        if self._unit_of_work is not None and handled:
            try:
                self._unit_of_work.commit()
            except Exception as exc:
                return settled + self._commit_failed([(m, d) for m, d, *_ in handled], exc)
        for _, _, _, done, seconds in handled:
            self._report("ok", done, seconds)  # only now: a failed commit makes it a retry
        return settled + [output for _, _, outputs, _, _ in handled for output in outputs]

    def _commit_failed(
        self, handled: list[tuple[Incoming, Decoded]], exc: Exception
    ) -> list[Outgoing]:
        """The outputs of a unit whose commit failed: its halves handled again, or, for a
        single message or a store that is away, each message settled."""
        if len(handled) == 1 or isinstance(exc, StoreUnavailableError):
            return [out for m, d in handled for out in self.settle(m, exc, _event_of(d))]
        log.warning(
            "batch_commit_failed_halved",
            messages=len(handled),
            error_class=type(exc).__name__,
            error=str(exc),
        )
        half = len(handled) // 2
        return self.handle_unit(handled[:half]) + self.handle_unit(handled[half:])

    def begin(self, batch: Batch) -> None:
        """Begin the unit of work with the batch's events (bulk reads); never fails the batch.

        Whatever it did not manage to read, each handler call reads for itself.
        """
        if self._unit_of_work is None:
            return
        try:
            self._unit_of_work.begin(batch)
        except Exception as exc:
            log.warning("batch_begin_failed", error_class=type(exc).__name__, error=str(exc))

    def _report(self, outcome: str, event: Event | None, seconds: float | None = None) -> None:
        """Tell the `on_outcome` hook (metrics): ok, retried or dead_lettered, and the time."""
        if self._on_outcome is not None:
            took = time.monotonic() - self._started if seconds is None else seconds
            self._on_outcome(outcome, event, took)

    def _check_delivery_limit(self, message: Incoming) -> None:
        """Dead-letter (and so record) a message on its last allowed delivery, unhandled.

        Each earlier delivery ended with its consumer gone (RabbitMQ counts them in the quorum
        queue's delivery count); one more and RabbitMQ would dead-letter it itself, unrecorded.
        """
        limit = self.broker.topology.delivery_limit
        if message.delivery_count >= limit:
            raise DeliveryLimitError(
                f"delivered {message.delivery_count + 1} times: every consumer before died "
                f"holding it (delivery limit {limit})"
            )

    def settle(
        self, message: Incoming, exc: BaseException, event: Event | None = None
    ) -> list[Outgoing]:
        """Where a failed message goes (`settle_failure`); a dead letter recorded first."""
        outputs = settle_failure(message, exc, self._policy, self.broker.topology)
        dlq = Topology.dead_letter_queue(message.queue)
        if event is not None and outputs[0].routing_key == dlq:
            outputs = self._record_dead_letter(message, event, outputs[0])
        log.warning(
            "event_failed",
            queue=self.queue,
            message_id=message.message_id,
            error_class=type(exc).__name__,
            error=str(exc),
            to=outputs[0].routing_key,
            exc_info=not isinstance(exc, PermanentError | StoreUnavailableError),
        )
        dead = outputs[0].routing_key == Topology.dead_letter_queue(message.queue)
        self._report("dead_lettered" if dead else "retried", None)
        return outputs

    def _record_dead_letter(
        self, message: Incoming, event: Event, dead_letter: Outgoing
    ) -> list[Outgoing]:
        """The dead letter and what the stage's recorder says of it; a retry if it cannot."""
        if self._dead_letters is None:
            return [dead_letter]
        try:
            with message_context(
                tenant_id=event.tenant_id, email_id=event.email_id, event_id=event.event_id
            ):
                told = self._dead_letters.record(event, str(dead_letter.headers[H_ERROR]))
        except Exception as exc:  # not recorded: it comes back later, to be recorded then
            log.warning("dead_letter_not_recorded", error_class=type(exc).__name__, error=str(exc))
            return [retry_later(message, dead_letter.headers, self._policy, self.broker.topology)]
        return [dead_letter, *(encode_event(e) for e in told)]

    def run(self) -> None:
        """Consume until `stop` is set, reconnecting (with backoff) whenever RabbitMQ drops."""
        delay = 0.5
        while not self.stop.is_set():
            try:
                self.broker.connect(self.stop)
                self.broker.declare()  # all of it: outputs must find their queues
                self.consuming.set()
                log.info("consuming", queue=self.queue)
                self.broker.consume(self.queue, self.handle_batch, self.stop)
                delay = 0.5
            except (BrokerUnavailableError, PublishNotConfirmedError) as exc:
                # The message in hand was not acked: RabbitMQ delivers it again.
                self.consuming.clear()
                self.broker.close()
                log.warning("broker_unavailable", error=str(exc), retry_in=delay)
                self.stop.wait(delay)
                delay = min(delay * 2, 10.0)
        self.consuming.clear()
        self.broker.close()
        log.info("stopped", queue=self.queue)


def install_stop_signals(stop: threading.Event) -> None:
    """SIGTERM and SIGINT set `stop`: the message in hand is finished, then the process exits."""

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("stop_requested", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)


def _event_of(decoded: Decoded) -> Event | None:
    return None if isinstance(decoded, Exception) else decoded[0]


def mail_bytes(message: Incoming, decoded: Decoded) -> int:
    """What a unit of work holds of a message: its body, or the mail's size where that is
    larger (a mail passed by reference is read from the blob store when it is bound)."""
    size = len(message.body)
    if not isinstance(decoded, Exception) and isinstance(decoded[0], MailFetched):
        size = max(size, decoded[0].size)
    return size


def _cut_by_bytes(
    decoded: list[tuple[Incoming, Decoded]], max_bytes: int
) -> list[list[tuple[Incoming, Decoded]]]:
    """The messages in order, in units of at most `max_bytes` of mail: a unit is cut before
    the message that would take it past the budget (a larger message is a unit alone)."""
    units: list[list[tuple[Incoming, Decoded]]] = []
    held = 0
    for message, event_payload in decoded:
        size = mail_bytes(message, event_payload)
        if not units or held + size > max_bytes:
            units.append([])
            held = 0
        units[-1].append((message, event_payload))
        held += size
    return units


def _decoded(message: Incoming) -> Decoded:
    """The message's event and payload, or why it cannot be decoded (settled when handled)."""
    try:
        return decode_event(message)
    except Exception as exc:
        return exc
