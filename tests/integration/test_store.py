"""The real MongoDB-compatible store: indexes, _id uniqueness, GridFS, compare-and-set."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from bson import ObjectId
from pymongo import ASCENDING, ReturnDocument, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

from fetcher.adapters import MongoPositionStore, MongoTakenMail
from fetcher.ports import Position
from shared.blobs import GridFsBlobStore
from shared.settings import Settings
from shared.store import (
    CRASH_MID_WRITE_ENV,
    INDEXES,
    OwnCache,
    Store,
    bulk_write_in_chunks,
    insert_or_ignore,
)
from tests.conftest import settings_env
from tests.services import REPO

pytestmark = pytest.mark.integration


def test_indexes_are_created_and_ensuring_twice_is_harmless(store: Store) -> None:
    store.ensure_indexes()
    for collection, keys in INDEXES:
        indexed = [list(ix["key"].items()) for ix in store[collection].list_indexes()]
        assert [(k, v) for k, v in keys] in [[(k, int(v)) for k, v in ix] for ix in indexed]


def test_collection_stats_name_every_index(store: Store) -> None:
    """collStats lists each index by its name, and a unique one still enforces."""
    things = store["things"]
    things.insert_one({"_id": "a", "tag": "x"})
    things.create_index([("tag", ASCENDING)])
    things.create_index([("code", ASCENDING)], unique=True)
    sizes = store.db.command("collStats", "things")["indexSizes"]
    assert set(sizes) == {"_id_", "tag_1", "code_1"}
    assert all(size >= 0 for size in sizes.values())
    assert [d["_id"] for d in things.find({"tag": "x"})] == ["a"]
    things.insert_one({"_id": "b", "code": "c1"})
    with pytest.raises(DuplicateKeyError):  # a unique index still enforces
        things.insert_one({"_id": "c", "code": "c1"})


def test_duplicate_id_is_refused(store: Store) -> None:
    store.emails.insert_one({"_id": "e1", "tenant_id": "t"})
    with pytest.raises(DuplicateKeyError):
        store.emails.insert_one({"_id": "e1", "tenant_id": "t"})
    assert insert_or_ignore(store.emails, {"_id": "e1", "tenant_id": "t", "x": 2}) is False
    assert insert_or_ignore(store.emails, {"_id": "e2", "tenant_id": "t"}) is True
    assert store.emails.count_documents({"tenant_id": "t"}) == 2
    assert store.emails.find_one({"_id": "e1"}) == {"_id": "e1", "tenant_id": "t"}


def test_conditional_update_is_a_compare_and_set(store: Store) -> None:
    store.rotations.insert_one({"_id": "r", "tenant_id": "t", "version": 0})
    won = store.rotations.find_one_and_update(
        {"_id": "r", "version": 0}, {"$set": {"version": 1}}, return_document=ReturnDocument.AFTER
    )
    lost = store.rotations.update_one({"_id": "r", "version": 0}, {"$set": {"version": 9}})
    assert won is not None and won["version"] == 1
    assert lost.modified_count == 0
    assert store.rotations.find_one({"_id": "r"})["version"] == 1  # type: ignore[index]


def test_multikey_lookup_by_address(store: Store) -> None:
    store.customers.insert_many(
        [
            {"_id": "c1", "tenant_id": "t", "emails": ["a@x.org", "b@x.org"]},
            {"_id": "c2", "tenant_id": "u", "emails": ["b@x.org"]},
        ]
    )
    found = store.customers.find_one({"tenant_id": "t", "emails": "b@x.org"})
    assert found is not None and found["_id"] == "c1"


def test_blobs_are_stored_once_and_read_back(store: Store) -> None:
    blobs = GridFsBlobStore(store)
    data = bytes(range(256)) * 2000  # several GridFS chunks
    assert blobs.put("raw/e1", data, tenant_id="t", content_type="message/rfc822") == "raw/e1"
    assert blobs.put("raw/e1", b"other", tenant_id="t", content_type="message/rfc822") == "raw/e1"
    assert blobs.get_own("t", "raw/e1") == data
    with pytest.raises(KeyError):
        blobs.get_own("t", "raw/missing")
    with pytest.raises(KeyError):
        blobs.get_own("t2", "raw/e1")  # another tenant's


def test_large_blobs_go_to_gridfs_in_chunks(store: Store) -> None:
    from shared.blobs import INLINE_LIMIT

    blobs = GridFsBlobStore(store)
    big = b"x" * (INLINE_LIMIT + 1)
    blobs.put("raw/big", big, tenant_id="t", content_type="message/rfc822")
    assert blobs.get_own("t", "raw/big") == big
    assert store["blobs"].find_one({"_id": "raw/big"}) is None
    assert store.db["rawmail.files"].find_one({"_id": "raw/big"}) is not None
    with pytest.raises(LookupError, match="another tenant"):  # its key, another tenant's file
        blobs.put("raw/big", b"y" * len(big), tenant_id="t2", content_type="message/rfc822")
    assert blobs.get_own("t", "raw/big") == big


def test_deferred_blobs_are_written_together_at_flush_or_once_enough_is_kept(
    store: Store,
) -> None:
    from shared.blobs import PENDING_LIMIT

    blobs = GridFsBlobStore(store, deferred=True)
    store["blobs"].insert_one({"_id": "att/e0/0", "tenant_id": "t", "data": b"first"})
    for key in ("att/e0/0", "att/e1/0", "att/e2/0"):
        blobs.put(key, key.encode(), tenant_id="t", content_type="text/plain")
    assert store["blobs"].count_documents({}) == 1  # kept, not written
    assert blobs.get_own("t", "att/e1/0") == b"att/e1/0"  # a kept blob reads back
    blobs.flush()
    assert {d["_id"]: bytes(d["data"]) for d in store["blobs"].find()} == {
        "att/e0/0": b"first",  # a key stored already stays as it was
        "att/e1/0": b"att/e1/0",
        "att/e2/0": b"att/e2/0",
    }
    half = b"x" * (PENDING_LIMIT // 2)
    blobs.put("att/e3/0", half, tenant_id="t", content_type="application/octet-stream")
    assert store["blobs"].count_documents({}) == 3
    blobs.put("att/e3/1", half, tenant_id="t", content_type="application/octet-stream")
    assert store["blobs"].count_documents({}) == 5  # the limit reached: written at once


@pytest.mark.parametrize("batch", [3, 25], ids=["small", "large"])
def test_taken_fingerprints_are_found_alike_in_small_and_large_batches(
    store: Store, batch: int
) -> None:
    mine, theirs = MongoTakenMail(store, "t1"), MongoTakenMail(store, "t2")
    mine.remember("a1", [("fp-1", "e1"), ("fp-2", "e2")])
    theirs.remember("b1", [("fp-3", "e3")])
    asked = ["fp-1", "fp-2", "fp-3"] + [f"fp-new-{i}" for i in range(batch - 3)]
    assert mine.known("a1", asked) == {"fp-1", "fp-2"}
    assert theirs.known("b1", asked) == {"fp-3"}
    assert mine.known("a1", []) == set()


def test_a_resumed_load_counts_on_from_the_position_its_batch_saved(store: Store) -> None:
    store.accounts.insert_one({"_id": "a1", "tenant_id": "t1"})
    positions = MongoPositionStore(store, "t1")
    now = datetime.now(UTC)
    assert positions.begin_progress("a1", remaining=2000, now=now) == 0
    positions.advance("a1", "INBOX", Position(7, 400), done=400, now=now)
    assert positions.get("a1", "INBOX") == Position(7, 400)
    # After a restart the load goes on with what the saved position leaves.
    assert positions.begin_progress("a1", remaining=1600, now=now) == 400
    assert store.accounts.find_one({"_id": "a1"})["progress"]["total"] == 2000  # type: ignore[index]


def test_a_resumed_load_counts_mail_marked_read_but_not_counted_as_done(store: Store) -> None:
    """A run died after marking a batch read, before saving its position and count: that
    batch is not fetched again (it is read), and the load still ends at its total."""
    store.accounts.insert_one({"_id": "a1", "tenant_id": "t1"})
    positions = MongoPositionStore(store, "t1")
    now = datetime.now(UTC)
    positions.begin_progress("a1", remaining=2000, now=now)
    positions.advance("a1", "INBOX", Position(7, 500), done=500, now=now)
    assert positions.begin_progress("a1", remaining=1400, now=now) == 600
    assert store.accounts.find_one({"_id": "a1"})["progress"]["total"] == 2000  # type: ignore[index]
    # New mail since: counted on top, nothing taken back.
    positions.advance("a1", "INBOX", Position(7, 700), done=700, now=now)
    assert positions.begin_progress("a1", remaining=1400, now=now) == 700
    assert store.accounts.find_one({"_id": "a1"})["progress"]["total"] == 2100  # type: ignore[index]


def _matches(doc: dict[str, object], field: str, wanted: set[str]) -> bool:
    """MongoDB's equality on a string: the value itself, or any element of an array."""
    value = doc.get(field)
    return any(v in wanted for v in (value if isinstance(value, list) else [value]))


