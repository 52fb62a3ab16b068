"""What the assigner needs: the manager rotation of a group."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class Assignment:
    """Who got the customer; `manager_id` None with a `note` when nobody could."""

    manager_id: str | None
    note: str | None = None
    assigned_now: bool = True


class ManagerRotation(Protocol):
    """Hands out a group's customers evenly, exactly once per customer."""

    def assign(
        self, tenant_id: str, group_id: str, customer_id: str, *, email_id: str, now: datetime
    ) -> Assignment: ...
