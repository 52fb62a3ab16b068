"""Raw mail and attachments stored once, keyed by a deterministic name.

Up to INLINE_LIMIT a blob is one document of the `blobs` collection (one insert, one read by
_id); larger ones go to GridFS, which splits them into chunks.
"""

from __future__ import annotations

import gridfs
from bson import Binary

from shared.store import Store, insert_or_ignore, store_errors

INLINE_LIMIT = 8 * 1024 * 1024  # well under MongoDB's 16 MiB document limit


class GridFsBlobStore:
    """Idempotent puts: a key already stored is kept; a GridFS write that died is rewritten."""

    def __init__(self, store: Store) -> None:
        self._blobs = store["blobs"]
        self._fs = store.gridfs()

    def put(self, key: str, data: bytes, *, tenant_id: str, content_type: str) -> str:
        with store_errors("store blob"):
            if len(data) <= INLINE_LIMIT:
                insert_or_ignore(
                    self._blobs,
                    {
                        "_id": key,
                        "tenant_id": tenant_id,
                        "content_type": content_type,
                        "data": Binary(data),
                    },
                )
                return key
            if self._fs.exists(key):  # the files document is written last: complete
                return key
            self._fs.delete(key)  # chunks left by a write that died half-way
            self._fs.put(data, _id=key, tenant_id=tenant_id, contentType=content_type)
        return key

    def get(self, ref: str) -> bytes:
        with store_errors("read blob"):
            doc = self._blobs.find_one({"_id": ref})
            if doc is not None:
                return bytes(doc["data"])
            try:
                return bytes(self._fs.get(ref).read())
            except gridfs.errors.NoFile as exc:
                raise KeyError(f"no stored blob {ref!r}") from exc