def test_filters_on_ids_and_strings_find_exactly_what_they_match(store: Store) -> None:
    """The queries the stages send find what MongoDB would (the local store reads them
    through its indexes and pushed-down conditions, then applies the whole filter)."""
    docs = [
        {"_id": f"c{i}", "tenant_id": ["t1", "t2"][i % 2] if i % 11 else ["t1", "t3"],
         "emails": [f"a{i}@x.org"] if i % 3 else [f"a{i}@x.org", f"b{i}@x.org"],
         "n": i, "note": f"a{i}@x.org" if i % 7 == 0 else i}
        for i in range(400)
    ]  # fmt: skip
    store.customers.insert_many(docs)
    addresses = {f"a{i}@x.org" for i in range(0, 400, 7)} | {
        f"b{i}@x.org" for i in range(0, 400, 9)
    }
    ids = {f"c{i}" for i in range(0, 400, 13)} | {"missing"}
    cases = [
        ({"tenant_id": "t1", "emails": {"$in": sorted(addresses)}},
         lambda d: _matches(d, "tenant_id", {"t1"}) and _matches(d, "emails", addresses)),
        ({"emails": "b9@x.org"}, lambda d: _matches(d, "emails", {"b9@x.org"})),
        ({"note": {"$in": sorted(addresses)}}, lambda d: _matches(d, "note", addresses)),
        ({"tenant_id": "t2", "_id": {"$in": sorted(ids)}},
         lambda d: d["_id"] in ids and _matches(d, "tenant_id", {"t2"})),
        ({"_id": "c13", "n": {"$gt": 100}}, lambda d: False),
        ({"_id": {"$in": ["c1", 5]}}, lambda d: d["_id"] == "c1"),
        ({"n": {"$in": [1, "a1@x.org"]}}, lambda d: d["n"] == 1),
    ]  # fmt: skip
    for query, expected in cases:
        found = sorted(d["_id"] for d in store.customers.find(query))
        assert found == sorted(d["_id"] for d in docs if expected(d)), query
        assert store.customers.count_documents(query) == len(found), query


