"""POP3 through poplib: connect (TLS verified, or STLS), UIDL, RETR, DELE, QUIT."""

from __future__ import annotations

import base64
import poplib
import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from email.parser import BytesHeaderParser
from typing import Any

from fetcher.batching import DEFAULT_BUDGET
from fetcher.connerrors import connection_error
from fetcher.guard import BoundedReader, ReadLimits, ResponseLimitError
from fetcher.ports import FetchedMessage
from shared.accounts import AccountConfig
from shared.errors import MailboxRejectedError, MailboxUnavailableError
from shared.netpolicy import check_mailbox_host
from shared.oauth.tokens import AccessTokenDueError
from shared.tls import shared_client_context

CONNECT_TIMEOUT = 30.0


@contextmanager
def translated_pop3_errors(account: AccountConfig, *, login: bool = False) -> Iterator[None]:
    """poplib and socket errors become MailboxError with a short reason."""
    where = f"{account.host}:{account.port}"
    try:
        yield
    except poplib.error_proto as exc:
        if login and account.auth == "oauth2":
            raise MailboxRejectedError(
                "token_rejected", f"bearer token refused by {where}"
            ) from exc
        if login:
            raise MailboxRejectedError("login_rejected", f"login rejected by {where}") from exc
        raise MailboxUnavailableError("protocol_error", f"{where}: {exc}") from exc
    except ResponseLimitError as exc:
        raise MailboxUnavailableError(exc.reason, f"{where}: {exc}") from exc
    except (ssl.SSLError, OSError, EOFError) as exc:
        raise connection_error(account, exc) from exc


class _BoundedLines:
    """poplib's lines through a BoundedReader: lines longer than poplib's 2,048 bytes are
    legal in the wild and read, up to the caps of one message and one answer."""

    reader: BoundedReader
    file: Any
    sock: Any

    def _bound(self, limits: ReadLimits) -> None:
        self.reader = BoundedReader(limits, lambda: self.file, lambda: self.sock)

    def _getline(self) -> tuple[bytes, int]:
        line = self.reader.readline()
        if not line:
            raise poplib.error_proto("-ERR EOF")
        octets = len(line)
        if line[-2:] == b"\r\n":
            return line[:-2], octets
        if line[:1] == b"\r":
            return line[1:-1], octets
        return line[:-1], octets

    def _putline(self, line: bytes) -> None:
        self.reader.command()
        super()._putline(line)  # type: ignore[misc]


class BoundedPop3(_BoundedLines, poplib.POP3):
    def __init__(
        self,
        limits: ReadLimits,
        host: str,
        port: int,
        *,
        timeout: float,
        address: str | None = None,
    ):
        self._bound(limits)
        self._address = address
        super().__init__(host, port, timeout=timeout)

    def _create_socket(self, timeout: float) -> socket.socket:
        """To the checked address when there is one (else by name): no second lookup."""
        return socket.create_connection((self._address or self.host, self.port), timeout)


class BoundedPop3Ssl(_BoundedLines, poplib.POP3_SSL):
    def __init__(
        self,
        limits: ReadLimits,
        host: str,
        port: int,
        *,
        timeout: float,
        context: Any,
        address: str | None = None,
    ):
        self._bound(limits)
        self._address = address
        super().__init__(host, port, timeout=timeout, context=context)

    def _create_socket(self, timeout: float) -> socket.socket:
        """To the checked address when there is one; TLS (SNI, certificate) on the name."""
        sock = socket.create_connection((self._address or self.host, self.port), timeout)
        context: ssl.SSLContext = self.context  # type: ignore[attr-defined]  # poplib's
        return context.wrap_socket(sock, server_hostname=self.host)


