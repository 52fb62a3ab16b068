"""/accounts/{id}/oauth2/start and /finish: an OAuth2 mailbox signed in through the CRM's own
callback page, against the test OAuth2 server, on the real store."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from shared.crypto import SecretBox
from shared.errors import PermanentError
from shared.logging import configure_logging
from shared.oauth import authorize, pending
from shared.oauth.pkce import challenge_of
from shared.settings import Settings
from shared.store import Store
from tests.apiclient import Api
from tests.oauth_server import CLIENT_ID, CLIENT_SECRET, OAuthServer, running_oauth_server

pytestmark = pytest.mark.integration

CALLBACK = "https://crm.example.com/settings/mail/callback"
USER = "orders@example.com"


@pytest.fixture
def oauth() -> Iterator[OAuthServer]:
    with running_oauth_server(port=0) as server:  # no mailbox here: any free port
        yield server


@pytest.fixture
def box(settings: Settings) -> SecretBox:
    assert settings.secret_key is not None
    return SecretBox(settings.secret_key.get_secret_value())


def oauth_account(oauth: OAuthServer, **extra: Any) -> dict[str, Any]:
    return {
        "owner_id": "u1",
        "protocol": "imap",
        "host": "imap.example.com",
        "username": USER,
        "auth": "oauth2",
        "oauth": {
            "provider": "custom",
            "client_id": CLIENT_ID,
            "token_url": oauth.token_url,
            "auth_url": oauth.auth_url,
            "scope": "mail",
        },
        "client_secret": CLIENT_SECRET,
        **extra,
    }


def add_account(api: Api, headers: dict[str, str], oauth: OAuthServer) -> str:
    made = api.client.post("/accounts", json=oauth_account(oauth), headers=headers)
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


def start(api: Api, headers: dict[str, str], account_id: str) -> dict[str, Any]:
    answer = api.client.post(
        f"/accounts/{account_id}/oauth2/start", json={"redirect_uri": CALLBACK}, headers=headers
    )
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None


def consent(url: str) -> dict[str, str]:
    """The person consents: the provider sends the browser to the callback with code and state."""
    opener = urllib.request.build_opener(_NoRedirect())
    with pytest.raises(urllib.error.HTTPError) as sent:
        opener.open(url, timeout=10)
    sent.value.close()
    location = str(sent.value.headers["Location"])
    assert location.startswith(CALLBACK + "?")
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def finish(api: Api, headers: dict[str, str], account_id: str, callback: dict[str, str]) -> Any:
    return api.client.post(
        f"/accounts/{account_id}/oauth2/finish",
        json={"code": callback["code"], "state": callback["state"]},
        headers=headers,
    )


def test_an_oauth2_account_is_created_without_a_password_its_client_secret_encrypted(
    api: Api, store: Store, oauth: OAuthServer, box: SecretBox
) -> None:
    made = api.client.post("/accounts", json=oauth_account(oauth), headers=api.token("t-a"))
    assert made.status_code == 201, made.text
    view = made.json()
    assert view["auth"] == "oauth2" and CLIENT_SECRET not in made.text
    assert view["oauth"]["provider"] == "custom" and view["oauth"]["client_id"] == CLIENT_ID
    assert view["oauth"]["refresh_token_stored"] is False
    stored = store.accounts.find_one({"_id": view["id"], "tenant_id": "t-a"})
    assert stored is not None and "password_enc" not in stored
    assert box.decrypt(stored["oauth_client_secret_enc"]) == CLIENT_SECRET


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"password": "pw"}, "body.password"),  # an OAuth2 account has no password
        ({"oauth": None}, "body.oauth"),  # oauth2 without its client
        ({"auth": "password", "password": "pw"}, "body.oauth"),  # with an OAuth2 client
        ({"auth": "password", "oauth": None}, "body.password"),  # ... or without a password
        ({"oauth": {"provider": "custom", "client_id": "c"}}, "body.oauth"),  # no URLs
    ],
)
def test_an_account_whose_auth_and_secrets_disagree_is_refused_naming_the_field(
    api: Api, store: Store, oauth: OAuthServer, change: dict[str, Any], field: str
) -> None:
    body = {**oauth_account(oauth), **change}
    if change.get("auth") == "password":
        body.pop("client_secret")
    answer = api.client.post("/accounts", json=body, headers=api.token("t-a"))
    assert answer.status_code == 422, answer.text
    assert [e["field"] for e in answer.json()["errors"]] == [field]
    assert "pw" not in answer.text and CLIENT_SECRET not in answer.text
    assert store.accounts.count_documents({}) == 0


def test_start_gives_the_providers_url_with_pkce_and_a_state_kept_only_hashed(
    api: Api, store: Store, oauth: OAuthServer, box: SecretBox
) -> None:
    headers = api.token("t-a")
    account_id = add_account(api, headers, oauth)
    started = start(api, headers, account_id)
    url = urlsplit(started["authorization_url"])
    assert f"{url.scheme}://{url.netloc}{url.path}" == oauth.auth_url
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert query["client_id"] == CLIENT_ID and query["redirect_uri"] == CALLBACK
    assert query["state"] == started["state"] and query["login_hint"] == USER
    assert query["code_challenge_method"] == "S256" and query["scope"] == "mail"
    kept = list(store["oauth_states"].find({"tenant_id": "t-a"}))
    assert len(kept) == 1 and kept[0]["account_id"] == account_id
    assert kept[0]["_id"] == pending.state_id(started["state"])
    assert started["state"] not in str(kept[0])  # the state itself is not stored
    verifier = box.decrypt(kept[0]["verifier_enc"])  # nor the verifier in clear
    assert challenge_of(verifier) == query["code_challenge"] and verifier not in str(kept[0])
    assert datetime.fromisoformat(started["expires_at"]) == kept[0]["expires_at"]


def test_finish_exchanges_the_code_with_the_verifier_and_stores_the_refresh_token_encrypted(
    api: Api,
    store: Store,
    oauth: OAuthServer,
    box: SecretBox,
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(settings.log_format, settings.log_level)  # to the stderr capsys reads
    headers = api.token("t-a")
    account_id = add_account(api, headers, oauth)
    callback = consent(start(api, headers, account_id)["authorization_url"])
    answer = finish(api, headers, account_id, callback)
    assert answer.status_code == 200, answer.text
    assert answer.json()["id"] == account_id and answer.json()["oauth"]["refresh_token_stored"]
    assert oauth.state.grants == ["authorization_code"]  # the server checked the PKCE verifier
    stored = store.accounts.find_one({"_id": account_id, "tenant_id": "t-a"})
    assert stored is not None
    refresh = box.decrypt(stored["oauth_refresh_token_enc"])
    assert oauth.state.active_refresh_tokens(USER) == [refresh]
    assert refresh not in str(stored) and refresh not in answer.text
    access = box.decrypt(stored["oauth_access_token_enc"])
    assert access in oauth.state.access_tokens
    logged = capsys.readouterr().err
    assert "oauth_authorized" in logged
    for secret in (callback["code"], callback["state"], refresh, access, CLIENT_SECRET):
        assert secret not in logged


def test_a_replayed_state_is_refused_and_the_code_not_sent_again(
    api: Api, oauth: OAuthServer
) -> None:
    headers = api.token("t-a")
    account_id = add_account(api, headers, oauth)
    callback = consent(start(api, headers, account_id)["authorization_url"])
    assert finish(api, headers, account_id, callback).status_code == 200
    again = finish(api, headers, account_id, callback)
    assert again.status_code == 400, again.text
    assert again.headers["content-type"] == "application/problem+json"
    assert "already used" in again.json()["detail"]
    assert oauth.state.grants == ["authorization_code"] and oauth.state.refused == []


def test_an_expired_state_is_refused(api: Api, store: Store, oauth: OAuthServer) -> None:
    headers = api.token("t-a")
    account_id = add_account(api, headers, oauth)
    callback = consent(start(api, headers, account_id)["authorization_url"])
    past = datetime.now(UTC) - timedelta(seconds=1)
    store["oauth_states"].update_one(
        {"_id": pending.state_id(callback["state"]), "tenant_id": "t-a"},
        {"$set": {"expires_at": past}},
    )
    answer = finish(api, headers, account_id, callback)
    assert answer.status_code == 400, answer.text
    assert "expired" in answer.json()["detail"]
    assert oauth.state.grants == [] and oauth.state.refused == []
    stored = store.accounts.find_one({"_id": account_id, "tenant_id": "t-a"})
    assert stored is not None and "oauth_refresh_token_enc" not in stored


def test_an_account_with_too_many_started_authorizations_is_refused_until_one_ends(
    api: Api, store: Store, oauth: OAuthServer
) -> None:
    headers = api.token("t-a")
    account_id, other = add_account(api, headers, oauth), add_account(api, headers, oauth)
    first = start(api, headers, account_id)
    for _ in range(pending.MAX_STARTED - 1):
        start(api, headers, account_id)
    url = f"/accounts/{account_id}/oauth2/start"
    refused = api.client.post(url, json={"redirect_uri": CALLBACK}, headers=headers)
    assert refused.status_code == 429, refused.text
    ends = datetime.fromisoformat(first["expires_at"])
    assert f"start again after {ends:%Y-%m-%d %H:%M:%S} UTC" in refused.json()["detail"]
    assert 0 < int(refused.headers["retry-after"]) <= pending.LIFETIME.total_seconds()
    open_states = {"tenant_id": "t-a", "account_id": account_id, "verifier_enc": {"$exists": 1}}
    assert store["oauth_states"].count_documents(open_states) == pending.MAX_STARTED
    start(api, headers, other)  # another account of the tenant is not held back
    store["oauth_states"].update_one(  # the oldest ends
        {"_id": pending.state_id(first["state"]), "tenant_id": "t-a"},
        {"$set": {"expires_at": datetime.now(UTC) - timedelta(seconds=1)}},
    )
    start(api, headers, account_id)


def authorized_account(api: Api, headers: dict[str, str], oauth: OAuthServer) -> str:
    account_id = add_account(api, headers, oauth)
    callback = consent(start(api, headers, account_id)["authorization_url"])
    assert finish(api, headers, account_id, callback).status_code == 200
    return account_id


def test_a_new_client_secret_is_stored_encrypted_and_the_sign_in_kept(
    api: Api, store: Store, oauth: OAuthServer, box: SecretBox
) -> None:
    headers = api.token("t-a")
    account_id = authorized_account(api, headers, oauth)
    before = store.accounts.find_one({"_id": account_id, "tenant_id": "t-a"})
    changed = api.client.patch(
        f"/accounts/{account_id}", json={"client_secret": "rotated-secret"}, headers=headers
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["oauth"]["refresh_token_stored"] and "rotated" not in changed.text
    after = store.accounts.find_one({"_id": account_id, "tenant_id": "t-a"})
    assert before is not None and after is not None
    assert box.decrypt(after["oauth_client_secret_enc"]) == "rotated-secret"
    assert after["oauth_refresh_token_enc"] == before["oauth_refresh_token_enc"]


def test_another_client_drops_the_tokens_so_the_account_is_signed_in_again(
    api: Api, store: Store, oauth: OAuthServer
) -> None:
    headers = api.token("t-a")
    account_id = authorized_account(api, headers, oauth)
    url = f"/accounts/{account_id}"
    same = {**oauth_account(oauth)["oauth"], "scope": "mail offline"}  # the same client
    kept = api.client.patch(url, json={"oauth": same}, headers=headers)
    assert kept.status_code == 200, kept.text
    assert kept.json()["oauth"]["scope"] == "mail offline"
    assert kept.json()["oauth"]["refresh_token_stored"] is True
    client = {**same, "client_id": "another-client"}
    changed = api.client.patch(url, json={"oauth": client}, headers=headers)
    assert changed.status_code == 200, changed.text
    assert changed.json()["oauth"]["client_id"] == "another-client"
    assert changed.json()["oauth"]["refresh_token_stored"] is False
    after = store.accounts.find_one({"_id": account_id, "tenant_id": "t-a"})
    assert after is not None and after["oauth"]["client_id"] == "another-client"
    assert not [f for f in after if f in authorize.GRANT_FIELDS]
    assert "oauth_client_secret_enc" in after  # the secret stays until a new one is given


@pytest.mark.parametrize(
    ("auth", "change", "field"),
    [
        ("oauth2", {"password": "a-password"}, "body.password"),
        ("password", {"client_secret": "a-secret"}, "body.client_secret"),
        ("password", {"oauth": {"provider": "google", "client_id": "c"}}, "body.oauth"),
    ],
)
def test_secrets_of_the_other_way_to_log_in_are_refused_naming_the_field(
    api: Api, store: Store, oauth: OAuthServer, auth: str, change: dict[str, Any], field: str
) -> None:
    headers = api.token("t-a")
    if auth == "oauth2":
        account_id = add_account(api, headers, oauth)
    else:
        body = {**oauth_account(oauth), "auth": "password", "password": "pw"}
        del body["oauth"], body["client_secret"]
        made = api.client.post("/accounts", json=body, headers=headers)
        assert made.status_code == 201, made.text
        account_id = made.json()["id"]
    before = store.accounts.find_one({"_id": account_id, "tenant_id": "t-a"})
    refused = api.client.patch(f"/accounts/{account_id}", json=change, headers=headers)
    assert refused.status_code == 422, refused.text
    assert [e["field"] for e in refused.json()["errors"]] == [field]
    assert store.accounts.find_one({"_id": account_id, "tenant_id": "t-a"}) == before


def test_a_state_of_another_account_is_refused_and_stays_good_for_its_own(
    api: Api, oauth: OAuthServer
) -> None:
    headers = api.token("t-a")
    first, second = add_account(api, headers, oauth), add_account(api, headers, oauth)
    callback = consent(start(api, headers, first)["authorization_url"])
    wrong = finish(api, headers, second, callback)
    assert wrong.status_code == 400, wrong.text
    assert wrong.json()["detail"] == (f"the state was issued for account {first!r}, not {second!r}")
    assert oauth.state.grants == []
    assert finish(api, headers, first, callback).status_code == 200


def test_a_state_of_another_tenant_is_unknown_to_it(api: Api, oauth: OAuthServer) -> None:
    a_headers, b_headers = api.token("t-a"), api.token("t-b")
    a_account, b_account = add_account(api, a_headers, oauth), add_account(api, b_headers, oauth)
    callback = consent(start(api, a_headers, a_account)["authorization_url"])
    on_own = finish(api, b_headers, b_account, callback)  # B's account, A's state
    assert on_own.status_code == 400, on_own.text
    assert on_own.json()["detail"] == "unknown state: start the authorization again"
    on_a = finish(api, b_headers, a_account, callback)  # A's account: not B's to name
    assert on_a.status_code == 404
    assert "t-a" not in on_own.text + on_a.text
    assert oauth.state.grants == []
    assert finish(api, a_headers, a_account, callback).status_code == 200


def test_start_refuses_a_password_account_and_a_plain_http_callback(
    api: Api, oauth: OAuthServer
) -> None:
    headers = api.token("t-a")
    body = {**oauth_account(oauth), "auth": "password", "password": "pw"}
    del body["oauth"], body["client_secret"]
    password_account = api.client.post("/accounts", json=body, headers=headers).json()["id"]
    answer = api.client.post(
        f"/accounts/{password_account}/oauth2/start",
        json={"redirect_uri": CALLBACK},
        headers=headers,
    )
    assert answer.status_code == 409 and "password, not OAuth2" in answer.json()["detail"]
    account_id = add_account(api, headers, oauth)
    plain = "http://crm.example.com/callback"
    answer = api.client.post(
        f"/accounts/{account_id}/oauth2/start", json={"redirect_uri": plain}, headers=headers
    )
    assert answer.status_code == 422
    assert answer.json()["errors"][0]["field"] == "body.redirect_uri"
    assert plain in answer.json()["detail"]


def test_one_state_taken_by_racing_finishes_is_given_to_one_of_them(
    api: Api, store: Store, oauth: OAuthServer, box: SecretBox
) -> None:
    headers = api.token("t-a")
    account_id = add_account(api, headers, oauth)
    state = start(api, headers, account_id)["state"]
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def take() -> None:
        barrier.wait()
        try:
            pending.take(store, box, "t-a", account_id, state, now=datetime.now(UTC))
            outcomes.append("taken")
        except PermanentError as exc:
            outcomes.append(str(exc).split(" at ")[0])

    threads = [threading.Thread(target=take) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) == ["taken"] + ["the state was already used"] * 7
