"""/letters: a tenant's mail by customer, order, account and outcome, newest first in pages;
one letter whole; its raw source and parts as downloads."""

from __future__ import annotations

import random

import pytest

from shared.blobs import INLINE_LIMIT
from shared.store import Store
from tests.apiclient import Api, seed_letter

pytestmark = pytest.mark.integration


def all_pages(api: Api, url: str, headers: dict[str, str], limit: int) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        params = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        answer = api.client.get(url, params=params, headers=headers)
        assert answer.status_code == 200, answer.text
        pages.append([item["id"] for item in answer.json()["items"]])
        cursor = answer.json()["next_cursor"]
        if cursor is None:
            return pages


def test_letters_come_newest_first_in_pages_with_none_twice_and_none_left_out(
    api: Api, store: Store
) -> None:
    for n in range(7):
        seed_letter(store, f"m{n}", "t-a", minutes=n // 2, status="skipped")  # equal times too
    seed_letter(store, "other", "t-b", minutes=99, status="skipped")
    pages = all_pages(api, "/letters", api.token("t-a"), limit=3)
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [i for p in pages for i in p] == ["m6", "m5", "m4", "m3", "m2", "m1", "m0"]


def test_letters_by_customer_order_account_and_outcome(api: Api, store: Store) -> None:
    store.customers.insert_one({"_id": "c1", "tenant_id": "t-a", "emails": []})
    store.orders.insert_one({"_id": "o1", "tenant_id": "t-a", "number": "1", "customer_id": "c1"})
    store.accounts.insert_one({"_id": "a1", "tenant_id": "t-a"})
    seed_letter(store, "by-order", "t-a", minutes=3, customer_id="c1", order_id="o1")
    seed_letter(store, "by-customer", "t-a", minutes=2, customer_id="c1", account_id="a1")
    seed_letter(store, "skipped", "t-a", minutes=1, status="skipped", skip_reason="no_customer")
    seed_letter(store, "failed", "t-a", minutes=0, status="failed", failure_reason="bad MIME")
    headers = api.token("t-a")

    def ids(url: str) -> list[str]:
        answer = api.client.get(url, headers=headers)
        assert answer.status_code == 200, answer.text
        return [item["id"] for item in answer.json()["items"]]

    assert ids("/customers/c1/letters") == ["by-order", "by-customer"]
    assert ids("/orders/o1/letters") == ["by-order"]
    assert ids("/accounts/a1/letters") == ["by-customer"]
    assert ids("/letters?status=bound") == ["by-order", "by-customer"]
    assert ids("/letters?status=skipped") == ["skipped"]
    failed = api.client.get("/letters?status=failed", headers=headers).json()["items"]
    assert [(f["id"], f["failure_reason"]) for f in failed] == [("failed", "bad MIME")]
    assert api.client.get("/customers/nobody/letters", headers=headers).status_code == 404


def test_one_letter_whole_with_its_raw_source_and_parts_as_downloads(
    api: Api, store: Store
) -> None:
    doc = seed_letter(store, "m1", "t-a", minutes=0, attachment=b"\x89PNG-bytes", customer_id="c1")
    headers = api.token("t-a")
    letter = api.client.get("/letters/m1", headers=headers).json()
    assert letter["loaded"] is True and letter["status"] == "bound"
    assert letter["customer_id"] == "c1" and letter["matched_by"] == "sender"
    assert letter["text"] == "text of mail m1\n"
    assert "html of mail m1" in letter["html_safe"]
    assert "<script" not in letter["html_safe"] and "onclick" not in letter["html_safe"]
    assert letter["to"] == [{"address": "shop@example.com", "name": None}]
    [part] = letter["attachments"]
    assert part["filename"] == "pic 1.png" and part["download"] == "/letters/m1/attachments/0"

    raw = api.client.get(letter["raw"], headers=headers)
    assert raw.status_code == 200 and raw.headers["content-type"] == "message/rfc822"
    assert raw.content.startswith(b"From: ann@")
    assert len(raw.content) == doc["size"]
    got = api.client.get(part["download"], headers=headers)
    assert got.headers["content-type"] == "image/png" and got.content == b"\x89PNG-bytes"
    assert "filename*=UTF-8''pic%201.png" in got.headers["content-disposition"]
    assert api.client.get("/letters/m1/attachments/1", headers=headers).status_code == 404


def test_a_large_source_and_part_are_sent_whole_as_they_are_read(api: Api, store: Store) -> None:
    picture = random.Random(7).randbytes(INLINE_LIMIT + 300_000)  # stored in GridFS
    doc = seed_letter(store, "big", "t-a", minutes=0, attachment=picture)
    files = store["rawmail.files"]
    assert files.count_documents({"tenant_id": "t-a"}) == 2  # the source and the part
    headers = api.token("t-a")
    raw = api.client.get("/letters/big/raw", headers=headers)
    assert raw.status_code == 200 and raw.headers["content-length"] == str(doc["size"])
    assert len(raw.content) == doc["size"] and raw.content.startswith(b"From: ann@")
    part = api.client.get("/letters/big/attachments/0", headers=headers)
    assert part.status_code == 200 and part.headers["content-length"] == str(len(picture))
    assert part.content == picture


def test_a_stored_part_that_cannot_be_read_is_a_problem_not_a_short_download(
    api: Api, store: Store
) -> None:
    picture = random.Random(8).randbytes(INLINE_LIMIT + 300_000)
    doc = seed_letter(store, "broken", "t-a", minutes=0, attachment=picture)
    ref = doc["attachments"][0]["ref"]
    store["rawmail.chunks"].delete_one({"files_id": ref, "n": 0})
    answer = api.client.get("/letters/broken/attachments/0", headers=api.token("t-a"))
    assert answer.status_code == 503, answer.status_code
    assert answer.headers["retry-after"] == "5"
    assert answer.headers["content-type"] == "application/problem+json"
    assert "chunk 0 is missing" in answer.json()["detail"]


def test_a_skipped_letter_says_why_and_has_no_source(api: Api, store: Store) -> None:
    seed_letter(store, "s1", "t-a", minutes=0, status="skipped", skip_reason="no_customer")
    headers = api.token("t-a")
    letter = api.client.get("/letters/s1", headers=headers).json()
    assert letter["loaded"] is False and letter["skip_reason"] == "no_customer"
    assert letter["text"] is None and letter["raw"] is None
    missing = api.client.get("/letters/s1/raw", headers=headers)
    assert missing.status_code == 404 and "is not kept (skipped)" in missing.json()["detail"]


def test_a_cursor_that_is_not_ours_is_a_400_naming_it(api: Api) -> None:
    answer = api.client.get("/letters?cursor=garbage", headers=api.token("t-a"))
    assert answer.status_code == 400
    [error] = answer.json()["errors"]
    assert error == {"field": "query.cursor", "value": "garbage", "message": error["message"]}
