"""Secrets: encrypted at rest, rotated keys, redacted from logs."""

from __future__ import annotations

import pytest

from shared.crypto import SecretBox
from shared.errors import ConfigError, SecretError
from shared.logging import redact_secrets, redact_text


def test_secret_round_trip_and_ciphertext_hides_plaintext() -> None:
    box = SecretBox(SecretBox.generate_key())
    token = box.encrypt("hunter2")
    assert "hunter2" not in token
    assert box.decrypt(token) == "hunter2"


def test_rotation_keeps_old_tokens_readable() -> None:
    old, new = SecretBox.generate_key(), SecretBox.generate_key()
    token = SecretBox(old).encrypt("pw")
    both = SecretBox(f"{new},{old}")
    assert both.decrypt(token) == "pw"
    assert SecretBox(new).decrypt(both.rotate(token)) == "pw"


def test_wrong_key_is_a_secret_error() -> None:
    token = SecretBox(SecretBox.generate_key()).encrypt("pw")
    with pytest.raises(SecretError):
        SecretBox(SecretBox.generate_key()).decrypt(token)


@pytest.mark.parametrize("key", ["", "not-a-key"])
def test_bad_key_is_a_config_error(key: str) -> None:
    with pytest.raises(ConfigError, match="MAILINTAKE_SECRET_KEY"):
        SecretBox(key)


def test_url_credentials_are_redacted() -> None:
    text = "cannot reach amqp://admin:s3cret@rabbit:5672/ nor mongodb://u:p@db/x"
    out = redact_text(text)
    assert "s3cret" not in out and "u:p@" not in out
    assert "amqp://***@rabbit:5672/" in out


def test_secret_fields_are_redacted_from_log_events() -> None:
    event = {
        "event": "login",
        "password": "hunter2",
        "client_secret": "x",
        "user": "bob",
        "url": "imaps://bob:hunter2@mail",
    }
    out = redact_secrets(None, "info", dict(event))
    assert out["password"] == "***" and out["client_secret"] == "***"
    assert out["user"] == "bob"
    assert "hunter2" not in str(out)
