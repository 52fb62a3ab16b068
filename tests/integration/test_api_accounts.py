"""/accounts: a tenant's mailboxes over HTTP, validated and stored as `accounts add` does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.crypto import SecretBox
from shared.settings import Settings
from shared.store import Store
from tests.apiclient import Api
from tests.conftest import Mailbox

pytestmark = pytest.mark.integration


def new_account(**extra: Any) -> dict[str, Any]:
    return {
        "owner_id": "u1",
        "protocol": "imap",
        "host": "imap.example.com",
        "username": "shop@example.com",
        "password": "s3cret-pw",
        **extra,
    }


def test_an_account_is_created_read_changed_disabled_and_deleted(
    api: Api, store: Store, settings: Settings
) -> None:
    headers = api.token("t-a")
    made = api.client.post("/accounts", json=new_account(notify_manager=True), headers=headers)
    assert made.status_code == 201, made.text
    account = made.json()
    assert made.headers["location"] == f"/accounts/{account['id']}"
    assert account["port"] == 993 and account["security"] == "ssl"
    assert account["tenant_id"] == "t-a" and account["state"] == "new"
    assert "password_enc" not in account and "s3cret-pw" not in made.text
    stored = store.accounts.find_one({"_id": account["id"]})
    assert stored is not None and stored["tenant_id"] == "t-a" and stored["notify_manager"]
    box = SecretBox(settings.secret_key.get_secret_value())  # type: ignore[union-attr]
    assert box.decrypt(stored["password_enc"]) == "s3cret-pw"

    url = f"/accounts/{account['id']}"
    assert api.client.get(url, headers=headers).json() == account
    assert [a["id"] for a in api.client.get("/accounts", headers=headers).json()] == [account["id"]]
    changed = api.client.patch(url, json={"folder": "Orders", "password": "new"}, headers=headers)
    assert changed.status_code == 200 and changed.json()["folder"] == "Orders"
    again = store.accounts.find_one({"_id": account["id"]})
    assert again is not None and box.decrypt(again["password_enc"]) == "new"
    assert again["port"] == 993 and again["notify_manager"]  # what was not named stays
    assert api.client.post(f"{url}/disable", headers=headers).json()["state"] == "disabled"
    assert api.client.post(f"{url}/enable", headers=headers).json()["enabled"] is True
    assert api.client.delete(url, headers=headers).status_code == 204
    assert api.client.get(url, headers=headers).status_code == 404


@pytest.mark.parametrize(
    ("extra", "field", "value"),
    [
        ({"port": 70000}, "body.port", 70000),
        ({"protocol": "smtp"}, "body.protocol", "smtp"),
        ({"port": 143}, "body.port", 143),  # plaintext port without security said
        ({"colour": "red"}, "body.colour", "red"),
        ({"manager_group_id": "nope"}, "body.manager_group_id", "nope"),
        ({"max_message_bytes": 200 * 1024 * 1024}, "body.max_message_bytes", 200 * 1024 * 1024),
    ],
)
def test_a_bad_value_is_refused_naming_the_field_and_the_value(
    api: Api, store: Store, extra: dict[str, Any], field: str, value: Any
) -> None:
    answer = api.client.post("/accounts", json=new_account(**extra), headers=api.token("t-a"))
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert any(e["field"] == field and e["value"] == value for e in answer.json()["errors"])
    assert store.accounts.count_documents({}) == 0


def test_plaintext_to_a_remote_host_is_refused_unless_said(api: Api) -> None:
    headers = api.token("t-a")
    refused = api.client.post("/accounts", json=new_account(port=143), headers=headers)
    assert refused.status_code == 422 and "plaintext" in refused.json()["detail"]
    said = api.client.post("/accounts", json=new_account(security="none"), headers=headers)
    assert said.status_code == 201 and said.json()["port"] == 143


def test_the_eleventh_account_is_a_409_and_is_not_stored(api: Api, store: Store) -> None:
    headers = api.token("t-a")
    for n in range(10):
        made = api.client.post("/accounts", json=new_account(username=f"u{n}"), headers=headers)
        assert made.status_code == 201
    refused = api.client.post("/accounts", json=new_account(username="u10"), headers=headers)
    assert refused.status_code == 409
    assert "the limit is 10 per tenant" in refused.json()["detail"]
    assert store.accounts.count_documents({"tenant_id": "t-a"}) == 10
    other = api.client.post("/accounts", json=new_account(), headers=api.token("t-b"))
    assert other.status_code == 201  # the limit is per tenant


def test_the_test_endpoint_logs_in_and_says_what_failed(api: Api, mailbox: Mailbox) -> None:
    server, headers = mailbox.server, api.token("t-a")
    body = new_account(
        host=server.host,
        port=server.imap_port,
        security="none",
        username=mailbox.user,
        password=server.password,
    )
    good = api.client.post("/accounts", json=body, headers=headers).json()
    tested = api.client.post(f"/accounts/{good['id']}/test", headers=headers).json()
    assert tested["ok"] is True and tested["summary"].startswith("ok: ")
    bad = api.client.post("/accounts", json={**body, "password": "wrong"}, headers=headers).json()
    failed = api.client.post(f"/accounts/{bad['id']}/test", headers=headers).json()
    assert failed["ok"] is False and failed["reason"] == "login_rejected"


def test_the_status_shows_the_first_loads_progress_and_eta(api: Api, store: Store) -> None:
    headers = api.token("t-a")
    account = api.client.post("/accounts", json=new_account(), headers=headers).json()
    now = datetime.now(UTC)
    progress = {"done": 100, "total": 400, "done_at_start": 0}
    progress |= {"started_at": now - timedelta(seconds=50), "updated_at": now}
    store.accounts.update_one(
        {"_id": account["id"], "tenant_id": "t-a"},
        {"$set": {"progress": progress, "state": {"status": "ok"}}},
    )
    status = api.client.get(f"/accounts/{account['id']}/status", headers=headers).json()
    assert status["state"] == "syncing" and status["progress"] == "100/400"
    assert status["backlog"] == 300 and status["rate_per_second"] == 2.0
    assert status["eta_seconds"] == 150


@pytest.mark.parametrize("bad", ["\r\n", "\n", "\x00"])
def test_a_password_or_user_name_with_cr_lf_or_nul_is_refused_without_echoing_it(
    api: Api, store: Store, bad: str
) -> None:
    headers = api.token("t-a")
    secret = f"Pa55{bad}A1 LOGOUT"
    refused = api.client.post("/accounts", json=new_account(password=secret), headers=headers)
    assert refused.status_code == 422, refused.text
    assert "password must not contain CR, LF or NUL" in refused.text
    assert "Pa55" not in refused.text and "LOGOUT" not in refused.text
    user = api.client.post("/accounts", json=new_account(username=f"a{bad}b"), headers=headers)
    assert user.status_code == 422 and "user name must not contain CR" in user.text
    assert store.accounts.count_documents({}) == 0
    made = api.client.post("/accounts", json=new_account(), headers=headers).json()
    changed = api.client.patch(
        f"/accounts/{made['id']}", json={"password": secret}, headers=headers
    )
    assert changed.status_code == 422 and "Pa55" not in changed.text


def test_an_inside_host_is_refused_when_the_operator_asks(
    api: Api, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = api.token("t-a")
    monkeypatch.setenv("MAILINTAKE_MAILBOX_DENY_PRIVATE", "true")
    inside = new_account(host="127.0.0.1", security="ssl")
    refused = api.client.post("/accounts", json=inside, headers=headers)
    assert refused.status_code == 422, refused.text
    error = refused.json()["errors"][0]
    assert error["field"] == "body.host" and error["value"] == "127.0.0.1"
    assert "not allowed (loopback)" in error["message"]
    assert store.accounts.count_documents({}) == 0
    monkeypatch.setenv("MAILINTAKE_MAILBOX_ALLOW_NETWORKS", "127.0.0.0/8")
    made = api.client.post("/accounts", json=inside, headers=headers)
    assert made.status_code == 201, made.text
    monkeypatch.delenv("MAILINTAKE_MAILBOX_ALLOW_NETWORKS")
    moved = api.client.patch(
        f"/accounts/{made.json()['id']}", json={"host": "10.1.2.3"}, headers=headers
    )
    assert moved.status_code == 422 and "not allowed (private)" in moved.text
