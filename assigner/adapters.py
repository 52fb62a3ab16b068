"""The manager rotation on MongoDB: compare-and-set on one rotation document per group."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from assigner.ports import Assignment
from shared.contracts import deterministic_id
from shared.errors import TransientError
from shared.logging import get_logger
from shared.store import Store, insert_or_ignore, store_errors

log = get_logger("mailintake.assigner")

ELIGIBLE_FIRST = "free"
MAX_CAS_ATTEMPTS = 200


def pick_manager(managers: list[dict[str, Any]], last: dict[str, int]) -> str | None:
    """The least recently assigned manager of the first non-empty tier (never-assigned first).

    Tier 1: logged in and free. Tier 2: everyone else (lunch, busy, break, logged out).
    Ties go to the manager listed first in the group.
    """
    tier = [m for m in managers if m.get("online") and m.get("status") == ELIGIBLE_FIRST]
    tier = tier or managers
    if not tier:
        return None
    return str(min(tier, key=lambda m: last.get(str(m["_id"]), -1))["_id"])


class MongoManagerRotation:
    """Exactly-once, even assignment with several replicas and no transactions.

    The rotation document holds each manager's last assignment number and the assignments
    in flight; a customer's manager is set only when empty, then the in-flight entry is cleared.
    """

    def __init__(self, store: Store) -> None:
        self._store = store

    def assign(
        self, tenant_id: str, group_id: str, customer_id: str, *, email_id: str, now: datetime
    ) -> Assignment:
        with store_errors("assign manager"):
            customer = self._store.customers.find_one({"tenant_id": tenant_id, "_id": customer_id})
            if customer is None:
                return Assignment(None, f"customer {customer_id} not found", assigned_now=False)
            if customer.get("manager_id") is not None:
                mine = customer.get("assigned_for_email") == email_id
                return Assignment(str(customer["manager_id"]), assigned_now=mine)
            group = self._store.manager_groups.find_one({"tenant_id": tenant_id, "_id": group_id})
            if group is None:
                return Assignment(None, f"manager group {group_id} does not exist", False)
            manager_id = self._reserve(tenant_id, group, customer_id)
            if manager_id is None:
                return Assignment(None, f"manager group {group_id} has no managers", False)
            return self._settle(tenant_id, group_id, customer_id, manager_id, email_id, now)

    def _managers(self, tenant_id: str, group: dict[str, Any]) -> list[dict[str, Any]]:
        ids = [str(i) for i in group.get("manager_ids") or []]
        found = {
            str(m["_id"]): m
            for m in self._store.managers.find({"tenant_id": tenant_id, "_id": {"$in": ids}})
        }
        return [found[i] for i in ids if i in found]

    def _reserve(self, tenant_id: str, group: dict[str, Any], customer_id: str) -> str | None:
        """Pick a manager and record it as in flight for this customer (CAS, retried)."""
        rotations = self._store.rotations
        key = deterministic_id("rotation", tenant_id, group["_id"])
        insert_or_ignore(
            rotations,
            {
                "_id": key,
                "tenant_id": tenant_id,
                "group_id": group["_id"],
                "version": 0,
                "seq": 0,
                "last": [],
                "pending": [],
            },
        )
        for _ in range(MAX_CAS_ATTEMPTS):
            state = rotations.find_one({"tenant_id": tenant_id, "_id": key})
            assert state is not None
            pending = {p["customer_id"]: p["manager_id"] for p in state["pending"]}
            if customer_id in pending:
                return str(pending[customer_id])
            last = {e["manager_id"]: e["seq"] for e in state["last"]}
            manager_id = pick_manager(self._managers(tenant_id, group), last)
            if manager_id is None:
                return None
            seq = state["seq"] + 1
            last[manager_id] = seq
            new_state = {
                **state,
                "version": state["version"] + 1,
                "seq": seq,
                "last": [{"manager_id": m, "seq": s} for m, s in last.items()],
                "pending": [
                    *state["pending"],
                    {"customer_id": customer_id, "manager_id": manager_id},
                ],
            }
            done = rotations.replace_one(
                {"_id": key, "tenant_id": tenant_id, "version": state["version"]}, new_state
            )
            if done.modified_count == 1:
                return manager_id
        raise TransientError(f"rotation of group {group['_id']} stayed contended")

    def _settle(
        self,
        tenant_id: str,
        group_id: str,
        customer_id: str,
        manager_id: str,
        email_id: str,
        now: datetime,
    ) -> Assignment:
        self._store.customers.update_one(
            {"tenant_id": tenant_id, "_id": customer_id, "manager_id": None},
            {
                "$set": {
                    "manager_id": manager_id,
                    "assigned_at": now,
                    "assigned_for_email": email_id,
                }
            },
        )
        customer = self._store.customers.find_one({"tenant_id": tenant_id, "_id": customer_id})
        assert customer is not None
        key = deterministic_id("rotation", tenant_id, group_id)
        self._store.rotations.update_one(
            {"tenant_id": tenant_id, "_id": key},
            {"$pull": {"pending": {"customer_id": customer_id}}},
        )
        actual = str(customer["manager_id"])
        self._store.emails.update_one(
            {"tenant_id": tenant_id, "_id": email_id}, {"$set": {"manager_id": actual}}
        )
        log.info("customer_assigned", manager_id=actual, group_id=group_id)
        return Assignment(actual, assigned_now=customer.get("assigned_for_email") == email_id)
