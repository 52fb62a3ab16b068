"""An IMAPClient whose imaplib connection reads through fetcher.guard's BoundedReader."""

from __future__ import annotations

import imaplib
from typing import Any

import imapclient
from imapclient.imap4 import IMAP4WithTimeout
from imapclient.tls import IMAP4_TLS

from fetcher.guard import BoundedReader, ReadLimits


class _BoundedReads:
    """imaplib's reads through a BoundedReader: literals, lines and answers capped."""

    reader: BoundedReader
    file: Any
    sock: Any

    def _bound(self, limits: ReadLimits) -> None:
        self.reader = BoundedReader(limits, lambda: self.file, lambda: self.sock)

    def read(self, size: int) -> bytes:
        return self.reader.read(size)

    def readline(self) -> bytes:
        return self.reader.readline()

    def send(self, data: bytes) -> None:
        self.reader.command()
        super().send(data)  # type: ignore[misc]


class _BoundedPlain(_BoundedReads, IMAP4WithTimeout):  # type: ignore[misc]
    def __init__(self, limits: ReadLimits, host: str, port: int, timeout: float | None):
        self._bound(limits)
        super().__init__(host, port, timeout)


class _BoundedTls(_BoundedReads, IMAP4_TLS):  # type: ignore[misc]
    def __init__(
        self, limits: ReadLimits, host: str, port: int, context: Any, timeout: float | None
    ):
        self._bound(limits)
        super().__init__(host, port, context, timeout)


class BoundedImapClient(imapclient.IMAPClient):  # type: ignore[misc]
    """An IMAPClient whose connection reads within `limits` (fetcher.guard)."""

    def __init__(self, host: str, *, limits: ReadLimits, **kwargs: Any) -> None:
        self._limits = limits
        super().__init__(host, **kwargs)

    def _create_IMAP4(self) -> imaplib.IMAP4:  # noqa: N802 (imapclient's name)
        timeout = getattr(self._timeout, "connect", None)
        if self.ssl:
            return _BoundedTls(self._limits, self.host, self.port, self.ssl_context, timeout)
        return _BoundedPlain(self._limits, self.host, self.port, timeout)

    @property
    def broken(self) -> bool:
        """A read limit was hit: the connection is in the middle of an answer."""
        return bool(self._imap.reader.broken)
