"""Mailbox secrets encrypted at rest with Fernet; several keys allow rotation."""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from shared.errors import ConfigError, SecretError


class SecretBox:
    """Encrypts with the first key and decrypts with any (MAILINTAKE_SECRET_KEY=new,old)."""

    def __init__(self, keys: str) -> None:
        parts = [k.strip() for k in keys.split(",") if k.strip()]
        if not parts:
            raise ConfigError("MAILINTAKE_SECRET_KEY is empty: set it to a Fernet key")
        try:
            self._fernet = MultiFernet([Fernet(k.encode()) for k in parts])
        except ValueError as exc:
            raise ConfigError(
                "MAILINTAKE_SECRET_KEY is not a Fernet key (32 url-safe base64-encoded bytes)"
            ) from exc

    @staticmethod
    def generate_key() -> str:
        """A new random key, for set-up scripts and tests."""
        return Fernet.generate_key().decode()

    def encrypt(self, plaintext: str) -> str:
        """The token to store in place of `plaintext`."""
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        """The plaintext behind `token`; SecretError if no configured key opens it."""
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken as exc:
            raise SecretError(
                "a stored secret cannot be decrypted with MAILINTAKE_SECRET_KEY"
            ) from exc

    def rotate(self, token: str) -> str:
        """Re-encrypt `token` under the first (newest) key."""
        try:
            return self._fernet.rotate(token.encode()).decode()
        except InvalidToken as exc:
            raise SecretError(
                "a stored secret cannot be decrypted with MAILINTAKE_SECRET_KEY"
            ) from exc
