"""Raw mail and attachments stored once, keyed by a deterministic name.

Up to INLINE_LIMIT a blob is one document of the `blobs` collection (one insert, one read by
_id); larger ones go to GridFS, which splits them into chunks.
"""

from __future__ import annotations

from bson import Binary

from shared.store import Doc, Store, insert_many_or_ignore, insert_or_ignore, store_errors

INLINE_LIMIT = 8 * 1024 * 1024  # well under MongoDB's 16 MiB document limit
PENDING_LIMIT = 16 * 1024 * 1024  # deferred: kept blobs are written once they reach this


class GridFsBlobStore:
    """Idempotent puts: a key already stored is kept; a GridFS write that died is rewritten.

    `deferred`: blobs stored inline are kept (and read) until `flush` (or until PENDING_LIMIT
    bytes are kept), which writes them with one command; the binder's unit of work flushes
    before it stores the e-mails that name them. `discard` drops what is kept.
    """

    def __init__(self, store: Store, *, deferred: bool = False) -> None:
        self._blobs = store["blobs"]
        self._fs = store.gridfs()
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
            self._fs.delete(key)  # chunks left by a write that died half-way
            self._fs.put(data, _id=key, tenant_id=tenant_id, contentType=content_type)
        return key

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
        own = {"_id": ref, "tenant_id": tenant_id}
        with store_errors("read blob"):
            doc = self._blobs.find_one(own)
            if doc is not None:
                return bytes(doc["data"])
            stored = self._fs.find_one(own)
            if stored is None:
                raise KeyError(f"no stored blob {ref!r}")
            return bytes(stored.read())

    def delete_own(self, tenant_id: str, ref: str) -> None:
        """Remove the tenant's blob `ref`, if it is stored (safe to repeat)."""
        own = {"_id": ref, "tenant_id": tenant_id}
        with store_errors("delete blob"):
            self._blobs.delete_one(own)
            if self._fs.find_one(own) is not None:  # the tenant's: GridFS deletes by _id
                self._fs.delete(ref)
