"""How events become AMQP messages and back, without touching pika."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from shared.contracts import EVENT_HEADER, EVENT_TYPES, Event, MailFetched
from shared.errors import InvalidEventError

JSON = "application/json"
RFC822 = "message/rfc822"

# The project's own headers (never `x-`, which belong to RabbitMQ).
H_ERROR = "mailintake-error"
H_ERROR_CLASS = "mailintake-error-class"
H_ATTEMPT = "mailintake-attempt"
H_QUEUE = "mailintake-queue"
H_ROUTING_KEY = "mailintake-routing-key"
H_FAILED_AT = "mailintake-failed-at"
H_REPLAYED_AT = "mailintake-replayed-at"
H_TENANT = "mailintake-tenant"
H_ACCOUNT = "mailintake-account"
H_SCHEMA = "mailintake-schema-version"

# RabbitMQ's: how often a quorum queue's message came back to it (a consumer gone).
H_DELIVERY_COUNT = "x-delivery-count"


@dataclass(frozen=True)
class Outgoing:
    """One message to publish: to the events exchange by default, or straight to a queue."""

    routing_key: str
    body: bytes
    content_type: str = JSON
    message_id: str | None = None
    correlation_id: str | None = None
    type: str | None = None
    headers: dict[str, Any] = field(default_factory=dict)
    exchange: str | None = None  # None: the events exchange; "": the default exchange
    expiration_ms: int | None = None


@dataclass(frozen=True)
class Incoming:
    """One delivered message, as the consumer loop hands it to a stage."""

    queue: str
    routing_key: str
    exchange: str
    body: bytes
    content_type: str | None
    message_id: str | None
    correlation_id: str | None
    type: str | None
    headers: dict[str, Any]
    redelivered: bool = False

    def forward(
        self,
        queue: str,
        headers: dict[str, Any],
        *,
        exchange: str = "",
        expiration_ms: int | None = None,
    ) -> Outgoing:
        """This message, sent to `queue` with `headers`: by the queue's name, through
        `exchange` (the default exchange, or one that binds `queue` by its name)."""
        return Outgoing(
            routing_key=queue,
            exchange=exchange,
            body=self.body,
            content_type=self.content_type or "application/octet-stream",
            message_id=self.message_id,
            correlation_id=self.correlation_id,
            type=self.type,
            headers=headers,
            expiration_ms=expiration_ms,
        )

    @property
    def attempt(self) -> int:
        """How many retries this message already had (0 the first time)."""
        value = self.headers.get(H_ATTEMPT, 0)
        return value if isinstance(value, int) else 0

    @property
    def delivery_count(self) -> int:
        """How many earlier deliveries of this message were returned to its queue (a consumer
        gone): the quorum queue's count, 0 the first time."""
        value = self.headers.get(H_DELIVERY_COUNT, 0)
        return value if isinstance(value, int) else 0


def encode_event(event: Event, payload: bytes | None = None) -> Outgoing:
    """The AMQP message of `event`; a MailFetched carries the raw mail as its body."""
    headers: dict[str, Any] = {
        H_TENANT: event.tenant_id,
        H_ACCOUNT: event.account_id,
        H_SCHEMA: event.schema_version,
    }
    doc = event.model_dump_json()
    if isinstance(event, MailFetched):
        headers[EVENT_HEADER] = doc
        body, content_type = payload or b"", RFC822
    else:
        body, content_type = doc.encode(), JSON
    return Outgoing(
        routing_key=event.routing(),
        body=body,
        content_type=content_type,
        message_id=event.event_id,
        correlation_id=event.email_id,
        type=event.event_type,
        headers=headers,
    )


def decode_event(message: Incoming) -> tuple[Event, bytes | None]:
    """The event in `message` (and the raw mail, for MailFetched); InvalidEventError if none."""
    cls = EVENT_TYPES.get(message.type or "")
    if cls is None:
        raise InvalidEventError(f"unknown event type {message.type!r}")
    try:
        if cls is MailFetched:
            header = message.headers.get(EVENT_HEADER)
            if isinstance(header, bytes):
                header = header.decode()
            if not isinstance(header, str):
                raise InvalidEventError(f"{EVENT_HEADER} header missing on {message.type}")
            return cls.model_validate_json(header), message.body
        return cls.model_validate_json(message.body), None
    except (ValidationError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidEventError(f"{message.type} does not match its contract: {exc}") from exc
