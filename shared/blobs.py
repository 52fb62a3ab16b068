"""Raw mail and attachments stored once, keyed by a deterministic name.

Up to INLINE_LIMIT a blob is one document of the `blobs` collection (one insert, one read by
_id); larger ones go to GridFS, which splits them into chunks. Those are written and read
here by the GridFS spec (`rawmail.chunks`: files_id, n, data; `rawmail.files` written last),
a few chunks at a time, so a put or a read holds the blob once plus one group of chunks
(pymongo's GridFS and every GridFS reader read the files alike).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from bson import Binary, Int64
from pymongo import ASCENDING
from pymongo.errors import BulkWriteError

from shared.errors import TransientError
from shared.store import (  # the crash hook's two halves: a put is a bulk write too
    DUPLICATE_KEY,
    Doc,
    Store,
    crash_mid_write,
    die_mid_write,
    insert_many_or_ignore,
    insert_or_ignore,
    store_errors,
)

MiB = 1024 * 1024
INLINE_LIMIT = 8 * MiB  # well under MongoDB's 16 MiB document limit
PENDING_LIMIT = 16 * MiB  # deferred: kept blobs are written once they reach this
CHUNK_SIZE = 255 * 1024  # GridFS's default chunk size
GROUP_CHUNKS = 16  # chunks sent per insert_many and read per batch: about 4 MiB
_CHUNKS_INDEX = [("files_id", ASCENDING), ("n", ASCENDING)]
_FILES_INDEX = [("filename", ASCENDING), ("uploadDate", ASCENDING)]


class CorruptBlobError(TransientError):
    """Raised when a stored GridFS file's chunks do not add up to its length."""


@dataclass(frozen=True)
class BlobStream:
    """A blob's length and its pieces, read as they are taken."""

    length: int
    pieces: Iterator[bytes]


def _read_errors(cursor: Iterable[Doc]) -> Iterator[Doc]:
    """The cursor's documents, a store error on the way a TransientError (as store_errors)."""
    iterator = iter(cursor)
    while True:
        with store_errors("read blob"):
            doc = next(iterator, None)
        if doc is None:
            return
        yield doc


