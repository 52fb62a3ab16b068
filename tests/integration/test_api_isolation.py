"""Tenant isolation, walked over EVERY route of the app: tenant A's token on tenant B's ids is
a 404 (never a 403 that would tell B's ids exist), and B's data stays as it was.

Routes are read from the app itself, so a new endpoint is walked without touching this test;
one that takes a body needs a valid body below (the walk says so), so that what answers is the
tenant filter, not the validation.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from shared.accounts import AccountConfig
from shared.crypto import SecretBox
from shared.settings import Settings
from shared.store import Store
from tests.apiclient import Api, seed_tenant
from tests.integration.test_api_oauth2 import CALLBACK, consent
from tests.oauth_server import CLIENT_ID, CLIENT_SECRET, OAuthServer, running_oauth_server

pytestmark = pytest.mark.integration

BODIES: dict[str, dict[str, Any]] = {
    "AccountUpdate": {"folder": "Elsewhere"},
    "StatusChange": {"status": "free"},
    "OnlineChange": {"online": False},
    "Replay": {"all": True},
    "AccountCreate": {
        "owner_id": "u",
        "protocol": "imap",
        "host": "127.0.0.1",
        "port": 1,
        "security": "ssl",
        "username": "x",
        "password": "pw",
    },
    "OAuthStart": {"redirect_uri": CALLBACK},
    "OAuthFinish": {"code": "c", "state": "s"},  # the walk as tenant B gets a real one
}
COLLECTIONS = (
    "accounts", "customers", "orders", "managers", "emails", "notifications", "oauth_states",
)  # fmt: skip


@pytest.fixture
def oauth() -> Iterator[OAuthServer]:
    with running_oauth_server(port=0) as server:
        yield server


def routes(api: Api) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path, operation) of every route in the app's OpenAPI document, DELETEs last
    (they remove what the others read)."""
    paths = api.client.get("/openapi.json").json()["paths"]
    found = [(m.upper(), path, op) for path, ops in paths.items() for m, op in ops.items()]
    return sorted(found, key=lambda r: (r[0] == "DELETE", r[1], r[0]))


def tenant_scoped(path: str) -> bool:
    return not path.startswith("/operator/")


def url_for(path: str, ids: dict[str, str]) -> str:
    values = {f"{kind}_id": ident for kind, ident in ids.items()} | {
        "index": "0",
        "queue": "binder",
    }
    for name, value in values.items():
        path = path.replace("{" + name + "}", value)
    assert "{" not in path, f"{path}: give the walk a tenant-B value for this parameter"
    return path


def body_for(
    path: str, operation: dict[str, Any], bodies: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any] | None:
    if "requestBody" not in operation:
        return None
    ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    name = ref.rsplit("/", 1)[1]
    bodies = BODIES | (bodies or {})
    assert name in bodies, f"{path}: give the walk a valid {name} body"
    return bodies[name]


def snapshot(store: Store, tenant: str) -> dict[str, list[dict[str, Any]]]:
    return {c: list(store[c].find({"tenant_id": tenant}).sort("_id", 1)) for c in COLLECTIONS}


def seed_b(store: Store, settings: Settings, oauth: OAuthServer) -> dict[str, str]:
    """Tenant B's data, with an OAuth2 account (every account route then answers B)."""
    ids = seed_tenant(store, "t-b")
    ids["account"] = "t-b-account"
    fields = {k: v for k, v in BODIES["AccountCreate"].items() if k != "password"}
    client = {"provider": "custom", "client_id": CLIENT_ID, "scope": "mail"}
    client |= {"token_url": oauth.token_url, "auth_url": oauth.auth_url}
    config = AccountConfig(tenant_id="t-b", auth="oauth2", oauth=client, **fields).model_dump()
    assert settings.secret_key is not None
    secret = SecretBox(settings.secret_key.get_secret_value()).encrypt(CLIENT_SECRET)
    store.accounts.insert_one(
        {**config, "_id": ids["account"], "oauth_client_secret_enc": secret, "enabled": True}
    )
    store.emails.update_one({"_id": ids["letter"]}, {"$set": {"account_id": ids["account"]}})
    return ids


def finish_body(api: Api, headers: dict[str, str], account_id: str) -> dict[str, str]:
    """A code and state the account's provider gave for a start (consumed by one finish)."""
    url = f"/accounts/{account_id}/oauth2/start"
    started = api.client.post(url, json=BODIES["OAuthStart"], headers=headers)
    callback = consent(started.json()["authorization_url"])
    return {"code": callback["code"], "state": callback["state"]}


def test_every_route_takes_a_tenants_token_or_an_operators_never_both(
    api: Api, store: Store, settings: Settings, oauth: OAuthServer
) -> None:
    b_ids = seed_b(store, settings, oauth)
    tenant, operator = api.token("t-b"), api.token(None)
    for method, path, operation in routes(api):
        wrong = operator if tenant_scoped(path) else tenant
        url, body = url_for(path, b_ids | {"message": "x"}), body_for(path, operation)
        answer = api.client.request(method, url, json=body, headers=wrong)
        assert answer.status_code == 403, f"{method} {url} with the other kind of token"


def test_tenant_a_gets_404_on_every_route_for_tenant_bs_ids(
    api: Api, store: Store, settings: Settings, oauth: OAuthServer
) -> None:
    b_ids = seed_b(store, settings, oauth)
    seed_tenant(store, "t-a")
    a_token, b_token = api.token("t-a"), api.token("t-b")
    real = {"OAuthFinish": finish_body(api, b_token, b_ids["account"])}  # B's pending state
    before = snapshot(store, "t-b")
    walked = []
    for method, path, operation in routes(api):
        if not tenant_scoped(path) or "{" not in path:
            continue
        url, body = url_for(path, b_ids), body_for(path, operation, real)
        answer = api.client.request(method, url, json=body, headers=a_token)
        assert answer.status_code == 404, f"{method} {url} as tenant A: {answer.status_code}"
        assert answer.headers["content-type"] == "application/problem+json"
        detail = answer.json()["detail"]
        for asked in b_ids.values():  # it may name what was asked, nothing else of B's
            detail = detail.replace(asked, "")
        assert "t-b" not in detail
        walked.append((method, path))
    assert snapshot(store, "t-b") == before  # nothing of B's was changed, read-marked or removed
    assert len(walked) >= 15

    for method, path, operation in routes(api):  # the ids are B's indeed: B reaches each
        if tenant_scoped(path) and "{" in path:
            url, body = url_for(path, b_ids), body_for(path, operation, real)
            answer = api.client.request(method, url, json=body, headers=b_token)
            assert answer.status_code < 400, f"{method} {url} as tenant B: {answer.text}"


def test_listings_without_ids_show_only_the_tokens_tenant(
    api: Api, store: Store, settings: Settings, oauth: OAuthServer
) -> None:
    b_ids = seed_b(store, settings, oauth)
    a_ids = seed_tenant(store, "t-a")
    a_token = api.token("t-a")
    for method, path, _operation in routes(api):
        if method != "GET" or "{" in path or not tenant_scoped(path):
            continue
        answer = api.client.get(path, headers=a_token)
        assert answer.status_code == 200, f"GET {path}: {answer.text}"
        assert "t-b" not in answer.text, f"GET {path} shows tenant B's data"
    letters = api.client.get("/letters", headers=a_token).json()["items"]
    assert [item["id"] for item in letters] == [a_ids["letter"]] != [b_ids["letter"]]
