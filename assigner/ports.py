"""What the assigner needs: the bound mail as the store has it, the manager rotation of a
group, and where outcomes are written.

The assigner handles a consumed batch as one unit of work (`AssignmentBatch`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from shared.contracts import AccountOptions, Event, MatchedBy


@dataclass(frozen=True)
class Assignment:
    """Who got the customer; `manager_id` None with a `note` when nobody could, and
    `group_unusable` when that is because the group is missing or has no managers."""

    manager_id: str | None
    note: str | None = None
    assigned_now: bool = True
    group_unusable: bool = False


def unusable_group(group_id: str, *, missing: bool) -> Assignment:
    """Nobody got the customer: the group does not exist (`missing`) or has no managers."""
    why = "does not exist" if missing else "has no managers"
    return Assignment(None, f"manager group {group_id} {why}", False, group_unusable=True)


@dataclass(frozen=True)
class StoredBinding:
    """What a mail's `emails` document says of it: where it came from and what it is bound to
    (`matched_by` "created": its customer was created from this mail)."""

    account_id: str | None
    status: str | None
    matched_by: MatchedBy | None
    customer_id: str | None
    order_id: str | None = None
    manager_id: str | None = None


class BoundMailDirectory(Protocol):
    """A bound mail as the store has it (events are not trusted): its e-mail's binding, its
    account's options and whether its customer exists, each read by tenant and `_id` (another
    tenant's is not found), as read when the batch began."""

    def binding(self, tenant_id: str, email_id: str) -> StoredBinding | None: ...

    def account(self, tenant_id: str, account_id: str) -> AccountOptions | None: ...

    def has_customer(self, tenant_id: str, customer_id: str) -> bool: ...


class ManagerRotation(Protocol):
    """Hands out a group's customers evenly (`assigner.rules`), exactly once per customer.

    The turn that decides who gets a customer is stored at once, so that every replica
    decides on the same history; the manager written on the customer is stored when the
    batch commits, and the batch's own reads see it at once. A group's managers are read
    once per batch.
    """

    def assign(
        self, tenant_id: str, group_id: str, customer_id: str, *, email_id: str, now: datetime
    ) -> Assignment: ...


class AssignmentRecords(Protocol):
    """The `emails` record of an assignment, and the managers the CRM already knows.

    An outcome is stored when the batch commits. `manager_of` answers as the customer was
    read when the batch began, with the managers the batch settled.
    """

    def record(
        self, tenant_id: str, email_id: str, *, manager_id: str | None, note: str | None
    ) -> None:
        """Write who got the mail's new customer, or why nobody did, on the e-mail."""
        ...

    def manager_of(self, tenant_id: str, customer_id: str) -> str | None:
        """The customer's manager as stored now (None when it has none)."""
        ...


class AssignmentBatch(Protocol):
    """The assigner's unit of work: one consumed batch of bound mail, settled through its ports.

    `begin` reads the batch's e-mails, accounts, customers and their claims in bulk and
    claims the new customers that the store says its mails created, together, group by group
    in rotation order (those turns are stored at once). `commit` stores the managers settled
    on customers, then the outcomes on the e-mails.
    """

    @property
    def bindings(self) -> BoundMailDirectory: ...

    @property
    def rotation(self) -> ManagerRotation: ...

    @property
    def records(self) -> AssignmentRecords: ...

    def begin(self, batch: Sequence[tuple[Event, bytes | None]]) -> None: ...

    def commit(self) -> None: ...
