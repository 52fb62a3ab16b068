"""The MongoDB-compatible store: one client per process, collections and indexes ensured."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import gridfs
import pymongo
from pymongo import ASCENDING, MongoClient, ReplaceOne, UpdateOne
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
    ("emails", [("tenant_id", ASCENDING), ("account_id", ASCENDING)]),
    ("mailbox_outcomes", [("tenant_id", ASCENDING), ("account_id", ASCENDING)]),
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
    """The tenant's document with this _id; None when absent or another tenant's."""
    return collection.find_one({"tenant_id": tenant_id, "_id": doc_id}, projection)


class OwnCache:
    """A batch's documents of one collection, read by tenant and `_id`: one query per tenant.

    `load` reads the (tenant, _id) pairs a batch will ask for, each tenant's with an `$in` of
    its ids; `get` answers those from what was read and reads any other pair itself. `put`
    keeps what the batch wrote to those pairs. `projection`: the fields read (all if None).
    """

    def __init__(
        self, collection: Collection[Doc], projection: dict[str, int] | None = None
    ) -> None:
        self._collection = collection
        self._projection = projection
        self._docs: dict[tuple[str, Any], Doc] = {}
        self._known: set[tuple[str, Any]] = set()

    def load(self, keys: Iterable[tuple[str, Any]]) -> None:
        self._docs, self._known = {}, set()
        by_tenant: dict[str, set[Any]] = {}
        for tenant_id, doc_id in keys:
            by_tenant.setdefault(tenant_id, set()).add(doc_id)
        for tenant_id, ids in sorted(by_tenant.items()):
            query = {"tenant_id": tenant_id, "_id": {"$in": sorted(ids)}}
            found = self._collection.find(query, self._projection)
            self._docs.update({(tenant_id, doc["_id"]): doc for doc in found})
            self._known.update((tenant_id, doc_id) for doc_id in ids)

    def get(self, tenant_id: str, doc_id: Any) -> Doc | None:
        if (tenant_id, doc_id) not in self._known:
            return find_own(self._collection, tenant_id, doc_id, self._projection)
        return self._docs.get((tenant_id, doc_id))

    def put(self, doc: Doc) -> None:
        """Keep what the batch wrote for a pair it read (others are read from the store)."""
        key = (doc["tenant_id"], doc["_id"])
        if key in self._known:
            self._docs[key] = doc


# Statements of one bulk update command. FerretDB 1.24 (CI's store) keeps the read of every
# statement that matched open until the command ends, on a pool of 100 connections per
# database: a command of 100 such statements waits forever for a connection it holds itself
# (and every client of that database with it), and so could a few large commands at once.
# Three commands of 32 at once stay clear of it. On MongoDB the chunks change nothing but
# the number of round trips: a crash between two leaves those before applied, as a crash in
# the middle of one command leaves its first statements applied.
WRITE_CHUNK = 32

# Test hook (the fault suite's "kill -9 mid bulk write"): "<collection>:<marker file>". The
# first process to create the marker sends the first half of its next bulk write of two or
# more statements to that collection as one command, then kills itself: what a crash in the
# middle of a bulk write leaves on MongoDB (the statements before it applied, the rest not).
CRASH_MID_WRITE_ENV = "MAILINTAKE_TEST_CRASH_MID_WRITE"


def crash_mid_write(collection: Collection[Doc], statements: int) -> int | None:
    """How many of `statements` to send before the test hook kills the process, or None."""
    target, _, marker = os.environ.get(CRASH_MID_WRITE_ENV, "").partition(":")
    if statements < 2 or target != collection.name or not marker:
        return None
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return None
    return statements // 2


def die_mid_write() -> None:
    log.warning("test_crash_mid_write")
    os.kill(os.getpid(), signal.SIGKILL)


def bulk_write_in_chunks(
    collection: Collection[Doc],
    requests: Sequence[UpdateOne | ReplaceOne[Doc]],
    *,
    ordered: bool,
) -> int:
    """Run `requests` as commands of at most WRITE_CHUNK statements, in order: how many
    statements matched a document. A failing command raises, and those after it are not run
    (each caller's writes are idempotent, and its batch is handled again)."""
    cut = crash_mid_write(collection, len(requests))
    if cut is not None:
        bulk_write_in_chunks(collection, requests[:cut], ordered=ordered)
        die_mid_write()
    matched = 0
    for start in range(0, len(requests), WRITE_CHUNK):
        chunk = requests[start : start + WRITE_CHUNK]
        matched += collection.bulk_write(chunk, ordered=ordered).matched_count
    return matched


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
    cut = crash_mid_write(collection, len(docs))
    if cut is not None:
        insert_in_order(collection, docs[:cut])
        die_mid_write()
    try:
        collection.insert_many(docs, ordered=True)
    except pymongo.errors.BulkWriteError as exc:
        return min(_duplicates(exc))
    return len(docs)


def insert_many_or_ignore(collection: Collection[Doc], docs: list[Doc]) -> set[Any]:
    """Insert `docs` with one command; the _ids that existed already (those stay as they were)."""
    if not docs:
        return set()
    cut = crash_mid_write(collection, len(docs))
    if cut is not None:
        insert_many_or_ignore(collection, docs[:cut])
        die_mid_write()
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
