"""The binder's ports on MongoDB: the CRM's customers and orders, and the `emails` archive."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from pymongo import ReplaceOne
from pymongo.collection import Collection

from binder.accounts import MongoAccountDirectory
from binder.batch import Wanted
from binder.ports import CustomerRef, OrderRef
from shared.contracts import deterministic_id
from shared.errors import ForeignKeyError, TransientError
from shared.mailboxref import OUTCOMES
from shared.store import (
    Doc,
    OwnCache,
    Store,
    bulk_write_in_chunks,
    find_own,
    insert_many_or_ignore,
    insert_or_ignore,
    store_errors,
)


def customer_id_for(tenant_id: str, address: str) -> str:
    """The _id of a customer created from mail: tenant + normalised address."""
    return "mail-" + deterministic_id("customer", tenant_id, address)


def _order(doc: dict[str, Any] | None) -> OrderRef | None:
    if doc is None:
        return None
    return OrderRef(str(doc["_id"]), str(doc["customer_id"]), _opt(doc.get("manager_id")))


def _customer(doc: dict[str, Any] | None) -> CustomerRef | None:
    if doc is None:
        return None
    return CustomerRef(str(doc["_id"]), _opt(doc.get("manager_id")), doc.get("source_email_id"))


def _opt(value: Any) -> str | None:
    return None if value is None else str(value)


def insert_all_new(collection: Collection[Doc], docs: list[Doc], what: str) -> None:
    """Write a batch's new documents with one command; if one exists already, another binder
    wrote it meanwhile, and the batch is handled again (a TransientError) from what is stored.

    A key that another tenant's document holds will not go away by trying again: a
    ForeignKeyError, which the worker narrows down to the mail that made it.
    """
    with store_errors(f"write what a batch made ({what})"):
        existed = insert_many_or_ignore(collection, docs)
    if existed:
        _refuse_foreign(collection, [doc for doc in docs if doc["_id"] in set(existed)])
        raise TransientError(
            f"{len(existed)} of {len(docs)} {what} meanwhile by another binder: "
            "the batch is handled again from what is stored"
        )


def _refuse_foreign(collection: Collection[Doc], docs: list[Doc]) -> None:
    """Raise ForeignKeyError if another tenant holds the key of one of `docs`.

    On purpose the one query of the binder into other tenants' documents: which of a
    tenant's keys another tenant holds (`tenant_id: {$ne: ...}`), reading their _id only.
    """
    by_tenant: dict[str, list[str]] = {}
    for doc in docs:
        by_tenant.setdefault(doc["tenant_id"], []).append(doc["_id"])
    with store_errors(f"read the {collection.name} written meanwhile"):
        for tenant_id, ids in sorted(by_tenant.items()):
            query = {"tenant_id": {"$ne": tenant_id}, "_id": {"$in": sorted(ids)}}
            foreign = collection.find_one(query, {"_id": 1})
            if foreign is not None:
                raise ForeignKeyError(
                    f"{collection.name} {foreign['_id']} of tenant {tenant_id} exists in "
                    "another tenant: its key is taken"
                )


class MongoCrmDirectory:
    """Orders and customers as the CRM stores them (every query filters on the tenant).

    `warm` reads a whole batch's customers and orders with one query per tenant and
    collection, and its tenants' account addresses with one query; until the next `warm`,
    lookups it covered are answered from what it read, the others go to the store. Customers
    created meanwhile are kept (and found) until `flush`, which writes them with one command
    (`MongoBindingBatch.commit`, before the batch's e-mails); `discard` drops them.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._customers: dict[tuple[str, str], CustomerRef | None] = {}
        self._orders: dict[tuple[str, str], OrderRef | None] = {}
        self._created: list[dict[str, Any]] = []
        self.accounts = MongoAccountDirectory(store)

    def discard(self) -> None:
        """Forget the batch: what it read and the customers it created."""
        self._customers, self._orders, self._created = {}, {}, []

    def warm(self, wanted: Mapping[str, Wanted]) -> None:
        self.discard()
        self.accounts.warm(wanted)
        with store_errors("read the batch's customers and orders"):
            for tenant_id, want in wanted.items():
                if want.addresses:
                    self._warm_customers(tenant_id, want.addresses)
                if want.numbers:
                    self._warm_orders(tenant_id, want.numbers)

    def _warm_customers(self, tenant_id: str, addresses: set[str]) -> None:
        """As `find_customer` chooses: the one created from mail, else the lowest _id."""
        query = {"tenant_id": tenant_id, "emails": {"$in": sorted(addresses)}}
        found: dict[str, dict[str, Any]] = {}
        for doc in self._store.customers.find(query).sort("_id", 1):
            for address in doc.get("emails") or []:
                if address in addresses and (
                    address not in found or doc["_id"] == customer_id_for(tenant_id, address)
                ):
                    found[address] = doc
        for address in addresses:
            self._customers[(tenant_id, address)] = _customer(found.get(address))

    def _warm_orders(self, tenant_id: str, numbers: set[str]) -> None:
        query = {"tenant_id": tenant_id, "number": {"$in": sorted(numbers)}}
        found: dict[str, dict[str, Any]] = {}
        for doc in self._store.orders.find(query).sort("_id", 1):
            found.setdefault(str(doc["number"]), doc)
        for number in numbers:
            self._orders[(tenant_id, number)] = _order(found.get(number))

    def find_order(self, tenant_id: str, number: str) -> OrderRef | None:
        if (tenant_id, number) in self._orders:
            return self._orders[(tenant_id, number)]
        with store_errors("find order"):
            return _order(
                self._store.orders.find_one(
                    {"tenant_id": tenant_id, "number": number}, sort=[("_id", 1)]
                )
            )

    def find_order_by_id(self, tenant_id: str, order_id: str) -> OrderRef | None:
        with store_errors("find order"):
            return _order(find_own(self._store.orders, tenant_id, order_id))

    def find_customer(self, tenant_id: str, address: str) -> CustomerRef | None:
        if (tenant_id, address) in self._customers:
            return self._customers[(tenant_id, address)]
        with store_errors("find customer"):
            # A customer created from mail is found by its key; the CRM's own by address.
            doc = find_own(self._store.customers, tenant_id, customer_id_for(tenant_id, address))
            if doc is None:
                doc = self._store.customers.find_one(
                    {"tenant_id": tenant_id, "emails": address}, sort=[("_id", 1)]
                )
        return _customer(doc)

    def own_addresses(self, tenant_id: str) -> frozenset[str]:
        return self.accounts.own_addresses(tenant_id)

    def create_customer(
        self, tenant_id: str, address: str, *, shop_id: str | None, email_id: str, now: datetime
    ) -> CustomerRef:
        doc = {
            "_id": customer_id_for(tenant_id, address),
            "tenant_id": tenant_id,
            "emails": [address],
            "manager_id": None,
            "shop_id": shop_id,
            "created_at": now,
            "source": "mail",
            "source_email_id": email_id,
        }
        self._created.append(doc)
        created = _customer(doc)
        assert created is not None
        self._customers[(tenant_id, address)] = created
        return created

    def flush(self) -> None:
        """Write the customers the batch created; if one exists already, try again later.

        Another binder created it meanwhile (a mail from the same new address): the batch is
        handled again, finds it and binds to it, so the address still has one customer.
        """
        docs, self._created = self._created, []
        insert_all_new(self._store.customers, docs, "new customers were created")


class MongoEmailArchive:
    """The `emails` collection, written insert-or-ignore by _id, and the decided mails'
    mailbox outcomes for the fetcher (`shared.mailboxref`), written after the e-mails.

    `warm` reads the batch's stored documents with one query (a redelivered mail finds its
    own). A recorded document is kept (and read) until `flush`, which writes the batch's
    documents with one command (`MongoBindingBatch.commit`, before any of the batch's events
    is published), and the documents replacing `failed` ones with another; `discard` drops
    them.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._pending: dict[str, dict[str, Any]] = {}
        self._replacing: set[str] = set()
        self._outcomes: dict[str, dict[str, Any]] = {}
        self._stored = OwnCache(store.emails)

    def discard(self) -> None:
        """Forget the documents (and outcomes) the batch recorded."""
        self._pending, self._replacing, self._outcomes = {}, set(), {}

    def warm(self, email_ids: Iterable[tuple[str, str]]) -> None:
        """Start a batch: read which of its (tenant, e-mail id) pairs are recorded already,
        with one query per tenant."""
        self.discard()
        with store_errors("read the batch's emails"):
            self._stored.load(email_ids)

    def get(self, tenant_id: str, email_id: str) -> dict[str, Any] | None:
        pending = self._pending.get(email_id)
        if pending is not None:
            return pending if pending["tenant_id"] == tenant_id else None
        with store_errors("read email"):
            return self._stored.get(tenant_id, email_id)

    def record(self, doc: dict[str, Any]) -> dict[str, Any]:
        return self._pending.setdefault(doc["_id"], doc)

    def record_outcome(self, outcome: dict[str, Any]) -> None:
        self._outcomes.setdefault(outcome["_id"], outcome)

    def replace_failed(self, doc: dict[str, Any]) -> dict[str, Any]:
        self._replacing.add(doc["_id"])
        self._pending[doc["_id"]] = doc
        return doc

    def record_failure(self, doc: dict[str, Any]) -> dict[str, Any] | None:
        ours = {"_id": doc["_id"], "tenant_id": doc["tenant_id"]}
        with store_errors("record a failed e-mail"):
            if insert_or_ignore(self._store.emails, doc):
                return doc
            self._store.emails.replace_one({**ours, "status": "failed"}, doc)
            return self._store.emails.find_one(ours)

    def flush(self) -> None:
        """Write the kept documents; if another binder wrote one meanwhile, try again later."""
        docs, self._pending = list(self._pending.values()), {}
        replacing, self._replacing = self._replacing, set()
        new = [doc for doc in docs if doc["_id"] not in replacing]
        insert_all_new(self._store.emails, new, "e-mails were recorded")
        self._replace_failed([doc for doc in docs if doc["_id"] in replacing])
        outcomes, self._outcomes = list(self._outcomes.values()), {}
        if outcomes:  # after the e-mails: the fetcher acts on these
            with store_errors("write the batch's mailbox outcomes"):
                insert_many_or_ignore(self._store[OUTCOMES], outcomes)

    def _replace_failed(self, docs: list[Doc]) -> None:
        """Replace `failed` documents decided again, each only while it is still `failed`."""
        if not docs:
            return
        with store_errors("replace failed e-mails"):
            replacements = [
                ReplaceOne({"_id": d["_id"], "tenant_id": d["tenant_id"], "status": "failed"}, d)
                for d in docs
            ]
            matched = bulk_write_in_chunks(self._store.emails, replacements, ordered=False)
        if matched < len(docs):
            raise TransientError(
                f"{len(docs) - matched} of {len(docs)} failed e-mails were decided "
                "meanwhile by another binder: the batch is handled again from what is stored"
            )

    def order_of_thread(self, tenant_id: str, message_ids: tuple[str, ...]) -> str | None:
        for kept in self._pending.values():  # an earlier mail of this batch
            ours = kept["tenant_id"] == tenant_id and kept.get("message_id") in message_ids
            if ours and kept.get("order_id") is not None:
                return str(kept["order_id"])
        with store_errors("find thread"):
            doc = self._store.emails.find_one(
                {
                    "tenant_id": tenant_id,
                    "message_id": {"$in": list(message_ids)},
                    "order_id": {"$ne": None},
                }
            )
        return None if doc is None else str(doc["order_id"])