def _holds(doc: dict[str, object], wanted: set[str]) -> bool:
    """MongoDB's equality of `tag` with a string: its value, or an element of its array."""
    value = doc.get("tag")
    return any(
        isinstance(v, str) and v in wanted for v in (value if isinstance(value, list) else [value])
    )


def test_string_lookups_follow_every_write_and_index_change(store: Store) -> None:
    """An indexed field compared to strings is looked up (the local store's values table,
    kept by its triggers): each insert, update and delete, an index made over documents
    already there and an index dropped leave the lookup finding what MongoDB would."""
    things = store["things"]
    shapes: list[object] = ["x", ["x", "y"], {"a": "x"}, [{"a": "x"}], 5, "y", ["y", "z"], None]
    things.insert_many([{"_id": f"d{i}", "tag": tag} for i, tag in enumerate(shapes)])
    things.insert_one({"_id": "none"})

    def found(value: object) -> list[str]:
        return sorted(d["_id"] for d in things.find({"tag": value}))

    def check() -> None:
        for value in ("x", "y", "z", {"$in": ["x", "z"]}):
            wanted = {value} if isinstance(value, str) else set(value["$in"])  # type: ignore[index]
            expected = sorted(d["_id"] for d in things.find({}) if _holds(d, wanted))
            assert found(value) == expected, value

    check()
    things.create_index([("tag", ASCENDING)])  # over what is there
    assert found("x") == ["d0", "d1"]
    check()
    things.update_one({"_id": "d0"}, {"$set": {"tag": ["y"]}})
    things.update_one({"_id": "d5"}, {"$set": {"tag": ["x", "z"]}})  # was "y"
    things.update_many({"tag": "z"}, {"$push": {"tag": "w"}})
    things.delete_one({"_id": "d1"})
    things.insert_one({"_id": "new", "tag": ["q", "x"]})
    assert found("x") == ["d5", "new"]
    check()
    things.drop_index("tag_1")
    things.insert_one({"_id": "after", "tag": "x"})
    assert found("x") == ["after", "d5", "new"]
    check()


