"""What the binder needs from the world, as protocols (fakes in tests, Mongo in production).

The binder handles a consumed batch as one unit of work (`BindingBatch`): what its ports
write is kept until the batch commits, and their reads see it at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from shared.contracts import AccountOptions, Event
from shared.mail import MailParseError, ParsedMail


@dataclass(frozen=True)
class OrderRef:
    """An order as the binder sees it."""

    id: str
    customer_id: str
    manager_id: str | None


@dataclass(frozen=True)
class CustomerRef:
    """A customer as the binder sees it; `source_email_id` is set on customers made from mail."""

    id: str
    manager_id: str | None
    source_email_id: str | None = None


@dataclass(frozen=True)
class AccountRef:
    """A mail account as the store holds it: its tenant and its options."""

    id: str
    tenant_id: str
    options: AccountOptions


class CrmDirectory(Protocol):
    """The CRM's orders and customers of one tenant, and the addresses of its own mailboxes.

    Reads answer from the store (as read in bulk when the batch began) and see the customers
    the batch created; a created customer is stored when the batch commits.
    """

    def find_order(self, tenant_id: str, number: str) -> OrderRef | None: ...

    def find_order_by_id(self, tenant_id: str, order_id: str) -> OrderRef | None: ...

    def find_customer(self, tenant_id: str, address: str) -> CustomerRef | None: ...

    def create_customer(
        self, tenant_id: str, address: str, *, shop_id: str | None, email_id: str, now: datetime
    ) -> CustomerRef:
        """The customer keyed by tenant + address, created if missing (one, even when racing:
        a commit that finds it stored meanwhile has the batch handled again)."""
        ...

    def own_addresses(self, tenant_id: str) -> frozenset[str]:
        """The (normalised) addresses of every mail account of the tenant."""
        ...


class AccountDirectory(Protocol):
    """The `accounts` collection, as the binder reads it."""

    def find(self, tenant_id: str, account_id: str) -> AccountRef | None:
        """The tenant's account with this id, or None (absent, or another tenant's)."""
        ...


class EmailArchive(Protocol):
    """The `emails` collection: one document per fetched message.

    `record` and `replace_failed` are stored when the batch commits; `get` and
    `order_of_thread` see them at once. `record_failure` writes at once (a dead letter is
    recorded outside any batch).
    """

    def get(self, tenant_id: str, email_id: str) -> dict[str, Any] | None: ...

    def record(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Insert `doc` unless its _id exists; return the stored document either way."""
        ...

    def replace_failed(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Replace the stored `failed` document of `doc`'s _id (decided again) with `doc`.

        If it is no longer `failed` by then (another binder decided it), the mail is handled
        again from what is stored.
        """
        ...

    def record_failure(self, doc: dict[str, Any]) -> dict[str, Any] | None:
        """Store the `failed` document `doc` at once: inserted, or replacing a `failed` one; a
        decided mail's document stays. The stored document of the tenant, or None."""
        ...

    def record_outcome(self, outcome: dict[str, Any]) -> None:
        """Tell the fetcher a mail's outcome (`shared.mailboxref`): written, insert-or-ignore,
        only after the e-mails are stored, so the mailbox never changes before its letter is."""
        ...

    def order_of_thread(self, tenant_id: str, message_ids: tuple[str, ...]) -> str | None:
        """The order an earlier mail with one of these Message-IDs was bound to, if any."""
        ...


class BlobStore(Protocol):
    """Raw mail and attachments, stored once (GridFS in production).

    A `put` is stored by the time the batch commits (before its e-mails, which name it);
    `get_own` sees it at once.
    """

    def put(self, key: str, data: bytes, *, tenant_id: str, content_type: str) -> str: ...

    def get_own(self, tenant_id: str, ref: str) -> bytes:
        """The tenant's blob `ref`; KeyError when absent or another tenant's."""
        ...


class BindingBatch(Protocol):
    """The binder's unit of work: one consumed batch of fetched mail, bound through its ports.

    `begin` reads in bulk the accounts the batch's events name (each within the event's
    tenant), which of the batch's mails are stored already and the customers,
    orders and own addresses the others will look up, parsing the mail that travels inline
    once. `commit` stores what the batch wrote in the order customers, blobs, e-mails (a
    stored e-mail names only what is stored); if another binder stored one of them meanwhile
    it raises TransientError, and the whole batch is handled again from what is stored.
    """

    @property
    def accounts(self) -> AccountDirectory: ...

    @property
    def crm(self) -> CrmDirectory: ...

    @property
    def archive(self) -> EmailArchive: ...

    @property
    def blobs(self) -> BlobStore: ...

    def begin(self, batch: Sequence[tuple[Event, bytes | None]]) -> None: ...

    def parsed(self, email_id: str) -> ParsedMail | MailParseError | None:
        """The batch's mail as `begin` parsed it, or None (parsed when it is bound)."""
        ...

    def commit(self) -> None: ...
