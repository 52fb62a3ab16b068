"""The rotation's documents on MongoDB: a group's numbered slots, the claims binding them to
customers, and the snapshot of where the rotation stands (see `assigner.adapters`)."""

from __future__ import annotations

from datetime import datetime

from shared.contracts import deterministic_id
from shared.store import Doc, Store, find_own, insert_or_ignore

SLOTS = "rotation_slots"
CLAIMS = "rotation_claims"


def slot_id(tenant_id: str, group_id: str, seq: int) -> str:
    return deterministic_id("rotation-slot", tenant_id, group_id, seq)


def claim_id(tenant_id: str, customer_id: str) -> str:
    return deterministic_id("rotation-claim", tenant_id, customer_id)


def slot_doc(
    tenant_id: str,
    group_id: str,
    seq: int,
    manager_id: str,
    customer_id: str,
    email_id: str,
    now: datetime,
) -> Doc:
    """Turn `seq` of the group: `manager_id` gets `customer_id` (for mail `email_id`)."""
    return {
        "_id": slot_id(tenant_id, group_id, seq),
        "tenant_id": tenant_id,
        "group_id": group_id,
        "seq": seq,
        "manager_id": manager_id,
        "customer_id": customer_id,
        "email_id": email_id,
        "claimed_at": now,
    }


def claim_doc(tenant_id: str, slot: Doc) -> Doc:
    """The claim binding a slot's customer to that slot (one per customer, by its _id)."""
    return {
        "_id": claim_id(tenant_id, slot["customer_id"]),
        "tenant_id": tenant_id,
        "customer_id": slot["customer_id"],
        "slot_id": slot["_id"],
        "manager_id": slot["manager_id"],
        "email_id": slot["email_id"],
    }


def read_snapshot(store: Store, tenant_id: str, group_id: str) -> tuple[int, dict[str, int]]:
    """The group's last seq and each manager's last turn as the snapshot holds them (created
    at 0 when the group has none)."""
    key = deterministic_id("rotation", tenant_id, group_id)
    found = find_own(store.rotations, tenant_id, key)
    if found is None:
        doc: Doc = {"_id": key, "tenant_id": tenant_id, "group_id": group_id, "seq": 0, "last": []}
        insert_or_ignore(store.rotations, doc)
        found = find_own(store.rotations, tenant_id, key) or doc
    return int(found["seq"]), {str(e["manager_id"]): int(e["seq"]) for e in found["last"]}


def write_snapshot(
    store: Store, tenant_id: str, group_id: str, seq: int, last: dict[str, int]
) -> None:
    """Move the snapshot forward to `seq`; a lost race leaves an older one, only slower.

    The `seq` condition is not atomic on every store (FerretDB), so a replica may still
    put back an older snapshot; readers then read a few more slots after it, which gives
    them the same history.
    """
    store.rotations.update_one(
        {
            "tenant_id": tenant_id,
            "_id": deterministic_id("rotation", tenant_id, group_id),
            "seq": {"$lt": seq},
        },
        {"$set": {"seq": seq, "last": [{"manager_id": m, "seq": s} for m, s in last.items()]}},
    )
