"""/managers/{id}: status and log-in state, which decide who gets new customers."""

from __future__ import annotations

import pytest

from shared.store import Store
from tests.apiclient import Api

pytestmark = pytest.mark.integration


def test_a_managers_status_and_log_in_state_are_set(api: Api, store: Store) -> None:
    store.managers.insert_one({"_id": "m1", "tenant_id": "t-a", "status": "busy", "online": False})
    headers = api.token("t-a")
    answer = api.client.put("/managers/m1/status", json={"status": "lunch"}, headers=headers)
    assert answer.json() == {"id": "m1", "name": None, "status": "lunch", "online": False}
    api.client.put("/managers/m1/online", json={"online": True}, headers=headers)
    stored = store.managers.find_one({"_id": "m1"})
    assert stored is not None and stored["status"] == "lunch" and stored["online"] is True
    assert api.client.get("/managers/m1", headers=headers).json()["online"] is True


def test_an_unknown_status_is_refused_naming_it(api: Api, store: Store) -> None:
    store.managers.insert_one({"_id": "m1", "tenant_id": "t-a", "status": "busy", "online": False})
    answer = api.client.put(
        "/managers/m1/status", json={"status": "asleep"}, headers=api.token("t-a")
    )
    assert answer.status_code == 422
    [error] = answer.json()["errors"]
    assert error["field"] == "body.status" and error["value"] == "asleep"
    assert store.managers.find_one({"_id": "m1"})["status"] == "busy"  # type: ignore[index]
