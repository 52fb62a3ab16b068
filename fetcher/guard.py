"""Reads from a mail server bounded in bytes and in time.

imaplib reads a literal `{N}` with one `read(N)`, whatever N the server announced, and poplib
refuses any line over 2,048 bytes. Both libraries read through a buffered socket file; the
`BoundedReader` here takes over those reads: a literal or a line larger than the caps, or more
bytes than one command may bring, ends the read with a `ResponseLimitError`; so does a server
that trickles bytes (each read has a deadline, not only each `recv`). After such an error the
connection is in the middle of a response and is not used again.
"""

from __future__ import annotations

import io
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

# A literal of n bytes must arrive within the line timeout plus n / MIN_RATE seconds.
MIN_RATE = 64 * 1024
# What a message's response may bring over its announced size (FETCH items, lines, CRLFs).
SLACK = 1024 * 1024
CHUNK = 256 * 1024


class ResponseLimitError(Exception):
    """Raised when a server's answer breaks a read limit (size or time); `reason` names it."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ReadLimits:
    """`seconds`: a line (or a literal's first bytes) must come within it; `literal_bytes`:
    the largest literal or line read; `command_bytes`: the most one command's answer may
    bring; `min_rate`: the bytes a second a literal must at least come at."""

    seconds: float
    literal_bytes: int
    command_bytes: int
    min_rate: float = MIN_RATE

    @classmethod
    def for_mail(cls, *, max_message_bytes: int, budget: int, seconds: float) -> ReadLimits:
        """The caps of a connection fetching mail of up to `max_message_bytes` in batches of
        up to `budget` bytes."""
        literal = max_message_bytes + SLACK
        return cls(seconds, literal, max(budget, max_message_bytes) + 2 * SLACK)


class BoundedReader:
    """Line and literal reads of one connection, counted from the last `command()`."""

    def __init__(
        self,
        limits: ReadLimits,
        file: Callable[[], BinaryIO],
        sock: Callable[[], socket.socket],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self._file = file
        self._sock = sock
        self._clock = clock
        self.read_bytes = 0  # since the last command
        self.broken = False  # a limit was hit: the connection is mid-response

    def command(self) -> None:
        """A new command was sent: its answer gets the whole command budget."""
        self.read_bytes = 0

    def read(self, size: int) -> bytes:
        """Exactly `size` bytes (fewer at end of stream), held once in memory."""
        if size > self.limits.literal_bytes:
            self._fail(
                "literal_too_large",
                f"the server announced {size} bytes, over the cap of "
                f"{self.limits.literal_bytes} bytes",
            )
        self._count(size)
        deadline = self._clock() + self.limits.seconds + size / self.limits.min_rate
        out = io.BytesIO()  # getvalue() hands over its buffer: one copy of the literal
        left = size
        while left > 0:
            with self._until(deadline, f"a literal of {size} bytes", started=left < size):
                chunk = self._file().read1(min(left, CHUNK))  # type: ignore[attr-defined]
            if not chunk:
                break
            out.write(chunk)
            left -= len(chunk)
        return out.getvalue()

    def readline(self) -> bytes:
        """One line with its end (or what came before the end of stream)."""
        deadline = self._clock() + self.limits.seconds
        file, length = self._file(), 0
        parts: list[bytes] = []
        while True:
            with self._until(deadline, "a response line", started=bool(parts)):
                buffered = file.peek(1)  # type: ignore[attr-defined]
            if not buffered:
                break
            end = buffered.find(b"\n")
            part = file.read(end + 1 if end >= 0 else len(buffered))
            length += len(part)
            if length > self.limits.literal_bytes:
                self._fail(
                    "line_too_long",
                    f"a response line over {self.limits.literal_bytes} bytes",
                )
            self._count(len(part))
            parts.append(part)
            if end >= 0:
                break
        return b"".join(parts)

    def _count(self, size: int) -> None:
        self.read_bytes += size
        if self.read_bytes > self.limits.command_bytes:
            self._fail(
                "response_too_large",
                f"one answer over {self.limits.command_bytes} bytes",
            )

    @contextmanager
    def _until(self, deadline: float, what: str, *, started: bool) -> Iterator[None]:
        """Each recv waits at most until the deadline: bytes trickled one by one end too
        (`too_slow`; a read that got nothing at all is a plain timeout).

        A non-blocking socket (imapclient reading what came in IDLE) is left as it is."""
        left = deadline - self._clock()
        if left <= 0:
            self._fail("too_slow", f"{what} did not arrive in time")
        sock = self._sock()
        if sock.gettimeout() != 0.0:
            sock.settimeout(min(left, self.limits.seconds))
        try:
            yield
        except TimeoutError:
            if started and self._clock() >= deadline:
                self._fail("too_slow", f"{what} did not arrive in time")
            self.broken = True
            raise

    def _fail(self, reason: str, message: str) -> None:
        self.broken = True
        raise ResponseLimitError(reason, message)
