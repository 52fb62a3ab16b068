"""Socket and TLS failures of a mailbox connection, as MailboxError with a short reason."""

from __future__ import annotations

import socket
import ssl

from shared.accounts import AccountConfig
from shared.errors import MailboxError, MailboxRejectedError, MailboxUnavailableError


def connection_error(account: AccountConfig, exc: BaseException) -> MailboxError:
    """What went wrong talking to the server: certificate, name, refused, timeout, or else."""
    where = f"{account.host}:{account.port}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return MailboxRejectedError(
            "tls_certificate", f"TLS certificate of {where} not trusted: {exc.verify_message}"
        )
    if isinstance(exc, socket.gaierror):
        return MailboxUnavailableError(
            "name_resolution", f"cannot resolve {account.host}: {exc.strerror}"
        )
    if isinstance(exc, ConnectionRefusedError):
        return MailboxUnavailableError("connection_refused", f"connection refused by {where}")
    if isinstance(exc, TimeoutError):
        return MailboxUnavailableError("timeout", f"{where} did not answer in time")
    return MailboxUnavailableError("connection_failed", f"{where}: {type(exc).__name__}: {exc}")
