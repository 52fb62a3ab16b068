"""The MongoDB-compatible store: one client per process, collections and indexes ensured."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import gridfs
import pymongo
from pymongo import ASCENDING, MongoClient
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError

from shared.errors import StoreUnavailableError
from shared.logging import get_logger, redact_text

log = get_logger("mailintake.store")

Doc = dict[str, Any]

# (collection, keys): every query filters on tenant_id first (tenant isolation).
INDEXES: list[tuple[str, list[tuple[str, int]]]] = [
    ("accounts", [("tenant_id", ASCENDING)]),
    ("customers", [("tenant_id", ASCENDING), ("emails", ASCENDING)]),
    ("orders", [("tenant_id", ASCENDING), ("number", ASCENDING)]),
    ("managers", [("tenant_id", ASCENDING)]),
    ("emails", [("tenant_id", ASCENDING), ("message_id", ASCENDING)]),
    # the account's e-mails, and its loaded mail whose mailbox effect is still to be made
    ("emails", [("tenant_id", ASCENDING), ("account_id", ASCENDING), ("mailbox_state", ASCENDING)]),
    ("notifications", [("tenant_id", ASCENDING), ("user_id", ASCENDING)]),
]


@contextmanager
def store_errors(what: str) -> Iterator[None]:
    """Turn a lost store connection into StoreUnavailableError (a transient error)."""
    try:
        yield
    except ConnectionFailure as exc:
        raise StoreUnavailableError(f"{what}: the store is not reachable: {exc}") from exc


class Store:
    """The mailintake database and its collections."""

    def __init__(self, url: str, database: str | None = None, *, timeout_ms: int = 5000) -> None:
        self.address = redact_text(url)
        self.client: MongoClient[Doc] = MongoClient(
            url,
            serverSelectionTimeoutMS=timeout_ms,
            connectTimeoutMS=timeout_ms,
            socketTimeoutMS=max(timeout_ms * 6, 30_000),
            tz_aware=True,
            appname="mailintake",
        )
        self.db: Database[Doc] = (
            self.client[database] if database else self.client.get_default_database("mailintake")
        )

    def __getitem__(self, name: str) -> Collection[Doc]:
        return self.db[name]

    @property
    def accounts(self) -> Collection[Doc]:
        return self.db["accounts"]

    @property
    def customers(self) -> Collection[Doc]:
        return self.db["customers"]

    @property
    def orders(self) -> Collection[Doc]:
        return self.db["orders"]

    @property
    def managers(self) -> Collection[Doc]:
        return self.db["managers"]

    @property
    def manager_groups(self) -> Collection[Doc]:
        return self.db["manager_groups"]

    @property
    def emails(self) -> Collection[Doc]:
        return self.db["emails"]

    @property
    def notifications(self) -> Collection[Doc]:
        return self.db["notifications"]

    @property
    def rotations(self) -> Collection[Doc]:
        return self.db["rotations"]

    def gridfs(self) -> gridfs.GridFS:
        return gridfs.GridFS(self.db, collection="rawmail")

    def ping(self) -> None:
        """Raise StoreUnavailableError unless the store answers."""
        try:
            self.client.admin.command("ping")
        except PyMongoError as exc:
            raise StoreUnavailableError(
                f"the store at {self.address} is not reachable: {exc}"
            ) from exc

    def ensure_indexes(self) -> None:
        """Create the indexes mailintake queries by; safe to run at every start."""
        with store_errors("ensure indexes"):
            for name, keys in INDEXES:
                try:
                    self.db[name].create_index(keys)
                except OperationFailure as exc:
                    log.warning("index_not_created", collection=name, error=str(exc))

    def close(self) -> None:
        self.client.close()


def find_own(
    collection: Collection[Doc],
    tenant_id: str,
    doc_id: Any,
    projection: dict[str, int] | None = None,
) -> Doc | None:
    """The tenant's document with this _id; None when absent or another tenant's.

    Queried by `_id` alone and the tenant checked here: upstream FerretDB 1.24 (SQLite) uses
    the _id index only for a filter that is exactly `{_id: ...}` (deploy/local's build, for
    any top-level `_id`) and scans the collection otherwise.
    """
    fields = None if projection is None else {**projection, "tenant_id": 1}
    doc = collection.find_one({"_id": doc_id}, fields)
    return doc if doc is not None and doc.get("tenant_id") == tenant_id else None


class OwnCache:
    """A batch's documents of one collection, read by `_id` with one `$in` query.

    `load` reads the ids a batch will ask for (the store uses its `_id` index for an `$in`
    of ids); `get` answers those from what was read, with the tenant checked as `find_own`
    does, and reads any other id itself. `put` keeps what the batch wrote to those ids.
    """

    def __init__(self, collection: Collection[Doc]) -> None:
        self._collection = collection
        self._docs: dict[Any, Doc] = {}
        self._known: set[Any] = set()

    def load(self, ids: Iterable[Any]) -> None:
        self._docs, self._known = {}, set()
        wanted = sorted(set(ids))
        if wanted:
            found = self._collection.find({"_id": {"$in": wanted}})
            self._docs = {doc["_id"]: doc for doc in found}
            self._known = set(wanted)

    def get(self, tenant_id: str, doc_id: Any) -> Doc | None:
        if doc_id not in self._known:
            return find_own(self._collection, tenant_id, doc_id)
        doc = self._docs.get(doc_id)
        return doc if doc is not None and doc.get("tenant_id") == tenant_id else None

    def put(self, doc: Doc) -> None:
        """Keep what the batch wrote for an id it read (others are read from the store)."""
        if doc["_id"] in self._known:
            self._docs[doc["_id"]] = doc


def insert_or_ignore(collection: Collection[Doc], doc: Doc) -> bool:
    """Insert `doc`; False when a document with its _id already exists (idempotent insert)."""
    try:
        collection.insert_one(doc)
    except pymongo.errors.DuplicateKeyError:
        return False
    return True


DUPLICATE_KEY = 11000


def insert_in_order(collection: Collection[Doc], docs: list[Doc]) -> int:
    """Insert `docs` in order with one command, up to the first whose _id exists: how many.

    The ones before it are stored, it and those after it are not (an ordered insert).
    """
    if not docs:
        return 0
    try:
        collection.insert_many(docs, ordered=True)
    except pymongo.errors.BulkWriteError as exc:
        return min(_duplicates(exc))
    return len(docs)


def insert_many_or_ignore(collection: Collection[Doc], docs: list[Doc]) -> set[Any]:
    """Insert `docs` with one command; the _ids that existed already (those stay as they were)."""
    if not docs:
        return set()
    try:
        collection.insert_many(docs, ordered=False)
    except pymongo.errors.BulkWriteError as exc:
        return {docs[i]["_id"] for i in _duplicates(exc)}
    return set()


def _duplicates(exc: pymongo.errors.BulkWriteError) -> list[int]:
    """The indexes of the documents an insert refused as duplicates; re-raised otherwise."""
    errors = exc.details.get("writeErrors", [])
    if not errors or any(e.get("code") != DUPLICATE_KEY for e in errors):
        raise exc
    return [int(e["index"]) for e in errors]
