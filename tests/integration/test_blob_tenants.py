"""Blobs are read per tenant: another tenant's blob id finds nothing, wherever it is kept."""

from __future__ import annotations

import pytest

from shared.blobs import INLINE_LIMIT, GridFsBlobStore
from shared.store import Store

pytestmark = pytest.mark.integration


def test_a_blob_read_for_another_tenant_is_not_found_inline_in_gridfs_or_kept(
    store: Store,
) -> None:
    blobs = GridFsBlobStore(store)
    blobs.put("raw/small", b"tenant a's mail", tenant_id="a", content_type="message/rfc822")
    big = b"x" * (INLINE_LIMIT + 1)
    blobs.put("raw/big", big, tenant_id="a", content_type="message/rfc822")
    kept = GridFsBlobStore(store, deferred=True)
    kept.put("att/e1/0", b"kept part", tenant_id="a", content_type="text/plain")
    assert store["blobs"].find_one({"_id": "raw/small"})["tenant_id"] == "a"  # type: ignore[index]
    assert store["rawmail.files"].find_one({"_id": "raw/big"})["tenant_id"] == "a"  # type: ignore[index]
    for reader, ref in ((blobs, "raw/small"), (blobs, "raw/big"), (kept, "att/e1/0")):
        with pytest.raises(KeyError, match=ref):
            reader.get_own("b", ref)
    assert blobs.get_own("a", "raw/big") == big and kept.get_own("a", "att/e1/0") == b"kept part"
    kept.flush()
    with pytest.raises(KeyError, match="att/e1/0"):
        blobs.get_own("b", "att/e1/0")
    blobs.delete_own("b", "raw/big")  # another tenant's delete removes nothing
    assert blobs.get_own("a", "raw/big") == big
