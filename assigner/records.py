"""The assignment's outcome on the `emails` documents, and customers' managers, on MongoDB."""

from __future__ import annotations

from pymongo import UpdateOne

from shared.logging import get_logger
from shared.store import Doc, OwnCache, Store, bulk_write_in_chunks, store_errors

log = get_logger("mailintake.assigner")


class MongoAssignmentRecords:
    """The outcome on the `emails` document; managers read from `customers`.

    `deferred`: outcomes are kept until `flush`, which writes the batch's with one bulk
    update (by `_id` and tenant: the store finds each by its `_id` index), at
    `MongoAssignmentBatch.commit`; `discard` drops them.
    """

    def __init__(
        self, store: Store, *, deferred: bool = False, customers: OwnCache | None = None
    ) -> None:
        self._store = store
        self._customers = customers or OwnCache(store.customers)
        self._deferred = deferred
        self._pending: dict[str, tuple[str, Doc]] = {}  # email _id -> (tenant, fields)

    def discard(self) -> None:
        """Forget the outcomes the batch kept."""
        self._pending = {}

    def record(
        self, tenant_id: str, email_id: str, *, manager_id: str | None, note: str | None
    ) -> None:
        self._pending[email_id] = (
            tenant_id, {"manager_id": manager_id, "unassigned_reason": note}
        )  # fmt: skip
        if not self._deferred:
            self.flush()
        if manager_id is None:
            log.warning("customer_unassigned", reason=note)

    def flush(self) -> None:
        """Write the kept outcomes on the e-mails of their own tenant (others are ignored)."""
        pending, self._pending = self._pending, {}
        if not pending:
            return
        with store_errors("record assignment"):
            bulk_write_in_chunks(
                self._store.emails,
                [
                    UpdateOne({"_id": email_id, "tenant_id": tenant_id}, {"$set": fields})
                    for email_id, (tenant_id, fields) in pending.items()
                ],
                ordered=False,
            )

    def manager_of(self, tenant_id: str, customer_id: str) -> str | None:
        with store_errors("find customer"):
            doc = self._customers.get(tenant_id, customer_id)
        value = doc.get("manager_id") if doc else None
        return None if value is None else str(value)
