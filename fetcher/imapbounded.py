"""An IMAPClient whose imaplib connection reads through fetcher.guard's BoundedReader."""

from __future__ import annotations

import imaplib
import socket
from typing import Any

import imapclient
from imapclient.imap4 import IMAP4WithTimeout
from imapclient.tls import IMAP4_TLS, wrap_socket

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
    def __init__(
        self,
        limits: ReadLimits,
        host: str,
        port: int,
        timeout: float | None,
        address: str | None = None,
    ):
        self._bound(limits)
        self._address = address
        super().__init__(host, port, timeout)

    def _create_socket(self, timeout: float | None = None) -> socket.socket:
        """To the checked address when there is one (else by name): no second lookup."""
        where = (self._address or self.host, self.port)
        return socket.create_connection(where, timeout if timeout is not None else self._timeout)


class _BoundedTls(_BoundedReads, IMAP4_TLS):  # type: ignore[misc]
    def __init__(
        self,
        limits: ReadLimits,
        host: str,
        port: int,
        context: Any,
        timeout: float | None,
        address: str | None = None,
    ):
        self._bound(limits)
        self._address = address
        super().__init__(host, port, context, timeout)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        """To the checked address when there is one; TLS (SNI, certificate) on the name."""
        sock = socket.create_connection((self._address or self.host, self.port), timeout=timeout)
        wrapped: socket.socket = wrap_socket(sock, self.ssl_context, self.host)
        return wrapped


class BoundedImapClient(imapclient.IMAPClient):  # type: ignore[misc]
    """An IMAPClient whose connection reads within `limits` (fetcher.guard)."""

    def __init__(
        self, host: str, *, limits: ReadLimits, address: str | None = None, **kwargs: Any
    ) -> None:
        self._limits = limits
        self._address = address  # where to connect, when `host` was checked (netpolicy)
        super().__init__(host, **kwargs)

    def _create_IMAP4(self) -> imaplib.IMAP4:  # noqa: N802 (imapclient's name)
        timeout = getattr(self._timeout, "connect", None)
        if self.ssl:
            return _BoundedTls(
                self._limits, self.host, self.port, self.ssl_context, timeout, self._address
            )
        return _BoundedPlain(self._limits, self.host, self.port, timeout, self._address)

    @property
    def broken(self) -> bool:
        """A read limit was hit: the connection is in the middle of an answer."""
        return bool(self._imap.reader.broken)
