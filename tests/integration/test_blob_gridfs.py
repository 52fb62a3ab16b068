"""Large blobs in GridFS, written and read a few chunks at a time by the GridFS spec: pymongo's
own GridFS reads them, a write that died (or was killed) is redone whole, a stored key is kept,
another tenant's file of the key is never touched."""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import gridfs
import pytest
from pymongo import MongoClient, monitoring

import shared.store
from shared.blobs import CHUNK_SIZE, GROUP_CHUNKS, INLINE_LIMIT, CorruptBlobError, GridFsBlobStore
from shared.settings import Settings
from shared.store import CRASH_MID_WRITE_ENV, Store
from tests.conftest import settings_env
from tests.services import REPO

pytestmark = pytest.mark.integration

KEY = "raw/e1"
MAIL = "message/rfc822"


class Commands(monitoring.CommandListener):
    """The commands sent on GridFS's collections: (name, collection, documents or batch size)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        name, command = event.command_name, event.command
        collection = command.get(name)
        if name == "getMore":
            collection = command.get("collection")
        if not str(collection).startswith("rawmail."):
            return
        if name == "insert":
            self.sent.append((name, collection, list(command.get("documents", []))))
        elif name in ("find", "getMore"):
            self.sent.append((name, collection, command.get("batchSize")))
        else:
            self.sent.append((name, collection, None))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def inserts(self) -> list[tuple[str, list[dict[str, Any]]]]:
        return [(collection, docs) for name, collection, docs in self.sent if name == "insert"]


@pytest.fixture
def watched(
    settings: Settings, store: Store, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Store, Commands]]:
    """A store of the test's database whose commands on GridFS's collections are recorded."""
    listener = Commands()
    monkeypatch.setattr(
        shared.store, "MongoClient", partial(MongoClient, event_listeners=[listener])
    )
    own = Store(settings.mongo_url.get_secret_value(), settings.mongo_database)
    yield own, listener
    own.close()


def big_blob(seed: int = 1) -> bytes:
    """More than INLINE_LIMIT, and not a whole number of chunks."""
    return random.Random(seed).randbytes(INLINE_LIMIT + 3 * CHUNK_SIZE + 1234)


def chunk_count(data: bytes) -> int:
    return -(-len(data) // CHUNK_SIZE)


def test_a_large_blob_is_written_a_group_of_chunks_at_a_time_and_pymongo_reads_it(
    watched: tuple[Store, Commands],
) -> None:
    store, commands = watched
    data = big_blob()
    GridFsBlobStore(store).put(KEY, data, tenant_id="t", content_type=MAIL)

    inserts = commands.inserts()
    chunk_inserts = [docs for collection, docs in inserts if collection == "rawmail.chunks"]
    assert all(len(docs) <= GROUP_CHUNKS for docs in chunk_inserts), [len(d) for d in chunk_inserts]
    assert sum(len(docs) for docs in chunk_inserts) == chunk_count(data)
    assert inserts[-1][0] == "rawmail.files"  # the file is written last, after every chunk
    file = store.db["rawmail.files"].find_one({"_id": KEY})
    assert file is not None
    assert (file["length"], file["chunkSize"]) == (len(data), CHUNK_SIZE)
    assert (file["tenant_id"], file["contentType"]) == ("t", MAIL)
    assert "uploadDate" in file
    chunks = store.db["rawmail.chunks"].find({"files_id": KEY}, sort=[("n", 1)])
    assert [c["n"] for c in chunks] == list(range(chunk_count(data)))
    assert gridfs.GridFS(store.db, collection="rawmail").get(KEY).read() == data
    assert (
        gridfs.GridFSBucket(store.db, bucket_name="rawmail").open_download_stream(KEY).read()
        == data
    )


def test_a_large_blob_is_read_a_group_of_chunks_at_a_time_into_bytes(
    watched: tuple[Store, Commands],
) -> None:
    store, commands = watched
    data = big_blob()
    gridfs.GridFS(store.db, collection="rawmail").put(
        data, _id=KEY, tenant_id="t", contentType=MAIL
    )  # written by pymongo: read alike
    commands.sent.clear()
    got = GridFsBlobStore(store).get_own("t", KEY)
    assert type(got) is bytes and got == data
    reads = [batch for name, collection, batch in commands.sent if collection == "rawmail.chunks"]
    assert reads and all(batch == GROUP_CHUNKS for batch in reads), commands.sent


def test_a_write_that_died_half_way_is_redone_whole_with_no_chunk_left_over(store: Store) -> None:
    data = big_blob()
    left = [{"files_id": KEY, "n": n, "data": b"z" * CHUNK_SIZE} for n in range(3)]
    left.append({"files_id": KEY, "n": chunk_count(data) + 5, "data": b"stray"})
    store.db["rawmail.chunks"].insert_many(left)  # no files document: the write died

    GridFsBlobStore(store).put(KEY, data, tenant_id="t", content_type=MAIL)

    chunks = store.db["rawmail.chunks"].find({"files_id": KEY}, sort=[("n", 1)])
    assert [c["n"] for c in chunks] == list(range(chunk_count(data)))
    assert gridfs.GridFS(store.db, collection="rawmail").get(KEY).read() == data
    assert GridFsBlobStore(store).get_own("t", KEY) == data


def test_a_second_put_of_a_stored_key_writes_nothing(watched: tuple[Store, Commands]) -> None:
    store, commands = watched
    blobs = GridFsBlobStore(store)
    data = big_blob()
    blobs.put(KEY, data, tenant_id="t", content_type=MAIL)
    before = store.db["rawmail.files"].find_one({"_id": KEY})
    commands.sent.clear()

    assert blobs.put(KEY, big_blob(2), tenant_id="t", content_type=MAIL) == KEY

    assert [name for name, _, _ in commands.sent if name in ("insert", "delete")] == []
    assert store.db["rawmail.files"].find_one({"_id": KEY}) == before
    assert blobs.get_own("t", KEY) == data


def test_another_tenants_key_is_refused_and_its_file_left_whole(store: Store) -> None:
    blobs = GridFsBlobStore(store)
    data = big_blob()
    blobs.put(KEY, data, tenant_id="a", content_type=MAIL)
    chunks_before = list(store.db["rawmail.chunks"].find({"files_id": KEY}, sort=[("n", 1)]))

    with pytest.raises(LookupError, match=f"blob {KEY} exists in another tenant"):
        blobs.put(KEY, big_blob(2), tenant_id="b", content_type=MAIL)

    assert list(store.db["rawmail.chunks"].find({"files_id": KEY}, sort=[("n", 1)])) == (
        chunks_before
    )
    assert store.db["rawmail.files"].find_one({"_id": KEY})["tenant_id"] == "a"  # type: ignore[index]
    assert blobs.get_own("a", KEY) == data
    with pytest.raises(KeyError):
        blobs.get_own("b", KEY)


def test_a_file_with_a_chunk_missing_is_refused_naming_the_blob(store: Store) -> None:
    blobs = GridFsBlobStore(store)
    blobs.put(KEY, big_blob(), tenant_id="t", content_type=MAIL)
    store.db["rawmail.chunks"].delete_one({"files_id": KEY, "n": 5})
    with pytest.raises(CorruptBlobError, match=f"blob {KEY}: chunk 5 is missing"):
        blobs.get_own("t", KEY)


def test_a_put_killed_half_way_leaves_no_file_and_the_next_put_stores_it_whole(
    store: Store, settings: Settings, tmp_path: Path
) -> None:
    """The fault suite's crash hook: the process dies by SIGKILL after the first half of a
    put's chunk inserts; readers find no blob, and the put run again stores it whole."""
    program = (
        "from shared.blobs import GridFsBlobStore\n"
        "from shared.store import Store\n"
        "from tests.integration.test_blob_gridfs import KEY, MAIL, big_blob\n"
        f"store = Store({settings.mongo_url.get_secret_value()!r}, {settings.mongo_database!r})\n"
        "GridFsBlobStore(store).put(KEY, big_blob(), tenant_id='t', content_type=MAIL)\n"
    )
    env = settings_env(settings) | {CRASH_MID_WRITE_ENV: f"rawmail.chunks:{tmp_path / 'crashed'}"}

    def run() -> int:
        return subprocess.run([sys.executable, "-c", program], env=env, cwd=REPO).returncode

    data = big_blob()
    assert run() == -9
    assert store.db["rawmail.chunks"].count_documents({"files_id": KEY}) == GROUP_CHUNKS
    assert store.db["rawmail.files"].find_one({"_id": KEY}) is None
    with pytest.raises(KeyError, match=KEY):
        GridFsBlobStore(store).get_own("t", KEY)
    assert run() == 0
    chunks = store.db["rawmail.chunks"].find({"files_id": KEY}, sort=[("n", 1)])
    assert [c["n"] for c in chunks] == list(range(chunk_count(data)))
    assert gridfs.GridFS(store.db, collection="rawmail").get(KEY).read() == data