@pytest.mark.parametrize("ordered", [True, False])
def test_an_insert_failing_on_a_duplicate_leaves_no_part_of_its_batch_behind(
    store: Store, ordered: bool
) -> None:
    """The store inserts a batch with one statement and, when it fails on a duplicate _id,
    again one document at a time: the failed statement leaves nothing behind, neither rows
    nor the lookup entries of their indexed strings."""
    things = store["things"]
    things.create_index([("tag", ASCENDING)])
    things.insert_one({"_id": "d3", "tag": "old"})
    docs = [{"_id": f"d{i}", "tag": ["new", f"t{i}"]} for i in range(6)]
    with pytest.raises(BulkWriteError) as failed:
        things.insert_many(docs, ordered=ordered)
    assert [e["index"] for e in failed.value.details["writeErrors"]] == [3]
    stored = ["d0", "d1", "d2"] if ordered else ["d0", "d1", "d2", "d4", "d5"]
    assert sorted(d["_id"] for d in things.find({"tag": "new"})) == stored
    assert sorted(d["_id"] for d in things.find({"tag": "old"})) == ["d3"]
    assert [d["_id"] for d in things.find({"tag": "t3"})] == []
    assert things.count_documents({}) == len(stored) + 1


def test_hundreds_of_updates_written_in_chunks_complete(store: Store) -> None:
    """Hundreds of updates, as the assigner writes a batch: in commands of WRITE_CHUNK
    statements (the local store holds each matched statement's read until its command ends,
    on 100 connections per database)."""
    store.customers.insert_many([{"_id": f"c{i}", "tenant_id": "t"} for i in range(300)])
    matched = bulk_write_in_chunks(
        store.customers,
        [
            UpdateOne({"tenant_id": "t", "_id": f"c{i}"}, {"$set": {"manager_id": f"m{i % 3}"}})
            for i in range(300)
        ],
        ordered=False,
    )
    assert matched == 300
    assert store.customers.count_documents({"tenant_id": "t", "manager_id": "m1"}) == 100


@pytest.mark.parametrize("count", [50, 1200])
def test_a_batch_of_updates_writes_the_documents_it_names_and_no_other(
    store: Store, count: int
) -> None:
    """Updates by _id, in chunks: each named document gets its own new value, an _id not
    there matches nothing, the rest stay as they were, and lookups by an indexed string
    follow (the local store's values table)."""
    things = store["things"]
    things.create_index([("tag", ASCENDING)])
    oid = ObjectId()
    things.insert_many([{"_id": f"c{i}", "tag": "old", "n": i} for i in range(count + 10)])
    things.insert_one({"_id": oid, "tag": "old", "n": -1})
    named = [f"c{i}" for i in range(count)] + [oid, "missing"]
    matched = bulk_write_in_chunks(
        things,
        [UpdateOne({"_id": i}, {"$set": {"tag": ["new", f"t-{i}"]}}) for i in named],
        ordered=False,
    )
    assert matched == count + 1
    assert sorted(map(str, (d["_id"] for d in things.find({"tag": "new"})))) == sorted(
        map(str, named[:-1])
    )
    assert [d["_id"] for d in things.find({"tag": f"t-{oid}"})] == [oid]
    assert [d["n"] for d in things.find({"tag": "t-c7"})] == [7]
    assert sorted(d["_id"] for d in things.find({"tag": "old"})) == sorted(
        f"c{i}" for i in range(count, count + 10)
    )


def test_each_statement_of_an_update_sees_what_the_ones_before_it_wrote(store: Store) -> None:
    """Later statements of an update command match on what earlier ones changed."""
    store.customers.insert_many([{"_id": f"c{i}", "tenant_id": "t", "n": 0} for i in range(3)])
    result = store.customers.bulk_write(
        [
            UpdateOne({"_id": "c0"}, {"$inc": {"n": 1}}),
            UpdateOne({"_id": "c0", "n": 1}, {"$inc": {"n": 10}}),
            UpdateOne({"tenant_id": "t", "n": 0}, {"$set": {"n": 5}}),  # the first of c1, c2
            UpdateOne({"_id": "c2", "n": 11}, {"$set": {"n": -1}}),  # matches nothing
        ],
        ordered=True,
    )
    assert (result.matched_count, result.modified_count) == (3, 3)
    found = {d["_id"]: d["n"] for d in store.customers.find({"tenant_id": "t"})}
    assert found["c0"] == 11
    assert sorted([found["c1"], found["c2"]]) == [0, 5]