class GridFsBlobStore:
    """Idempotent puts: a key already stored is kept; a GridFS write that died is rewritten.

    `deferred`: blobs stored inline are kept (and read) until `flush` (or until PENDING_LIMIT
    bytes are kept), which writes them with one command; the binder's unit of work flushes
    before it stores the e-mails that name them. `discard` drops what is kept.
    """

    def __init__(self, store: Store, *, deferred: bool = False) -> None:
        self._blobs = store["blobs"]
        self._fs = store.gridfs()
        self._files, self._chunks = store["rawmail.files"], store["rawmail.chunks"]
        self._indexed = False
        self._pending: dict[str, Doc] | None = {} if deferred else None
        self._pending_bytes = 0

    def put(self, key: str, data: bytes, *, tenant_id: str, content_type: str) -> str:
        if len(data) <= INLINE_LIMIT:
            doc = {
                "_id": key,
                "tenant_id": tenant_id,
                "content_type": content_type,
                "data": Binary(data),
            }
            if self._pending is None:
                with store_errors("store blob"):
                    insert_or_ignore(self._blobs, doc)
                return key
            self._pending.setdefault(key, doc)
            self._pending_bytes += len(data)
            if self._pending_bytes >= PENDING_LIMIT:
                self.flush()
            return key
        with store_errors("store blob"):
            if self._fs.exists({"_id": key, "tenant_id": tenant_id}):  # files document: last
                return key
            # On purpose by _id alone: GridFS keys files by _id across tenants, and deletes a
            # file with its chunks (which carry no tenant) by _id alone; another tenant's file
            # of this key is never deleted here.
            if self._fs.exists(key):
                raise LookupError(f"blob {key} exists in another tenant")
            self._ensure_indexes()
            self._chunks.delete_many({"files_id": key})  # left by a write that died half-way
            self._write_chunks(key, data)
            self._write_file(key, len(data), tenant_id=tenant_id, content_type=content_type)
        return key

    def _ensure_indexes(self) -> None:
        """The GridFS spec's indexes (chunks unique by file and number), once per store."""
        if not self._indexed:
            self._chunks.create_index(_CHUNKS_INDEX, unique=True)
            self._files.create_index(_FILES_INDEX)
            self._indexed = True

    def _write_chunks(self, key: str, data: bytes) -> None:
        """`data` as GridFS chunks of CHUNK_SIZE, GROUP_CHUNKS per insert: only one group's
        chunks are copied (and encoded) at a time, never the whole of `data`."""
        view = memoryview(data)
        count = -(-len(view) // CHUNK_SIZE)
        groups = range(0, count, GROUP_CHUNKS)
        crash_at = crash_mid_write(self._chunks, len(groups))  # the fault suite's test hook
        for number, first in enumerate(groups):
            if number == crash_at:
                die_mid_write()
            group = [
                {
                    "files_id": key,
                    "n": n,
                    "data": bytes(view[n * CHUNK_SIZE : (n + 1) * CHUNK_SIZE]),
                }
                for n in range(first, min(first + GROUP_CHUNKS, count))
            ]
            try:
                self._chunks.insert_many(group, ordered=True)
            except BulkWriteError as exc:  # a chunk of the key stored since: another writer's
                errors = exc.details.get("writeErrors", [])
                if not errors or any(e.get("code") != DUPLICATE_KEY for e in errors):
                    raise
                raise TransientError(f"blob {key} is being written by another writer") from exc

    def _write_file(self, key: str, length: int, *, tenant_id: str, content_type: str) -> None:
        """The files document, last: the file exists once all its chunks do."""
        doc = {
            "_id": key,
            "length": Int64(length),
            "chunkSize": CHUNK_SIZE,
            "uploadDate": datetime.now(UTC),
            "tenant_id": tenant_id,
            "contentType": content_type,
        }
        if not insert_or_ignore(self._files, doc):  # stored meanwhile by another writer
            stored = self._files.find_one({"_id": key, "tenant_id": tenant_id}, {"_id": 1})
            if stored is None:
                raise LookupError(f"blob {key} exists in another tenant")

    def discard(self) -> None:
        """Forget the kept blobs (a batch that did not commit is handled again)."""
        if self._pending is not None:
            self._pending, self._pending_bytes = {}, 0

    def flush(self) -> None:
        """Write the kept blobs with one command (those stored already stay as they are)."""
        if not self._pending:
            return
        docs, self._pending, self._pending_bytes = list(self._pending.values()), {}, 0
        with store_errors("store blobs"):
            insert_many_or_ignore(self._blobs, docs)

    def get_own(self, tenant_id: str, ref: str) -> bytes:
        """The tenant's blob `ref`; KeyError when absent or another tenant's."""
        kept = (self._pending or {}).get(ref)
        if kept is not None and kept["tenant_id"] == tenant_id:
            return bytes(kept["data"])
        doc, file = self._find_own(tenant_id, ref)
        if doc is not None:
            return bytes(doc["data"])
        return self._read_file(file)

    def open_own(self, tenant_id: str, ref: str) -> BlobStream:
        """The tenant's blob `ref` as its length and its pieces, read from the store as they
        are taken (a GridFS file a chunk at a time); KeyError when absent or another tenant's.
        What a download sends without ever holding the whole blob."""
        doc, file = self._find_own(tenant_id, ref)
        if doc is not None:
            data = bytes(doc["data"])
            return BlobStream(len(data), iter([data]))
        return BlobStream(int(file["length"]), self._file_pieces(file))

    def _find_own(self, tenant_id: str, ref: str) -> tuple[Doc | None, Doc]:
        """(the inline document, {}) or (None, the GridFS files document) of the tenant's blob."""
        own = {"_id": ref, "tenant_id": tenant_id}
        with store_errors("read blob"):
            doc = self._blobs.find_one(own)
            if doc is not None:
                return doc, {}
            stored = self._files.find_one(own)
        if stored is None:
            raise KeyError(f"no stored blob {ref!r}")
        return None, stored

    def _read_file(self, file: Doc) -> bytes:
        """The whole content of a GridFS file, read into one buffer of its length: chunks come
        GROUP_CHUNKS at a time and are copied in, never all held besides the result."""
        length = int(file["length"])
        buffer = io.BytesIO()
        if length:  # sized at once: the chunks are written into it, never reallocated
            buffer.seek(length - 1)
            buffer.write(b"\0")
            buffer.seek(0)
        for data in self._file_pieces(file):
            buffer.write(data)
        # getvalue() hands over the buffer's own bytes (no copy) when it is full and unshared.
        return buffer.getvalue()

    def _file_pieces(self, file: Doc) -> Iterator[bytes]:
        """A GridFS file's chunks in order, each checked against the file's length and chunk
        size; CorruptBlobError at a missing, extra or wrongly sized one."""
        length, chunk_size = int(file["length"]), int(file["chunkSize"])
        done = 0
        for n, data in enumerate(self._chunk_data(file["_id"])):
            expected = min(chunk_size, length - n * chunk_size)
            if n * chunk_size >= length and not data:
                continue  # the spec lets an empty chunk past the end be
            if len(data) != expected:
                raise CorruptBlobError(
                    f"blob {file['_id']}: chunk {n} has {len(data)} bytes, not {expected}"
                )
            done += len(data)
            yield data
        if done != length:
            raise CorruptBlobError(f"blob {file['_id']}: {done} of {length} bytes stored")

    def _chunk_data(self, file_id: object) -> Iterator[bytes]:
        """The file's chunks' data in order; CorruptBlobError at a missing or extra one."""
        with store_errors("read blob"):
            cursor = self._chunks.find(
                {"files_id": file_id}, {"_id": 0, "n": 1, "data": 1}, sort=_CHUNKS_INDEX
            ).batch_size(GROUP_CHUNKS)
        with cursor:
            for expected, chunk in enumerate(_read_errors(cursor)):
                if chunk["n"] != expected:
                    raise CorruptBlobError(f"blob {file_id}: chunk {expected} is missing")
                yield bytes(chunk["data"])

    def delete_own(self, tenant_id: str, ref: str) -> None:
        """Remove the tenant's blob `ref`, if it is stored (safe to repeat)."""
        own = {"_id": ref, "tenant_id": tenant_id}
        with store_errors("delete blob"):
            self._blobs.delete_one(own)
            if self._fs.find_one(own) is not None:  # the tenant's: GridFS deletes by _id
                self._fs.delete(ref)
