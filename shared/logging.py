"""structlog set-up: JSON or console output, ids bound through contextvars, secrets redacted."""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import structlog

_SECRET_KEYS = re.compile(r"pass(word)?|secret|token|authorization|api_?key|credential", re.I)
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@\s:]+(:[^/@\s]*)?@", re.I)
REDACTED = "***"

# The ids of the message in hand, as one mapping: set and reset once per message, where
# structlog's bound_contextvars sets, reads back and resets a context variable per id.
_MESSAGE_IDS: ContextVar[Mapping[str, Any] | None] = ContextVar("mailintake_ids", default=None)
_debug = False


def redact_text(text: str) -> str:
    """Hide the user:password part of every URL inside `text`."""
    return _URL_CREDENTIALS.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", text)


def _redact_value(key: str, value: Any) -> Any:
    if _SECRET_KEYS.search(key) and value is not None:
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, BaseException):
        return redact_text(f"{type(value).__name__}: {value}")
    return value


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: no password, token or URL credential ever reaches a log line."""
    for key in list(event_dict):
        event_dict[key] = _redact_value(key, event_dict[key])
    return event_dict


@contextmanager
def message_context(**ids: Any) -> Iterator[None]:
    """Every log line written inside the block carries `ids` (inner blocks add to them)."""
    outer = _MESSAGE_IDS.get()
    token = _MESSAGE_IDS.set({**outer, **ids} if outer else ids)
    try:
        yield
    finally:
        _MESSAGE_IDS.reset(token)


def merge_message_context(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: the ids of message_context, unless the line names them itself."""
    ids = _MESSAGE_IDS.get()
    if ids:
        for key, value in ids.items():
            event_dict.setdefault(key, value)
    return event_dict


def debug_enabled() -> bool:
    """Whether debug lines are written: a hot path checks this before it builds one."""
    return _debug


class _StderrLogger:
    """structlog's output: one line at a time to the stderr of the moment (looked up at each
    line, not kept from when logging was set up), whole lines from concurrent threads."""

    _lock = threading.Lock()

    def msg(self, message: str) -> None:
        with self._lock:
            stream = sys.stderr
            stream.write(message + "\n")
            stream.flush()

    log = debug = info = warning = warn = error = critical = exception = fatal = msg


def _stderr_logger(*_args: Any) -> _StderrLogger:
    return _StderrLogger()


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The stdlib's records to the stderr of the moment, as _StderrLogger does."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass  # always the current sys.stderr


def configure_logging(log_format: str = "console", level: str = "INFO") -> None:
    """Route structlog and stdlib logging to stderr in the chosen format.

    Both write to `sys.stderr` as it is when a line is written: a stream replaced since (a
    test's captured output, closed after it) is never written to again.
    """
    global _debug
    threshold = logging.getLevelName(level.upper())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        merge_message_context,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact_secrets,
    ]
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
    handler = _StderrHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[structlog.stdlib.add_log_level, *shared[3:]],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("mailintake").setLevel(level.upper())
    _debug = threshold <= logging.DEBUG


def get_logger(name: str = "mailintake") -> Any:
    """A structlog logger; bind ids with message_context (or structlog's bound_contextvars)."""
    return structlog.get_logger(name)
