"""`mailintake emails prune-raw` and the letter's blobs on the real store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared import blobs as blob_module
from shared.blobs import GridFsBlobStore
from shared.letter import body_text, letter_fields, raw_key
from shared.mail import parse_mail
from shared.store import Store
from tests.conftest import make_mail
from tests.integration.conftest import Cli

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)


def loaded(store: Store, email_id: str, tenant: str, age_days: int, **fields: Any) -> None:
    """A bound mail's document and blobs, as the binder writes them, stored `age_days` ago."""
    raw = make_mail("ann@example.com", f"mail {email_id}", body=f"text of {email_id}")
    blobs = GridFsBlobStore(store)
    doc: dict[str, Any] = {
        "_id": email_id,
        "tenant_id": tenant,
        "status": "bound",
        "size": len(raw),
    }
    doc.update(letter_fields(email_id, tenant, parse_mail(raw), raw=raw, raw_ref=None, blobs=blobs))
    doc.update(created_at=NOW - timedelta(days=age_days), **fields)
    store.emails.insert_one(doc)


def test_prune_raw_drops_old_raw_sources_of_loaded_mail_and_keeps_the_letters(
    cli: Cli, store: Store
) -> None:
    loaded(store, "old-a", "t-a", 40)
    loaded(store, "new-a", "t-a", 5)
    loaded(store, "old-b", "t-b", 40)
    loaded(store, "unparsed", "t-a", 40, status="skipped", skip_reason="parse_error")

    out = cli("emails", "prune-raw", "--older-than-days", "30", "--dry-run").stdout
    assert "would prune the raw source of 2 mail(s)" in out
    assert store.emails.count_documents({"raw_ref": None}) == 0
    error = cli("emails", "prune-raw", expect=2).stderr
    assert error.endswith(": give --older-than-days N or set MAILINTAKE_RAW_RETENTION_DAYS\n")

    out = cli("emails", "prune-raw", "--tenant", "t-a", MAILINTAKE_RAW_RETENTION_DAYS="30").stdout
    assert "pruned the raw source of 1 mail(s)" in out
    assert cli("emails", "prune-raw", "--older-than-days", "30").stdout.startswith(
        "pruned the raw source of 1 mail(s)"  # t-b's, t-a's is gone already
    )
    docs = {doc["_id"]: doc for doc in store.emails.find()}
    blobs = GridFsBlobStore(store)
    for email_id, tenant in (("old-a", "t-a"), ("old-b", "t-b")):
        assert docs[email_id]["raw_ref"] is None and docs[email_id]["raw_pruned_at"] is not None
        with pytest.raises(KeyError):
            blobs.get_own(tenant, raw_key(email_id))
        assert body_text(docs[email_id], "text", blobs) == f"text of {email_id}\n"
    for email_id in ("new-a", "unparsed"):
        assert blobs.get_own("t-a", docs[email_id]["raw_ref"]).startswith(b"From: ")

    pruned = cli("emails", "show", "old-a", "--tenant", "t-a", "--raw", expect=2).stderr
    assert "e-mail old-a's raw source was pruned on" in pruned and pruned.count("\n") == 1
    assert cli("emails", "show", "old-a", "--tenant", "t-a", "--text").stdout == "text of old-a\n"
    assert "pruned on" in cli("emails", "show", "old-a", "--tenant", "t-a").stdout


def test_a_skipped_mail_is_shown_without_a_letter(cli: Cli, store: Store) -> None:
    skipped = {"_id": "skipped", "tenant_id": "t-a", "status": "skipped", "attachments": []}
    store.emails.insert_one({**skipped, "skip_reason": "no_customer", "preview": "who am I"})
    shown = cli("emails", "show", "skipped", "--tenant", "t-a").stdout
    assert "skipped (no_customer)" in shown
    assert shown.endswith("(no letter kept: the mail was not loaded)\nwho am I\n")
    error = cli("emails", "show", "skipped", "--tenant", "t-a", "--text", expect=2).stderr
    assert error.endswith("e-mail skipped was not loaded (no_customer): no letter is kept\n")
    error = cli("emails", "show", "skipped", "--tenant", "t-a", "--raw", expect=2).stderr
    assert error.endswith("e-mail skipped's raw source is not kept (status skipped)\n")


def test_blobs_are_read_and_dropped_within_their_tenant_in_gridfs_too(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(blob_module, "INLINE_LIMIT", 16)
    blobs = GridFsBlobStore(store)
    blobs.put("raw/big", b"x" * 100, tenant_id="t-a", content_type="message/rfc822")
    blobs.put("raw/small", b"tiny", tenant_id="t-a", content_type="message/rfc822")
    for ref in ("raw/big", "raw/small"):
        with pytest.raises(KeyError):
            blobs.get_own("t-b", ref)
        blobs.delete_own("t-b", ref)  # another tenant's: nothing happens
        assert blobs.get_own("t-a", ref)
        blobs.delete_own("t-a", ref)
        blobs.delete_own("t-a", ref)  # safe to repeat
        with pytest.raises(KeyError):
            blobs.get_own("t-a", ref)
    assert store.db["rawmail.chunks"].count_documents({}) == 0
