"""What the binder needs from the world, as protocols (fakes in tests, Mongo in production)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol


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


class CrmDirectory(Protocol):
    """The CRM's orders and customers of one tenant."""

    def find_order(self, tenant_id: str, number: str) -> OrderRef | None: ...

    def find_order_by_id(self, tenant_id: str, order_id: str) -> OrderRef | None: ...

    def find_customer(self, tenant_id: str, address: str) -> CustomerRef | None: ...

    def create_customer(
        self, tenant_id: str, address: str, *, shop_id: str | None, email_id: str, now: datetime
    ) -> CustomerRef:
        """The customer keyed by tenant + address, created if missing (one, even when racing)."""
        ...


class EmailArchive(Protocol):
    """The `emails` collection: one document per fetched message."""

    def get(self, tenant_id: str, email_id: str) -> dict[str, Any] | None: ...

    def record(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Insert `doc` unless its _id exists; return the stored document either way."""
        ...

    def order_of_thread(self, tenant_id: str, message_ids: tuple[str, ...]) -> str | None:
        """The order an earlier mail with one of these Message-IDs was bound to, if any."""
        ...


class BlobStore(Protocol):
    """Raw mail and attachments, stored once (GridFS in production)."""

    def put(self, key: str, data: bytes, *, tenant_id: str, content_type: str) -> str: ...

    def get(self, ref: str) -> bytes: ...
