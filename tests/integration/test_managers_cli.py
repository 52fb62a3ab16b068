"""`mailintake managers` and `mailintake webhooks` on the real store."""

from __future__ import annotations

import json

import pytest

from assigner.adapters import MongoManagerRotation
from notifier.adapters import WEBHOOKS
from ops.cli import main as cli
from shared.crypto import SecretBox
from shared.settings import Settings
from shared.store import Store
from tests.conftest import settings_env
from tests.integration.test_assignment import NOW, TENANT, new_customer, seed_group

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in settings_env(settings).items():
        if name.startswith("MAILINTAKE_"):
            monkeypatch.setenv(name, value)


def manager(store: Store, mid: str) -> dict[str, object]:
    doc = store.managers.find_one({"tenant_id": TENANT, "_id": mid})
    assert doc is not None
    return doc


def test_set_status_login_and_logout_change_the_manager(store: Store) -> None:
    seed_group(store, "g1", ("m1", "busy", False))
    assert cli(["managers", "set-status", "m1", "free"]) == 0
    assert cli(["managers", "login", "m1", "--tenant", TENANT]) == 0
    assert (manager(store, "m1")["status"], manager(store, "m1")["online"]) == ("free", True)
    assert cli(["managers", "logout", "m1"]) == 0
    assert manager(store, "m1")["online"] is False


def test_a_manager_set_free_and_logged_in_gets_the_next_customer(store: Store) -> None:
    seed_group(store, "g1", ("m1", "busy", True), ("m2", "busy", False))
    rotation = MongoManagerRotation(store)
    first = rotation.assign(
        TENANT, "g1", new_customer(store, 1).customer_id, email_id="e1", now=NOW
    )
    assert first.manager_id == "m1"
    assert cli(["managers", "set-status", "m2", "free"]) == 0
    assert cli(["managers", "login", "m2"]) == 0
    for n in (2, 3):
        got = rotation.assign(
            TENANT, "g1", new_customer(store, n).customer_id, email_id=f"e{n}", now=NOW
        )
        assert got.manager_id == "m2"


def test_list_shows_status_online_and_assigned_counts(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    seed_group(store, "g1", ("m1", "free", True), ("m2", "lunch", False))
    rotation = MongoManagerRotation(store)
    for n in range(3):
        rotation.assign(TENANT, "g1", new_customer(store, n).customer_id, email_id=f"e{n}", now=NOW)
    assert cli(["managers", "list", "--tenant", TENANT, "--json"]) == 0
    rows = {r["_id"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["m1"] == {
        "_id": "m1",
        "name": "m1",
        "status": "free",
        "online": True,
        "assigned": 3,
        "groups": "g1",
    }
    assert (rows["m2"]["online"], rows["m2"]["assigned"]) == (False, 0)
    assert cli(["managers", "list", "--tenant", TENANT]) == 0
    assert "ASSIGNED" in capsys.readouterr().out


def test_unknown_manager_or_wrong_tenant_is_one_clear_error(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(["managers", "set-status", "nobody", "free"]) == 2
    assert "no manager nobody" in capsys.readouterr().err
    store.managers.insert_one({"_id": "m9", "tenant_id": "ta", "status": "busy"})
    assert cli(["managers", "login", "m9", "--tenant", "tb"]) == 2
    assert "no manager m9 in tenant tb" in capsys.readouterr().err
    assert store.managers.find_one({"_id": "m9"})["status"] == "busy"  # type: ignore[index]


def test_webhook_secret_is_stored_encrypted_and_never_shown(
    settings: Settings,
    store: Store,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOOK_SECRET", "very-secret-value")
    # A name that resolves without a network; its loopback address allowed, as an operator would.
    monkeypatch.setenv("MAILINTAKE_WEBHOOK_ALLOW_NETWORKS", "127.0.0.0/8,::1/128")
    url = "https://localhost/hooks"
    assert (
        cli(["webhooks", "set", "--tenant", TENANT, "--url", url, "--secret-env", "HOOK_SECRET"])
        == 0
    )
    doc = store[WEBHOOKS].find_one({"tenant_id": TENANT})
    assert doc is not None and "very-secret-value" not in json.dumps(doc, default=str)
    assert settings.secret_key is not None
    assert (
        SecretBox(settings.secret_key.get_secret_value()).decrypt(doc["secret_enc"])
        == "very-secret-value"
    )
    capsys.readouterr()
    assert cli(["webhooks", "show", "--tenant", TENANT, "--json"]) == 0
    out = capsys.readouterr().out
    assert url in out and "secret" not in out
    assert cli(["webhooks", "remove", "--tenant", TENANT]) == 0
    assert store[WEBHOOKS].count_documents({"tenant_id": TENANT}) == 0
    assert cli(["webhooks", "show", "--tenant", TENANT]) == 2


def test_webhook_refuses_plain_http_to_a_remote_host(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK_SECRET", "x")
    args = ["webhooks", "set", "--tenant", TENANT, "--secret-env", "HOOK_SECRET", "--url"]
    assert cli([*args, "http://crm.example.com/hook"]) == 2
    assert "https" in capsys.readouterr().err
    assert cli([*args, "ftp://crm.example.com/"]) == 2
