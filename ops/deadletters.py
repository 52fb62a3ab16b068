"""What a dead-lettered message says about itself, and its replayable copy."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ops.output import UserError
from shared.wire import (
    H_ACCOUNT,
    H_ATTEMPT,
    H_ERROR,
    H_ERROR_CLASS,
    H_FAILED_AT,
    H_QUEUE,
    H_REPLAYED_AT,
    H_TENANT,
    Incoming,
    Outgoing,
)

H_REPLAY_COUNT = "mailintake-replay-count"
H_REPLAYED_BY = "mailintake-replayed-by"
FAILURE_HEADERS = (H_ATTEMPT, H_ERROR, H_ERROR_CLASS, H_FAILED_AT, H_QUEUE)
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class DeadLetter:
    """One message found in a dead-letter queue, with the delivery tag that holds it."""

    message: Incoming
    delivery_tag: int

    @property
    def id(self) -> str:
        """The message id (the event id); a body hash for a message that has none."""
        if self.message.message_id:
            return self.message.message_id
        return "sha-" + hashlib.sha256(self.message.body).hexdigest()[:16]

    @property
    def deaths(self) -> list[dict[str, Any]]:
        """RabbitMQ's `x-death` entries, most recent first."""
        value = self.message.headers.get("x-death")
        return [d for d in value if isinstance(d, dict)] if isinstance(value, list) else []

    @property
    def reason(self) -> str:
        error = _text(self.message.headers.get(H_ERROR))
        if error:
            return error
        if self.deaths:
            d = self.deaths[0]
            return f"{_text(d.get('reason'))} in {_text(d.get('queue'))} ({d.get('count', 1)}x)"
        return "unknown (no mailintake-error or x-death header)"

    @property
    def failed_at(self) -> datetime | None:
        value = _text(self.message.headers.get(H_FAILED_AT))
        if value:
            try:
                return datetime.fromisoformat(value)
            except ValueError:
                pass
        when = self.deaths[0].get("time") if self.deaths else None
        return when if isinstance(when, datetime) else None

    def summary(self) -> dict[str, Any]:
        """The row `dlq list` shows (and prints as JSON)."""
        h = self.message.headers
        return {
            "id": self.id,
            "failed_at": self.failed_at,
            "type": self.message.type,
            "reason": self.reason,
            "error_class": _text(h.get(H_ERROR_CLASS)) or None,
            "queue": _text(h.get(H_QUEUE)) or None,
            "tenant": _text(h.get(H_TENANT)) or None,
            "account": _text(h.get(H_ACCOUNT)) or None,
            "email": self.message.correlation_id,
            "attempts": h.get(H_ATTEMPT, 0),
            "replays": h.get(H_REPLAY_COUNT, 0),
            "x_death": [
                {k: _text(d.get(k)) or d.get(k) for k in ("queue", "reason", "count", "time")}
                for d in self.deaths
            ],
        }

    def matches(self, reason: str | None, older_than: timedelta | None, now: datetime) -> bool:
        """True when it passes the --reason and --older-than filters."""
        if reason:
            said = " ".join(str(v) for v in (self.reason, self.summary()["error_class"]) if v)
            said += " " + " ".join(_text(d.get("reason")) for d in self.deaths)
            if reason.lower() not in said.lower():
                return False
        if older_than is not None:
            when = self.failed_at
            return when is not None and when <= now - older_than
        return True

    def replay_copy(self, work_queue: str, now: datetime, by: str | None = None) -> Outgoing:
        """The message as it goes back to `work_queue`: failure headers dropped, replay marked
        with when (and by whom, when told)."""
        m = self.message
        kept = (k for k in m.headers if not k.startswith("x-") and k not in FAILURE_HEADERS)
        headers = {k: m.headers[k] for k in kept}
        previous = m.headers.get(H_REPLAY_COUNT, 0)
        headers[H_REPLAYED_AT] = now.astimezone(UTC).isoformat()
        if by is not None:
            headers[H_REPLAYED_BY] = by
        headers[H_REPLAY_COUNT] = (previous if isinstance(previous, int) else 0) + 1
        return m.forward(work_queue, headers)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return "" if value is None else str(value)


def parse_age(text: str | None) -> timedelta | None:
    """`90s`, `15m`, `2h`, `1d` as a timedelta (None for None)."""
    if text is None:
        return None
    match = _DURATION.match(text.strip().lower())
    if match is None:
        raise UserError(f"--older-than {text!r}: use a number and s, m, h or d (e.g. 15m, 2h)")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