class PoplibMailbox:
    """One logged-in POP3 session; leaving the `with` block sends QUIT only on success.

    QUIT is what makes DELE take effect, so it is sent only when the block ends without an
    error: a failed run leaves every message on the server. `secret` is the password, or for
    OAuth2 accounts the access token (AUTH XOAUTH2); past `renew_by` (monotonic) no further
    message is retrieved (AccessTokenDueError).
    """

    def __init__(
        self,
        account: AccountConfig,
        secret: str,
        *,
        timeout: float = CONNECT_TIMEOUT,
        renew_by: float | None = None,
        budget: int = DEFAULT_BUDGET,
    ):
        self._account = account
        self._secret = secret
        self._timeout = timeout
        self.limits = ReadLimits.for_mail(
            max_message_bytes=account.max_message_bytes, budget=budget, seconds=timeout
        )
        self.renew_by = renew_by
        self._pop: poplib.POP3 | None = None

    def __enter__(self) -> PoplibMailbox:
        a = self._account
        address = check_mailbox_host(a.host, a.port)  # MAILINTAKE_MAILBOX_DENY_PRIVATE
        context = shared_client_context(a.ca_file)
        with translated_pop3_errors(a):
            if a.security == "ssl":
                pop: poplib.POP3 = BoundedPop3Ssl(
                    self.limits, a.host, a.port, timeout=self._timeout, context=context,
                    address=address,
                )  # fmt: skip
            else:
                pop = BoundedPop3(
                    self.limits, a.host, a.port, timeout=self._timeout, address=address
                )
        try:
            with translated_pop3_errors(a):
                if a.security == "starttls":
                    pop.stls(context)
            with translated_pop3_errors(a, login=True):
                self._login(pop)
        except BaseException:
            pop.close()  # a refused login must not leave the socket open
            raise
        self._pop = pop
        return self

    def _login(self, pop: poplib.POP3) -> None:
        a = self._account
        if a.auth != "oauth2":
            pop.user(a.username)
            pop.pass_(self._secret)
            return
        # poplib has no AUTH helper: its command primitives send AUTH XOAUTH2 (RFC 5034).
        raw = f"user={a.username}\x01auth=Bearer {self._secret}\x01\x01".encode()
        line = "AUTH XOAUTH2 " + base64.b64encode(raw).decode("ascii")
        reply: bytes = pop._shortcmd(line)  # type: ignore[attr-defined]
        if reply.startswith(b"+ ") or reply == b"+":
            # A refusal comes as a challenge holding the error; an empty line ends it (-ERR).
            pop._putcmd("")  # type: ignore[attr-defined]
            pop._getresp()  # type: ignore[attr-defined]
            raise poplib.error_proto("-ERR the server refused the bearer token")

    def __exit__(self, exc_type: object, *_exc: object) -> None:
        pop, self._pop = self._pop, None
        if pop is None:
            return
        try:
            if exc_type is None:
                with translated_pop3_errors(self._account):
                    pop.quit()
                return
        finally:
            pop.close()

    @property
    def _p(self) -> poplib.POP3:
        if self._pop is None:
            raise MailboxUnavailableError("not_connected", "the POP3 session is closed")
        return self._pop

    def listing(self) -> list[tuple[int, str, int]]:
        """(message number, UIDL, size) of every message on the server."""
        with translated_pop3_errors(self._account):
            _resp, uidls, _octets = self._p.uidl()
            _resp, sizes, _octets = self._p.list()
        size_of = dict(_pairs(sizes))
        return [(n, uidl, int(size_of.get(n, "0"))) for n, uidl in _pairs(uidls)]

    def retrieve(self, number: int, uidl: str, size: int, *, max_bytes: int) -> FetchedMessage:
        """RETR the message, or only its header (TOP n 0) when it is over `max_bytes`."""
        if self.renew_by is not None and time.monotonic() >= self.renew_by:
            raise AccessTokenDueError(f"the access token of {self._account.host} is due")
        oversize = size > max_bytes
        with translated_pop3_errors(self._account):
            _resp, lines, _octets = self._p.top(number, 0) if oversize else self._p.retr(number)
        raw = b"\r\n".join(lines) + b"\r\n"
        header = BytesHeaderParser().parsebytes(raw)
        message_id = " ".join(str(header.get("Message-ID") or "").split()) or None
        return FetchedMessage(
            number, raw, size, None, oversize=oversize, message_id=message_id, uidl=uidl
        )

    def delete(self, number: int) -> None:
        with translated_pop3_errors(self._account):
            self._p.dele(number)

    def stat(self) -> int:
        """How many messages the mailbox holds."""
        with translated_pop3_errors(self._account):
            return int(self._p.stat()[0])


def _pairs(lines: list[bytes]) -> Iterator[tuple[int, str]]:
    for line in lines:
        number, _, value = line.decode("ascii", "replace").partition(" ")
        yield int(number), value.strip()
