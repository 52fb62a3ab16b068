"""The mailintake error tree: every failure a stage can raise, permanent or transient."""

from __future__ import annotations


class MailintakeError(Exception):
    """Raised for any failure that mailintake itself recognises (the root of the tree)."""


class PermanentError(MailintakeError):
    """Raised when retrying cannot help: the message goes to the dead-letter queue now."""


class TransientError(MailintakeError):
    """Raised when a later retry may succeed: the message goes to the retry queue."""


class ConfigError(PermanentError):
    """Raised when a setting or an account option has a value mailintake cannot use."""


class InvalidEventError(PermanentError):
    """Raised when an incoming message does not match any known event contract."""


class ForeignKeyError(PermanentError):
    """Raised when a deterministic _id to be written is another tenant's document's already."""


class UntrustedEventError(PermanentError):
    """Raised when an event names what its tenant does not have, or not as the store has it."""


class UnknownAccountError(UntrustedEventError):
    """Raised when an event names an account that its tenant does not have in the store."""


class DeliveryLimitError(PermanentError):
    """Raised when a message comes on its last allowed delivery: consumers died holding it."""


class BrokerUnavailableError(TransientError):
    """Raised when RabbitMQ cannot be reached or drops the connection."""


class PublishNotConfirmedError(TransientError):
    """Raised when RabbitMQ nacks a publish or returns it as unroutable."""


class StoreUnavailableError(TransientError):
    """Raised when the MongoDB-compatible store cannot be reached."""


class SecretError(PermanentError):
    """Raised when a stored secret cannot be decrypted with the configured key."""


class MailboxError(MailintakeError):
    """Raised when a mailbox cannot be used; `reason` is a short machine-readable cause."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class MailboxUnavailableError(MailboxError, TransientError):
    """Raised when the mail server is down, unreachable or times out."""


class MailboxRejectedError(MailboxError, PermanentError):
    """Raised when the mail server refuses the login, the certificate or the folder."""
