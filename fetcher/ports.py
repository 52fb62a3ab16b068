"""What the fetcher needs: a mailbox to read and a place to publish what it read."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from shared.contracts import Event


@dataclass(frozen=True)
class FolderState:
    """UIDVALIDITY and UIDNEXT of the selected folder."""

    uidvalidity: int
    uidnext: int


@dataclass(frozen=True)
class FetchedMessage:
    """One message as read from the server (`raw` is only the header when oversize)."""

    uid: int
    raw: bytes
    size: int
    internal_date: datetime | None
    oversize: bool = False


class ImapMailbox(Protocol):
    """An open IMAP connection with a selected folder."""

    def select(self, folder: str) -> FolderState: ...

    def search(self, criteria: Sequence[str]) -> list[int]: ...

    def fetch(self, uids: Sequence[int], *, max_bytes: int) -> Iterator[FetchedMessage]: ...

    def mark_seen(self, uids: Sequence[int]) -> None: ...

    def delete(self, uids: Sequence[int]) -> bool:
        """Flag \\Deleted and UID EXPUNGE them; False when the server lacks UIDPLUS."""
        ...


class EventPublisher(Protocol):
    """Publishes events and returns once RabbitMQ confirmed every one."""

    def publish(self, events: Sequence[tuple[Event, bytes | None]]) -> None: ...