def test_a_query_run_again_reads_what_is_there_now(store: Store) -> None:
    """The same query, run again and again (the local store keeps its prepared statement per
    connection): each run reads the writes before it, a cursor still open meanwhile reads on
    undisturbed, and a collection dropped and made again, with other indexes, is read anew."""
    things = store["things"]
    things.insert_many([{"_id": f"d{i:03}", "tag": "x", "n": i} for i in range(300)])

    def tagged() -> list[int]:
        return [d["n"] for d in things.find({"tag": "x"}, sort=[("_id", ASCENDING)])]

    assert tagged() == list(range(300))
    open_cursor = things.find({"tag": "x"}, sort=[("_id", ASCENDING)], batch_size=10)
    first = [next(open_cursor)["n"] for _ in range(5)]
    things.update_one({"_id": "d000"}, {"$set": {"tag": "y"}})
    things.insert_one({"_id": "d999", "tag": "x", "n": 999})
    assert tagged() == [*range(1, 300), 999]
    rest = [d["n"] for d in open_cursor]  # a later insert may or may not be seen
    assert first + rest[:295] == list(range(300)) and rest[295:] in ([], [999])
    things.drop()
    things.create_index([("tag", ASCENDING)])
    things.insert_many([{"_id": "a", "tag": ["x"], "n": -1}, {"_id": "b", "tag": "z", "n": -2}])
    assert tagged() == [-1]
    things.drop_index("tag_1")
    assert tagged() == [-1]


def test_own_cache_answers_a_batch_from_one_read_and_checks_the_tenant(store: Store) -> None:
    store.customers.insert_many(
        [{"_id": "c1", "tenant_id": "t1"}, {"_id": "c2", "tenant_id": "t2"}]
    )
    cache = OwnCache(store.customers)
    cache.load([("t1", "c1"), ("t1", "c2"), ("t1", "c3")])
    store.customers.delete_many({})  # from here on only what was read answers
    assert cache.get("t1", "c1") == {"_id": "c1", "tenant_id": "t1"}
    assert cache.get("t1", "c2") is None and cache.get("t1", "c3") is None
    cache.put({"_id": "c3", "tenant_id": "t1", "x": 1})
    cache.put({"_id": "c4", "tenant_id": "t1"})  # not read in this batch: not kept
    assert cache.get("t1", "c3") == {"_id": "c3", "tenant_id": "t1", "x": 1}
    assert cache.get("t1", "c4") is None  # read from the store, where it is not


# A write of six statements, and what a run after the crash leaves written: all six, but an
# ordered insert stops at the first _id that exists (the assigner's slots rely on that).
CRASHING_WRITES = {
    "update": (
        "bulk_write_in_chunks(things, [UpdateOne({'_id': i}, {'$set': {'done': True}})"
        " for i in range(6)], ordered=False)",
        [0, 1, 2, 3, 4, 5],
    ),
    "insert": (
        "insert_many_or_ignore(things, [{'_id': i, 'done': True} for i in range(6)])",
        [0, 1, 2, 3, 4, 5],
    ),
    "insert in order": (
        "insert_in_order(things, [{'_id': i, 'done': True} for i in range(6)])",
        [0, 1, 2],
    ),
}


@pytest.mark.parametrize("write", CRASHING_WRITES)
def test_the_crash_hook_kills_the_process_half_way_through_a_bulk_write_once(
    store: Store, settings: Settings, tmp_path: Path, write: str
) -> None:
    """The fault suite's crash in the middle of a bulk write: the first process to take the
    marker writes the first half of the statements and dies by SIGKILL; the next one runs the
    write whole."""
    code, after_rerun = CRASHING_WRITES[write]
    things = store["things"]
    if write == "update":
        things.insert_many([{"_id": i, "done": False} for i in range(6)])
    program = (
        "from pymongo import UpdateOne\n"
        "from shared.store import Store, bulk_write_in_chunks, insert_in_order, "
        "insert_many_or_ignore\n"
        f"things = Store({settings.mongo_url.get_secret_value()!r}, "
        f"{settings.mongo_database!r})['things']\n"
        f"{code}\n"
    )
    env = settings_env(settings) | {CRASH_MID_WRITE_ENV: f"things:{tmp_path / 'crashed'}"}

    def run() -> int:
        return subprocess.run([sys.executable, "-c", program], env=env, cwd=REPO).returncode

    assert run() == -9
    assert sorted(d["_id"] for d in things.find({"done": True})) == [0, 1, 2]
    assert run() == 0
    assert sorted(d["_id"] for d in things.find({"done": True})) == after_rerun
