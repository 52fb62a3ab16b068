"""Who gets a new customer: the eligible tier of a group, and who is next in it (pure).

Tier 1: managers logged in and "free". Tier 2, when nobody is in tier 1: everyone else in the
group (lunch, busy, break, not logged in). Within the tier the least recently assigned manager
is next (one never assigned before anyone), ties going to the one listed first in the group:
with k managers in the tier, N customers in a row give each N/k ± 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

FREE = "free"
NEVER = -1  # the turn of a manager never assigned: before every real turn (1, 2, …)


@dataclass(frozen=True)
class Manager:
    """A manager of a group as the rule sees one: `online` False is "not logged in"."""

    id: str
    status: str
    online: bool

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Manager:
        """A `managers` document (as the CRM writes it)."""
        return cls(str(doc["_id"]), str(doc.get("status") or ""), bool(doc.get("online")))


def eligible(managers: Sequence[Manager]) -> list[Manager]:
    """The group's first non-empty tier, in the group's order (empty: the group is)."""
    free = [m for m in managers if m.online and m.status == FREE]
    return free or list(managers)


def next_manager(managers: Sequence[Manager], last: Mapping[str, int]) -> str | None:
    """The eligible manager assigned least recently (`last`: each manager's last turn);
    None when the group has nobody."""
    tier = eligible(managers)
    if not tier:
        return None
    return min(tier, key=lambda m: last.get(m.id, NEVER)).id


def next_turns(
    managers: Sequence[Manager], last: Mapping[str, int], turns: Iterable[int]
) -> list[str]:
    """Who gets each of the next `turns` (increasing turn numbers after every one in `last`),
    each decided on the history before it; empty when the group has nobody."""
    decided, out = dict(last), []
    for turn in turns:
        manager_id = next_manager(managers, decided)
        if manager_id is None:
            return []
        decided[manager_id] = turn
        out.append(manager_id)
    return out
