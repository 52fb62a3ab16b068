"""The assigner's view of a bound mail on MongoDB: its `emails` document, account, customer."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, get_args

from assigner.ports import StoredBinding
from shared.accounts import StoredAccountOptions
from shared.contracts import AccountOptions, MailBound, MatchedBy
from shared.store import Doc, OwnCache, Store, store_errors

# What the assigner reads of an e-mail: its binding, never the letter itself.
BINDING_FIELDS = dict.fromkeys(
    ("tenant_id", "account_id", "status", "matched_by", "customer_id", "order_id", "manager_id"),
    1,
)
MATCHED_BY: frozenset[str] = frozenset(get_args(MatchedBy))


def _opt(value: Any) -> str | None:
    return None if value is None else str(value)


def _binding(doc: Doc) -> StoredBinding:
    matched_by = doc.get("matched_by")
    return StoredBinding(
        account_id=_opt(doc.get("account_id")),
        status=_opt(doc.get("status")),
        matched_by=matched_by if matched_by in MATCHED_BY else None,
        customer_id=_opt(doc.get("customer_id")),
        order_id=_opt(doc.get("order_id")),
        manager_id=_opt(doc.get("manager_id")),
    )


class MongoBoundMailDirectory:
    """`BoundMailDirectory` on MongoDB, every read by tenant and `_id`.

    `load` reads the e-mails and accounts a batch's events name with one query per tenant
    and collection; the customers are the batch's (`customers`, read by the rotation when
    the batch begins). Whatever was not read is read one by one.
    """

    def __init__(self, store: Store, *, customers: OwnCache | None = None) -> None:
        self._emails = OwnCache(store.emails, projection=BINDING_FIELDS)
        self._accounts = StoredAccountOptions(store)
        self._customers = customers or OwnCache(store.customers)

    def load(self, events: Iterable[MailBound]) -> None:
        events = list(events)
        with store_errors("read the batch's e-mails"):
            self._emails.load((e.tenant_id, e.email_id) for e in events)
        self._accounts.load((e.tenant_id, e.account_id) for e in events)

    def binding(self, tenant_id: str, email_id: str) -> StoredBinding | None:
        with store_errors("read e-mail"):
            doc = self._emails.get(tenant_id, email_id)
        return None if doc is None else _binding(doc)

    def account(self, tenant_id: str, account_id: str) -> AccountOptions | None:
        return self._accounts.get(tenant_id, account_id)

    def has_customer(self, tenant_id: str, customer_id: str) -> bool:
        with store_errors("read customer"):
            return self._customers.get(tenant_id, customer_id) is not None
