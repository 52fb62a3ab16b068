"""IMAP through imapclient: connect (TLS verified), select, search, fetch, flag, expunge."""

from __future__ import annotations

import re
import ssl
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from typing import Any

import imapclient
from imapclient.exceptions import IMAPClientError, LoginError, ProtocolError
from imapclient.response_parser import parse_fetch_response

from fetcher.batching import DEFAULT_BUDGET, plan_groups
from fetcher.connerrors import connection_error
from fetcher.fetchparse import parse_fetch
from fetcher.guard import ReadLimits, ResponseLimitError
from fetcher.imapbounded import BoundedImapClient
from fetcher.ports import FetchedMessage, FolderState, MessageFetchError, MessageMeta
from fetcher.watcher import SocketWatcher
from shared.accounts import AccountConfig
from shared.errors import MailboxRejectedError, MailboxUnavailableError
from shared.netpolicy import check_mailbox_host
from shared.oauth.tokens import AccessTokenDueError
from shared.tls import shared_client_context

FETCH_BATCH = 500
MESSAGE_ID_ITEM = "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"
MESSAGE_ID_KEY = b"BODY[HEADER.FIELDS (MESSAGE-ID)]"
CONNECT_TIMEOUT = 30.0


def _batches(uids: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for start in range(0, len(uids), size):
        yield uids[start : start + size]


def _where(account: AccountConfig) -> str:
    return f"{account.host}:{account.port}"


@contextmanager
def translated_errors(account: AccountConfig) -> Iterator[None]:
    """Library and socket errors become MailboxError with a short reason."""
    where = _where(account)
    try:
        yield
    except LoginError as exc:
        if account.auth == "oauth2":
            raise MailboxRejectedError(
                "token_rejected", f"bearer token refused by {where}"
            ) from exc
        raise MailboxRejectedError("login_rejected", f"login rejected by {where}") from exc
    except ResponseLimitError as exc:
        raise MailboxUnavailableError(exc.reason, f"{where}: {exc}") from exc
    except (ssl.SSLError, OSError, IMAPClientError, EOFError) as exc:
        raise connection_error(account, exc) from exc


class ImapClientMailbox:
    """One logged-in IMAP connection (imapclient), used as a context manager.

    `secret` is the password, or for OAuth2 accounts the access token (XOAUTH2, or
    OAUTHBEARER where offered); `renew_by` (monotonic) is when that token is due for renewal:
    no new batch is fetched after it (AccessTokenDueError), so the caller reconnects with a new one.
    With `watcher`, a wait in IDLE blocks on `wake` until the watcher sees the socket readable
    (or someone sets `wake`), instead of on the socket itself.
    """

    def __init__(
        self,
        account: AccountConfig,
        secret: str,
        *,
        timeout: float = CONNECT_TIMEOUT,
        renew_by: float | None = None,
        watcher: SocketWatcher | None = None,
        wake: threading.Event | None = None,
        budget: int = DEFAULT_BUDGET,
    ):
        self._account = account
        self._secret = secret
        self._timeout = timeout
        self._budget = budget
        self.limits = ReadLimits.for_mail(
            max_message_bytes=account.max_message_bytes, budget=budget, seconds=timeout
        )
        self.renew_by = renew_by
        self._watcher = watcher
        self._wake = wake or threading.Event()
        self.client: BoundedImapClient | None = None

    def __enter__(self) -> ImapClientMailbox:
        a = self._account
        address = check_mailbox_host(a.host, a.port)  # MAILINTAKE_MAILBOX_DENY_PRIVATE
        context = shared_client_context(a.ca_file)
        with translated_errors(a):
            client = BoundedImapClient(
                a.host,
                limits=self.limits,
                address=address,
                port=a.port,
                ssl=a.security == "ssl",
                ssl_context=context,
                timeout=self._timeout,
            )
            client._imap.debug = 0  # imaplib formats every response at debug 5: 3.5x slower
            client.normalise_times = False  # INTERNALDATE with its zone, not as local time
            self.client = client
            try:
                if a.security == "starttls":
                    client.starttls(context)
                self._login(client)
            except BaseException:
                self.client = None
                client.shutdown()  # a refused login must not leave the socket open
                raise
        return self

    def _login(self, client: imapclient.IMAPClient) -> None:
        a = self._account
        if a.auth != "oauth2":
            client.login(a.username, self._secret)
        elif b"AUTH=OAUTHBEARER" in client.capabilities():
            client.oauthbearer_login(a.username, self._secret)
        else:
            client.oauth2_login(a.username, self._secret)

    def __exit__(self, *_exc: object) -> None:
        client, self.client = self.client, None
        if client is not None and client.broken:
            client.shutdown()  # mid-answer: a LOGOUT would read the rest of it first
        elif client is not None:
            try:
                client.logout()
            except Exception:  # the connection may already be gone
                client.shutdown()

    @property
    def _c(self) -> BoundedImapClient:
        if self.client is None:
            raise MailboxUnavailableError("not_connected", "the IMAP connection is closed")
        return self.client

    def capabilities(self) -> tuple[bytes, ...]:
        with translated_errors(self._account):
            return tuple(self._c.capabilities())

    def select(self, folder: str) -> FolderState:
        with translated_errors(self._account):
            try:
                info = self._c.select_folder(folder)
            except IMAPClientError as exc:
                if "select" in str(exc).lower() or "mailbox" in str(exc).lower():
                    raise MailboxRejectedError(
                        "folder_missing", f"folder {folder!r} cannot be opened: {exc}"
                    ) from exc
                raise
        return FolderState(int(info[b"UIDVALIDITY"]), int(info.get(b"UIDNEXT", 0)))

    def search(self, criteria: Sequence[str]) -> list[int]:
        with translated_errors(self._account):
            return sorted(int(u) for u in self._c.search(list(criteria)))

    def headers(self, uids: Sequence[int]) -> list[MessageMeta]:
        """Size, date and Message-ID of those of `uids` still there, in UID order."""
        if self.renew_by is not None and time.monotonic() >= self.renew_by:
            raise AccessTokenDueError(f"the access token of {_where(self._account)} is due")
        metas: list[MessageMeta] = []
        for batch in _batches(list(uids), FETCH_BATCH):
            with translated_errors(self._account):
                sizes = self._fetch(batch, f"RFC822.SIZE INTERNALDATE {MESSAGE_ID_ITEM}")
            metas.extend(_meta(uid, sizes[uid]) for uid in batch if uid in sizes)
        return metas

    def bodies(self, metas: Sequence[MessageMeta], *, max_bytes: int) -> list[FetchedMessage]:
        """BODY.PEEK[] (not marking them read); of those over `max_bytes` only the header."""
        small = [m.uid for m in metas if m.size <= max_bytes]
        big = [m.uid for m in metas if m.size > max_bytes]
        with translated_errors(self._account):
            bodies = self._fetch(small, "BODY.PEEK[]") if small else {}
            heads = self._fetch(big, "BODY.PEEK[HEADER]") if big else {}
        return [
            _message(m, bodies.get(m.uid), heads.get(m.uid))
            for m in metas
            if m.uid in bodies or m.uid in heads
        ]

    def fetch(self, uids: Sequence[int], *, max_bytes: int) -> Iterator[FetchedMessage]:
        """headers and bodies together, the bodies in groups within the byte budget."""
        for group in plan_groups(self.headers(uids), budget=self._budget, max_bytes=max_bytes):
            yield from self.bodies(group, max_bytes=max_bytes)

    def _fetch(self, uids: Sequence[int], items: str) -> dict[int, dict[bytes, Any]]:
        """UID FETCH `items` of `uids`: what imapclient's fetch gives, read by parse_fetch
        (imapclient's parser for a response of another shape). A refusal, or an answer that
        cannot be read, is a MessageFetchError: the connection goes on."""
        imap = self._c._imap  # the imaplib connection: imapclient has no fetch without its parser
        typ, data = imap.uid("FETCH", ",".join(map(str, uids)), f"({items})")
        if typ != "OK":
            raise MessageFetchError("fetch_refused", f"FETCH refused: {data[0]!r}")
        response = [piece for piece in data if piece is not None]
        parsed = parse_fetch(response)
        if parsed is None:
            try:
                parsed = parse_fetch_response(response, False, True)
            except (ProtocolError, ValueError, TypeError) as exc:
                raise MessageFetchError("fetch_unreadable", f"FETCH answer: {exc}") from exc
        return parsed

    def mark_seen(self, uids: Sequence[int]) -> None:
        for batch in _batches(list(uids), 2000):
            with translated_errors(self._account):
                self._c.add_flags(batch, [imapclient.SEEN], silent=True)

    def supports_idle(self) -> bool:
        with translated_errors(self._account):
            return bool(self._c.has_capability("IDLE"))

    def idle_start(self) -> None:
        with translated_errors(self._account):
            self._c.idle()

    def idle_wait(self, timeout: float) -> list[Any]:
        """Responses the server sent in IDLE within `timeout` seconds (may be empty)."""
        with translated_errors(self._account):
            if self._watcher is None:
                return list(self._c.idle_check(timeout=timeout))
            self._watcher.wait(self._c.socket(), self._wake, timeout)
            return list(self._c.idle_check(timeout=0))

    def idle_stop(self) -> None:
        with translated_errors(self._account):
            self._c.idle_done()

    def noop(self) -> None:
        """A liveness check: raises MailboxUnavailableError when the connection is dead."""
        with translated_errors(self._account):
            self._c.noop()

    def delete(self, uids: Sequence[int]) -> bool:
        with translated_errors(self._account):
            if not self._c.has_capability("UIDPLUS"):
                return False
            for batch in _batches(list(uids), 2000):
                self._c.add_flags(batch, [imapclient.DELETED], silent=True)
                self._c.uid_expunge(batch)
        return True


def _meta(uid: int, fields: dict[bytes, Any]) -> MessageMeta:
    internal = fields.get(b"INTERNALDATE")
    if isinstance(internal, datetime):
        internal = internal.astimezone(UTC) if internal.tzinfo else internal.replace(tzinfo=UTC)
    size, message_id = int(fields[b"RFC822.SIZE"]), message_id_of(fields.get(MESSAGE_ID_KEY))
    return MessageMeta(uid, size, internal if isinstance(internal, datetime) else None, message_id)


def _message(
    meta: MessageMeta, body: dict[bytes, Any] | None, head: dict[bytes, Any] | None
) -> FetchedMessage:
    uid, size, internal, message_id = meta.uid, meta.size, meta.internal_date, meta.message_id
    if body is not None:
        raw = bytes(body[b"BODY[]"])
        return FetchedMessage(uid, raw, size, internal, message_id=message_id)
    raw = bytes((head or {}).get(b"BODY[HEADER]", b""))
    return FetchedMessage(uid, raw, size, internal, oversize=True, message_id=message_id)


# The header block as servers send it for one unfolded ASCII Message-ID field.
_ONE_MESSAGE_ID = re.compile(rb"Message-ID:([ -~]*)\r?\n(?:\r?\n)?", re.IGNORECASE)


def message_id_of(header: bytes | None) -> str | None:
    """The Message-ID from a header block (None when absent or empty)."""
    if not header:
        return None
    one = _ONE_MESSAGE_ID.fullmatch(header)
    if one is not None:  # what the parser below gives for it, in a tenth of the time
        return " ".join(one.group(1).decode("ascii").split()) or None
    return parsed_message_id(header)


def parsed_message_id(header: bytes) -> str | None:
    """message_id_of by the e-mail package's header parser, for any header block."""
    value = BytesHeaderParser().parsebytes(bytes(header)).get("Message-ID")
    text = " ".join(str(value).split()) if value is not None else ""
    return text or None
