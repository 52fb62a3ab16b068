"""What the assigner needs: the manager rotation of a group, and where outcomes are written."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


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


class ManagerRotation(Protocol):
    """Hands out a group's customers evenly, exactly once per customer."""

    def assign(
        self, tenant_id: str, group_id: str, customer_id: str, *, email_id: str, now: datetime
    ) -> Assignment: ...


class AssignmentRecords(Protocol):
    """The `emails` record of an assignment, and the managers the CRM already knows."""

    def record(
        self, tenant_id: str, email_id: str, *, manager_id: str | None, note: str | None
    ) -> None:
        """Write who got the mail's new customer, or why nobody did, on the e-mail."""
        ...

    def manager_of(self, tenant_id: str, customer_id: str) -> str | None:
        """The customer's manager as stored now (None when it has none)."""
        ...
