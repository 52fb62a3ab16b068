"""The manager rotation on MongoDB: a log of numbered slots, each claimed by a unique insert.

Why not a conditional update on one rotation document: FerretDB 1.24 (CI's store) runs an
update as a query, then a write by _id, so `{version: v}` in the filter is not re-checked at
write time and two replicas can both "win". The one check every engine enforces atomically is
`_id` uniqueness, so the compare-and-set is "insert slot n+1 of the group": one replica gets
it, the others see a duplicate key, read the slots they missed and try n+2. Every decision is
taken on the complete history before it, so the replicas together assign exactly as one would.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from pymongo import UpdateOne
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from assigner.ports import Assignment, unusable_group
from assigner.rules import Manager, next_turns
from assigner.slots import (
    CLAIMS,
    SLOTS,
    claim_doc,
    claim_id,
    read_snapshot,
    slot_doc,
    slot_id,
    write_snapshot,
)
from shared.errors import TransientError
from shared.logging import get_logger
from shared.store import (
    Doc,
    OwnCache,
    Store,
    bulk_write_in_chunks,
    find_own,
    insert_in_order,
    insert_many_or_ignore,
    store_errors,
)

log = get_logger("mailintake.assigner")

MAX_CAS_ATTEMPTS = 200
# Slots inserted by one ordered command. FerretDB 1.24 inserts in batches of 100 and, after a
# duplicate, goes on with the next batch: at most 100 keeps "stops at the first" true there.
SLOT_CHUNK = 100


class RotationContendedError(TransientError):
    """Raised when another replica took a slot of the rotation that this one meant to take."""


def _log_contended(state: RetryCallState) -> None:
    log.info("rotation_contended", attempt=state.attempt_number, sleep=state.upcoming_sleep)


class MongoManagerRotation:
    """Exactly-once, even assignment with several replicas and no transactions.

    Who gets each turn is the rule's (`assigner.rules`), decided on the whole history before
    the turn; this class stores the turns and reads them back. `rotation_slots` holds one
    document per assignment (`seq` 1, 2, … per group, the manager, the customer); `rotations`
    holds a snapshot (the last seq and each manager's last slot) so that a replica reads only
    the slots after it; `rotation_claims` holds one document per customer, keyed by it,
    naming the slot that won the customer. A claimed customer whose manager is not yet
    written is the "in flight" state: a redelivered event finishes it. Every read and write
    goes by tenant and `_id`.

    Between `begin_batch` calls a group's managers are read once; the position in the
    rotation a replica last saw is kept in memory (slots never change, so it stays true).
    `begin_batch` also reads the batch's customers and claims with one query each.

    `deferred`: the manager written on a customer and the snapshot are kept until `flush`
    (`MongoAssignmentBatch.commit`, before any of the batch's events is published);
    `discard` drops them. The slot and the claim, which decide, are always written at once.
    """

    def __init__(
        self, store: Store, *, deferred: bool = False, customers: OwnCache | None = None
    ) -> None:
        self._store = store
        self._slots = store[SLOTS]
        self._claims = store[CLAIMS]
        self._customers = customers or OwnCache(store.customers)
        self._claimed = OwnCache(self._claims)
        self._groups: dict[tuple[str, str], list[Manager] | None] | None = None
        self._seen: dict[tuple[str, str], tuple[int, dict[str, int]]] = {}
        self._deferred = deferred
        self._settled: dict[str, tuple[str, Doc]] = {}  # customer _id -> (tenant, fields)
        self._snapshots: dict[tuple[str, str], tuple[int, dict[str, int]]] = {}

    def discard(self) -> None:
        """Forget the managers and snapshots the batch kept (its slots and claims stay)."""
        self._settled, self._snapshots = {}, {}

    def begin_batch(self, customers: Iterable[tuple[str, str]] = ()) -> None:
        """Read groups afresh from now on; read the batch's (tenant, customer) pairs."""
        self._groups = {}
        wanted = list(customers)
        with store_errors("read the batch's customers"):
            self._customers.load(wanted)
            self._claimed.load((t, claim_id(t, c)) for t, c in wanted)

    def claim_batch(self, wanted: Iterable[tuple[str, str, str, str]], now: datetime) -> None:
        """Claim the batch's new customers together: (tenant, group, customer, e-mail) each.

        Per group, the next slots are decided in order on the history before them and
        inserted with one ordered command, which stops at the first slot another replica
        took; the claims of the slots won are inserted with one command. After a lost slot
        the slots from there on are read and the rest decided again. What this leaves
        undecided, `assign` claims one customer at a time.
        """
        groups: dict[tuple[str, str], dict[str, str]] = {}
        for tenant_id, group_id, customer_id, email_id in wanted:
            groups.setdefault((tenant_id, group_id), {}).setdefault(customer_id, email_id)
        try:
            with store_errors("claim the batch's customers"):
                for (tenant_id, group_id), customers in groups.items():
                    self._claim_group(tenant_id, group_id, customers, now)
        except Exception:
            self._claimed.load(())  # what was claimed is read again, one at a time
            raise

    def _claim_group(
        self, tenant_id: str, group_id: str, customers: dict[str, str], now: datetime
    ) -> None:
        pending = [
            (customer_id, email_id)
            for customer_id, email_id in customers.items()
            if (customer := self._customers.get(tenant_id, customer_id)) is not None
            and customer.get("manager_id") is None
            and self._claimed.get(tenant_id, claim_id(tenant_id, customer_id)) is None
        ]
        managers = self._managers(tenant_id, group_id) if pending else None
        if managers:  # else `assign` gives each mail its reason
            self._claim_all(tenant_id, group_id, pending, managers, now)

    def _claim_all(
        self,
        tenant_id: str,
        group_id: str,
        pending: list[tuple[str, str]],
        managers: list[Manager],
        now: datetime,
    ) -> dict[str, Doc]:
        """The claims of (customer, e-mail) pairs, by customer, taken in rounds (see
        `_claim_round`); after a lost slot, the next round comes after a short random sleep,
        up to MAX_CAS_ATTEMPTS rounds. A customer missing from the result stayed contended.
        """
        claims: dict[str, Doc] = {}
        pending = list(pending)
        rounds = Retrying(
            retry=retry_if_exception_type(RotationContendedError),
            wait=wait_random_exponential(multiplier=0.001, max=0.02),
            stop=stop_after_attempt(MAX_CAS_ATTEMPTS),
            before_sleep=_log_contended,
            reraise=True,
        )
        try:
            for attempt in rounds:
                with attempt:
                    self._claim_round(tenant_id, group_id, pending, managers, now, claims)
        except RotationContendedError:
            log.warning("rotation_stayed_contended", group_id=group_id, left=len(pending))
        return claims

    def _claim_round(
        self,
        tenant_id: str,
        group_id: str,
        pending: list[tuple[str, str]],
        managers: list[Manager],
        now: datetime,
        claims: dict[str, Doc],
    ) -> None:
        """Claim `pending` (taking each claimed pair out, into `claims`): the next slots,
        decided in order on the history before them by the rule, inserted with one ordered
        command per SLOT_CHUNK that stops at the first slot another replica (or a run of ours
        that died before its claim) took. Then the slots from there on are read, and
        RotationContendedError says the rest is to be decided again after them.
        """
        seq, last = self._position(tenant_id, group_id)
        while pending:
            chunk = pending[:SLOT_CHUNK]
            turns = range(seq + 1, seq + 1 + len(chunk))
            slots = [
                slot_doc(tenant_id, group_id, n, manager_id, customer_id, email_id, now)
                for n, manager_id, (customer_id, email_id) in zip(
                    turns, next_turns(managers, last, turns), chunk, strict=True
                )
            ]
            won = insert_in_order(self._slots, slots)
            for slot in slots[:won]:
                last[str(slot["manager_id"])] = seq = int(slot["seq"])
            claims |= self._claim_slots(tenant_id, slots[:won])
            del pending[:won]
            lost = won < len(slots)
            if lost:  # slot seq+1 is taken: read on from it
                seq = self._read_past(tenant_id, group_id, seq, last, pending, claims)
            self._seen[(tenant_id, group_id)] = (seq, dict(last))
            self._save_snapshot(tenant_id, group_id, seq, last)
            if lost and pending:
                raise RotationContendedError(f"rotation of group {group_id}: slot {seq} taken")

    def _read_past(
        self,
        tenant_id: str,
        group_id: str,
        seq: int,
        last: dict[str, int],
        pending: list[tuple[str, str]],
        claims: dict[str, Doc],
    ) -> int:
        """Read the slots taken after `seq` into `last`; the last one's seq. A slot of one of
        ours (a run that crashed before its claim) is claimed for it and taken out of
        `pending`; the others' claims are written for them (`_claim_for_others`)."""
        others = []
        while taken := find_own(self._slots, tenant_id, slot_id(tenant_id, group_id, seq + 1)):
            ours = [p for p in pending if p[0] == taken["customer_id"]]
            if ours:
                claims |= self._claim_slots(tenant_id, [taken])
                pending.remove(ours[0])
            else:
                others.append(taken)
            last[str(taken["manager_id"])] = seq = int(taken["seq"])
        self._claim_for_others(tenant_id, others)
        return seq

    def _claim_for_others(self, tenant_id: str, slots: list[Doc]) -> None:
        """Write the claims of slots read past for customers not in hand: the claims their
        runs write next, or never if the run died between its two inserts. Then the slot is
        not passed over when the customer's event comes again (redelivered one at a time),
        which would cost its manager a turn. A claim that exists is left as it is."""
        if slots:
            insert_many_or_ignore(self._claims, [claim_doc(tenant_id, s) for s in slots])

    def _claim_slots(self, tenant_id: str, slots: list[Doc]) -> dict[str, Doc]:
        """Bind won slots to their customers with one insert; by customer, the claim that
        holds: a customer claimed meanwhile (the same event handled twice at once) keeps that
        claim, and our slot stays unused (a turn is lost)."""
        claims = [claim_doc(tenant_id, slot) for slot in slots]
        existed = insert_many_or_ignore(self._claims, claims)
        held = {c["customer_id"]: c for c in claims if c["_id"] not in existed}
        if existed:
            query = {"tenant_id": tenant_id, "_id": {"$in": sorted(existed)}}
            for won in self._claims.find(query):
                held[won["customer_id"]] = won
            # A claim written by another replica for our own slot (see _claim_for_others)
            # loses no turn.
            unused = [
                c for c in claims
                if c["_id"] in existed
                and held.get(c["customer_id"], {}).get("slot_id") != c["slot_id"]
            ]  # fmt: skip
            if unused:
                log.warning("rotation_slots_unused", count=len(unused), tenant_id=tenant_id)
        for claim in held.values():
            self._claimed.put(claim)
        return held

    def flush(self) -> None:
        """Write the managers settled on customers and the snapshots the batch moved."""
        settled, self._settled = self._settled, {}
        snapshots, self._snapshots = self._snapshots, {}
        with store_errors("record assignments"):
            if settled:
                bulk_write_in_chunks(
                    self._store.customers,
                    [
                        UpdateOne({"tenant_id": t, "_id": c}, {"$set": f})
                        for c, (t, f) in settled.items()
                    ],
                    ordered=False,
                )
            for (tenant_id, group_id), (seq, last) in snapshots.items():
                write_snapshot(self._store, tenant_id, group_id, seq, last)

    def assign(
        self, tenant_id: str, group_id: str, customer_id: str, *, email_id: str, now: datetime
    ) -> Assignment:
        with store_errors("assign manager"):
            customer = self._customers.get(tenant_id, customer_id)
            if customer is None:
                return Assignment(None, f"customer {customer_id} not found", assigned_now=False)
            claim = self._claimed.get(tenant_id, claim_id(tenant_id, customer_id))
            if claim is None and customer.get("manager_id") is not None:
                # The CRM gave it a manager, or it was assigned before claims existed.
                mine = customer.get("assigned_for_email") == email_id
                return Assignment(str(customer["manager_id"]), assigned_now=mine)
            if claim is None:
                managers = self._managers(tenant_id, group_id)
                if not managers:
                    return unusable_group(group_id, missing=managers is None)
                claim = self._claim(tenant_id, group_id, customer_id, email_id, managers, now)
            return self._settle(tenant_id, customer, claim, email_id, now)

    def _managers(self, tenant_id: str, group_id: str) -> list[Manager] | None:
        """The group's managers in its order (None: no such group), read once per batch."""
        key = (tenant_id, group_id)
        if self._groups is not None and key in self._groups:
            return self._groups[key]
        group = find_own(self._store.manager_groups, tenant_id, group_id)
        managers = None if group is None else self._read_managers(tenant_id, group)
        if self._groups is not None:
            self._groups[key] = managers
        return managers

    def _read_managers(self, tenant_id: str, group: Doc) -> list[Manager]:
        ids = [str(i) for i in group.get("manager_ids") or []]
        found = {
            str(m["_id"]): m
            for m in self._store.managers.find({"tenant_id": tenant_id, "_id": {"$in": ids}})
        }
        return [Manager.from_doc(found[i]) for i in ids if i in found]

    def _claim(
        self,
        tenant_id: str,
        group_id: str,
        customer_id: str,
        email_id: str,
        managers: list[Manager],
        now: datetime,
    ) -> Doc:
        """One customer's claim (what `claim_batch` did not decide)."""
        claims = self._claim_all(tenant_id, group_id, [(customer_id, email_id)], managers, now)
        if customer_id not in claims:
            raise TransientError(f"rotation of group {group_id} stayed contended")
        return claims[customer_id]

    def _position(self, tenant_id: str, group_id: str) -> tuple[int, dict[str, int]]:
        """Where to read the rotation from: what this replica saw last, else the snapshot."""
        seen = self._seen.get((tenant_id, group_id))
        if seen is not None:
            return seen[0], dict(seen[1])
        return read_snapshot(self._store, tenant_id, group_id)

    def _save_snapshot(self, tenant_id: str, group_id: str, seq: int, last: dict[str, int]) -> None:
        if self._deferred:
            self._snapshots[(tenant_id, group_id)] = (seq, dict(last))
        else:
            write_snapshot(self._store, tenant_id, group_id, seq, last)

    def _settle(
        self, tenant_id: str, customer: Doc, claim: Doc, email_id: str, now: datetime
    ) -> Assignment:
        """Write the claimed manager on the customer, unless it has one already."""
        if customer.get("manager_id") is None:
            fields = {
                "manager_id": claim["manager_id"],
                "assigned_at": now,
                "assigned_for_email": claim["email_id"],
            }
            if self._deferred:
                self._settled[customer["_id"]] = (tenant_id, fields)
            else:
                self._store.customers.update_one(
                    {"tenant_id": tenant_id, "_id": customer["_id"]}, {"$set": fields}
                )
            customer = {**customer, **fields}
            self._customers.put(customer)
        actual = str(customer["manager_id"])
        log.info("customer_assigned", manager_id=actual, slot_id=claim["slot_id"])
        return Assignment(actual, assigned_now=customer.get("assigned_for_email") == email_id)
