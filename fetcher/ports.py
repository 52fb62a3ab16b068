"""What the fetcher needs: mailboxes to read, and places to publish and remember what it read."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from shared.contracts import Event, deterministic_id
from shared.errors import MailboxUnavailableError


@dataclass(frozen=True)
class FolderState:
    """UIDVALIDITY and UIDNEXT of the selected folder."""

    uidvalidity: int
    uidnext: int


@dataclass(frozen=True)
class Position:
    """Where an account's folder was read up to.

    `first_load_end`: the last UID the first load covers (UIDNEXT - 1 when it began). With
    `initial_sync` "unseen" only unread mail up to it is taken; every message after it is
    new mail, taken whether or not somebody read it meanwhile.
    """

    uidvalidity: int
    last_uid: int
    first_load_end: int = 0


@dataclass(frozen=True)
class MessageMeta:
    """What the server tells of a message before its body: size, date and Message-ID."""

    uid: int
    size: int
    internal_date: datetime | None
    message_id: str | None = None


class MessageFetchError(MailboxUnavailableError):
    """Raised when the server would not give (or gave unreadably) messages of a FETCH; the
    connection can go on."""


@dataclass(frozen=True)
class FetchedMessage:
    """One message as read from the server (`raw` is only the header when oversize)."""

    uid: int
    raw: bytes
    size: int
    internal_date: datetime | None
    oversize: bool = False
    message_id: str | None = None
    uidl: str | None = None

    def fingerprint(self, account_id: str) -> str:
        """The second key of a mail: Message-ID and size (size and date when it has none)."""
        if self.message_id:
            return deterministic_id("mail", account_id, self.message_id, self.size)
        date = self.internal_date.isoformat() if self.internal_date else ""
        return deterministic_id("mail", account_id, "", self.size, date)


class ImapMailbox(Protocol):
    """An open IMAP connection with a selected folder."""

    def select(self, folder: str) -> FolderState: ...

    def search(self, criteria: Sequence[str]) -> list[int]: ...

    def headers(self, uids: Sequence[int]) -> list[MessageMeta]:
        """Size, date and Message-ID of those of `uids` still there, in UID order."""
        ...

    def bodies(self, metas: Sequence[MessageMeta], *, max_bytes: int) -> list[FetchedMessage]:
        """The messages with their bodies (only the header of those over `max_bytes`)."""
        ...

    def mark_seen(self, uids: Sequence[int]) -> None: ...

    def delete(self, uids: Sequence[int]) -> bool:
        """Flag \\Deleted and UID EXPUNGE them; False when the server lacks UIDPLUS."""
        ...


class Pop3Mailbox(Protocol):
    """An open, logged-in POP3 session."""

    def listing(self) -> list[tuple[int, str, int]]:
        """(message number, UIDL, size) of every message on the server."""
        ...

    def retrieve(self, number: int, uidl: str, size: int, *, max_bytes: int) -> FetchedMessage: ...

    def delete(self, number: int) -> None:
        """DELE: takes effect only when the session ends with QUIT."""
        ...


class EventPublisher(Protocol):
    """Publishes events and returns once RabbitMQ confirmed every one."""

    def publish(self, events: Sequence[tuple[Event, bytes | None]]) -> None: ...


class PositionStore(Protocol):
    """Sync positions and first-load progress of accounts."""

    def get(self, account_id: str, folder: str) -> Position | None: ...

    def save(self, account_id: str, folder: str, position: Position) -> None: ...

    def begin_progress(self, account_id: str, *, remaining: int, now: datetime) -> int:
        """Start a load of `remaining` messages; returns how many an interrupted load had done."""
        ...

    def advance(
        self, account_id: str, folder: str, position: Position, *, done: int, now: datetime
    ) -> None:
        """Save a batch's position and the load's progress together (one write)."""
        ...

    def deletes_pending(self, account_id: str, pending: bool) -> None: ...


class Pop3Positions(Protocol):
    """The UIDLs already taken from a POP3 account (and which of them were too large)."""

    def taken(self, account_id: str) -> tuple[set[str], set[str]]: ...

    def save_taken(self, account_id: str, taken: set[str], oversize: set[str]) -> None: ...


class TakenMail(Protocol):
    """Fingerprints of the mail already published per account (dedupe across UIDVALIDITY)."""

    def known(self, account_id: str, fingerprints: Sequence[str]) -> set[str]: ...

    def remember(self, account_id: str, entries: Sequence[tuple[str, str]]) -> None:
        """Record (fingerprint, email id) pairs after their publish was confirmed."""
        ...


@dataclass(frozen=True)
class Outcome:
    """The binder's outcome of a published mail, and where the mail is in the mailbox."""

    email_id: str
    loaded: bool  # to be marked read, or deleted; else left as it is
    folder: str | None = None
    uidvalidity: int | None = None
    uid: int | None = None
    uidl: str | None = None


class MailOutcomes(Protocol):
    """The outcomes of an account's mail whose mailbox effect is still to be made.

    The binder writes one per decided mail once its `emails` document is stored; the
    fetcher makes the effects and then marks them done, which removes them.
    """

    def pending(self, account_id: str, *, limit: int) -> list[Outcome]: ...

    def done(self, account_id: str, email_ids: Sequence[str]) -> None: ...


@dataclass
class FailureState:
    """Failed fetch attempts of an account's messages (by e-mail id), and for IMAP the UIDs
    (up to `suspect_until`, under `suspect_uidvalidity`) to fetch one at a time, because a
    fetch of several of them failed."""

    counts: dict[str, int] = field(default_factory=dict)
    suspect_uidvalidity: int = 0
    suspect_until: int = 0


class FailureStore(Protocol):
    """Where an account's failed fetch attempts are kept (they outlive restarts)."""

    def load(self, account_id: str) -> FailureState: ...

    def save(self, account_id: str, state: FailureState) -> None: ...


class FailedMailArchive(Protocol):
    """Where a mail that could not be fetched is recorded as `failed`."""

    def record_failed(self, document: dict[str, Any]) -> None:
        """Insert the `emails` document unless the mail has one already."""
        ...


class BlobWriter(Protocol):
    """Stores a raw mail too big to travel inline."""

    def put(self, key: str, data: bytes, *, tenant_id: str, content_type: str) -> str: ...
