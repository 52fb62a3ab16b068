"""Raw mail and attachments stored once in GridFS, keyed by a deterministic name."""

from __future__ import annotations

import gridfs

from shared.store import Store, store_errors


class GridFsBlobStore:
    """GridFS with idempotent puts: a key already complete is kept, a partial one rewritten."""

    def __init__(self, store: Store) -> None:
        self._fs = store.gridfs()

    def put(self, key: str, data: bytes, *, tenant_id: str, content_type: str) -> str:
        with store_errors("store blob"):
            if self._fs.exists(key):  # the files document is written last: complete
                return key
            self._fs.delete(key)  # chunks left by a write that died half-way
            self._fs.put(data, _id=key, tenant_id=tenant_id, contentType=content_type)
        return key

    def get(self, ref: str) -> bytes:
        with store_errors("read blob"):
            try:
                return bytes(self._fs.get(ref).read())
            except gridfs.errors.NoFile as exc:
                raise KeyError(f"no stored blob {ref!r}") from exc
