"""The API's door: tokens made by `mailintake tokens`, stored hashed, revoked at once; errors
as problem details."""

from __future__ import annotations

import hashlib

import pytest

from shared.store import Store
from tests.apiclient import Api
from tests.integration.conftest import Cli

pytestmark = pytest.mark.integration


def test_a_token_from_the_command_opens_its_tenant_and_stops_working_once_revoked(
    api: Api, cli: Cli, store: Store
) -> None:
    out = cli("tokens", "create", "--tenant", "t-a", "--name", "crm").stdout
    token = out.splitlines()[-1]
    token_id = token.split("_")[1]
    headers = {"Authorization": f"Bearer {token}"}
    assert api.client.get("/letters", headers=headers).status_code == 200

    [doc] = store["api_tokens"].find()
    assert doc["hash"] == hashlib.sha256(token.encode()).hexdigest()
    assert token not in str(doc) and token.split("_", 2)[2] not in str(doc)
    listed = cli("tokens", "list", "--tenant", "t-a", "--json").stdout
    assert token_id in listed and "crm" in listed and doc["hash"] not in listed

    cli("tokens", "revoke", "--tenant", "t-b", token_id, expect=2)  # not t-b's
    assert api.client.get("/letters", headers=headers).status_code == 200
    cli("tokens", "revoke", "--tenant", "t-a", token_id)
    refused = api.client.get("/letters", headers=headers)
    assert refused.status_code == 401
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["detail"] == "the token is unknown or revoked"


@pytest.mark.parametrize(
    "authorization", [None, "Bearer nonsense", "Bearer mit_abc_def", "Basic dXNlcjpwdw=="]
)
def test_no_valid_token_is_a_401_problem(api: Api, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    answer = api.client.get("/accounts", headers=headers)
    assert answer.status_code == 401
    problem = answer.json()
    assert problem["status"] == 401 and problem["title"] == "Unauthorized"
    assert answer.headers["www-authenticate"] == "Bearer"


def test_tenant_and_operator_tokens_each_reach_only_their_own_endpoints(api: Api, cli: Cli) -> None:
    operator = {
        "Authorization": "Bearer " + cli("tokens", "create", "--operator").stdout.split()[-1]
    }
    tenant = api.token("t-a")
    assert api.client.get("/accounts", headers=operator).status_code == 403
    assert api.client.get("/operator/accounts", headers=tenant).status_code == 403
    assert api.client.get("/operator/accounts", headers=operator).status_code == 200
    cli("tokens", "create", expect=2)  # neither --tenant nor --operator


def test_an_invalid_value_is_a_problem_naming_the_field_and_the_value(api: Api) -> None:
    answer = api.client.get("/letters?limit=900", headers=api.token("t-a"))
    assert answer.status_code == 422
    assert answer.headers["content-type"] == "application/problem+json"
    [error] = answer.json()["errors"]
    assert error["field"] == "query.limit" and error["value"] == "900"
    assert "900" in answer.json()["detail"]
    unknown = api.client.get("/no/such/thing", headers=api.token("t-a"))
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/problem+json"
