"""`mailintake secrets rotate` on the real store: NEW,OLD in, everything under NEW out."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from shared.crypto import SecretBox
from shared.settings import Settings
from shared.store import Store
from tests.conftest import settings_env
from tests.services import REPO

pytestmark = pytest.mark.integration


def mailintake(settings: Settings, key: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ops.cli", "secrets", *args],
        cwd=REPO,
        env={**settings_env(settings), "MAILINTAKE_SECRET_KEY": key},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_rotation_re_encrypts_every_secret_under_the_new_key(
    settings: Settings, store: Store
) -> None:
    old, new = SecretBox.generate_key(), SecretBox.generate_key()
    store.accounts.insert_one(
        {"_id": "a1", "tenant_id": "t1", "password_enc": SecretBox(old).encrypt("pw-1")}
    )
    store["webhooks"].insert_one(
        {"_id": "w1", "tenant_id": "t1", "secret_enc": SecretBox(old).encrypt("hook-1")}
    )
    now = datetime.now(UTC)
    store["oauth_states"].insert_many(
        [
            {
                "_id": "s-pending",
                "tenant_id": "t1",
                "verifier_enc": SecretBox(old).encrypt("verifier-1"),
                "expires_at": now + timedelta(minutes=10),
            },
            {  # expired: never opened again, so not rotated (nor reported unreadable)
                "_id": "s-expired",
                "tenant_id": "t1",
                "verifier_enc": SecretBox(old).encrypt("verifier-2"),
                "expires_at": now - timedelta(minutes=1),
            },
        ]
    )

    checked = mailintake(settings, new, "rotate", "--dry-run")
    assert checked.returncode == 1
    assert all(i in checked.stderr for i in ("a1", "w1", "s-pending"))
    assert "s-expired" not in checked.stderr

    result = mailintake(settings, f"{new},{old}", "rotate", "--json")
    assert result.returncode == 0, result.stderr
    assert [r["rotated"] for r in json.loads(result.stdout)] == [1, 0, 0, 0, 1, 1]
    account = store.accounts.find_one({"_id": "a1"})
    webhook = store["webhooks"].find_one({"_id": "w1"})
    assert account is not None and webhook is not None
    assert SecretBox(new).decrypt(account["password_enc"]) == "pw-1"
    assert SecretBox(new).decrypt(webhook["secret_enc"]) == "hook-1"
    pending = store["oauth_states"].find_one({"_id": "s-pending"})
    assert pending is not None and SecretBox(new).decrypt(pending["verifier_enc"]) == "verifier-1"
    assert mailintake(settings, new, "rotate", "--dry-run").returncode == 0
