"""/users/{id}/notifications: in the order they were made, marked read, and the bell's
long-poll that answers as soon as a new one is stored."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from shared.store import Store
from tests.apiclient import T0, Api

pytestmark = pytest.mark.integration


def note(
    store: Store, note_id: str, minutes: int, *, user: str = "m1", tenant: str = "t-a"
) -> None:
    store.notifications.insert_one(
        {
            "_id": note_id,
            "tenant_id": tenant,
            "user_id": user,
            "kind": "incoming_email",
            "text": note_id,
            "email_id": "e1",
            "created_at": T0 + timedelta(minutes=minutes),
        }
    )


def test_notifications_come_in_the_order_they_were_made_and_can_be_marked_read(
    api: Api, store: Store
) -> None:
    note(store, "n2-assigned", 0)  # same time: _id decides, as `notifications list` does
    note(store, "n3-mail", 0)
    note(store, "n1-earlier", -5)
    note(store, "other-user", 1, user="m2")
    note(store, "other-tenant", 1, tenant="t-b")
    headers = api.token("t-a")
    page = api.client.get("/users/m1/notifications", headers=headers).json()
    assert [n["id"] for n in page["items"]] == ["n1-earlier", "n2-assigned", "n3-mail"]

    read = api.client.post("/users/m1/notifications/n2-assigned/read", headers=headers)
    assert read.status_code == 200 and read.json()["read_at"] is not None
    again = api.client.post("/users/m1/notifications/n2-assigned/read", headers=headers)
    assert again.json()["read_at"] == read.json()["read_at"]  # the first read time stays
    unread = api.client.get("/users/m1/notifications?unread=true", headers=headers).json()
    assert [n["id"] for n in unread["items"]] == ["n1-earlier", "n3-mail"]
    marked = api.client.post("/users/m1/notifications/read", headers=headers).json()
    assert marked == {"marked": 2}
    assert "read_at" not in store.notifications.find_one({"_id": "other-user"})  # type: ignore[operator]
    wrong = api.client.post("/users/m2/notifications/n3-mail/read", headers=headers)
    assert wrong.status_code == 404  # another user's notification


def test_the_bell_answers_with_what_was_made_after_its_cursor(api: Api, store: Store) -> None:
    note(store, "n1", 0)
    headers = api.token("t-a")
    first = api.client.get("/users/m1/notifications/wait?timeout=5", headers=headers).json()
    assert [n["id"] for n in first["items"]] == ["n1"]  # pending: at once

    cursor = first["next_cursor"]
    empty = api.client.get(
        "/users/m1/notifications/wait", params={"after": cursor, "timeout": 0.2}, headers=headers
    ).json()
    assert empty == {"items": [], "next_cursor": cursor}

    later = threading.Timer(0.5, lambda: note(store, "n2", 1))
    later.start()
    try:
        woke = api.client.get(
            "/users/m1/notifications/wait", params={"after": cursor, "timeout": 30}, headers=headers
        ).json()
    finally:
        later.join()
    assert [n["id"] for n in woke["items"]] == ["n2"]


def test_a_user_the_tenant_does_not_have_is_a_404(api: Api, store: Store) -> None:
    note(store, "n1", 0, tenant="t-b")
    answer = api.client.get("/users/m1/notifications", headers=api.token("t-a"))
    assert answer.status_code == 404
