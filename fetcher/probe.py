"""`accounts test`: connect, log in and open the folder, naming precisely what failed."""

from __future__ import annotations

from dataclasses import dataclass

from fetcher.imap import ImapClientMailbox
from fetcher.pop3 import PoplibMailbox
from shared.accounts import AccountConfig
from shared.errors import MailboxError

WHAT_FAILED = {
    "name_resolution": "name resolution failed",
    "connection_refused": "connection refused",
    "timeout": "no answer in time",
    "tls_certificate": "TLS certificate not trusted",
    "login_rejected": "login rejected",
    "folder_missing": "folder missing",
    "token_rejected": "OAuth2 access token refused",
    "oauth_invalid_grant": "OAuth2 authorization revoked or expired (run `accounts authorize`)",
    "oauth_not_authorized": "OAuth2 not authorized yet (run `accounts authorize`)",
    "oauth_invalid_client": "OAuth2 client id or secret refused",
    "oauth_unavailable": "OAuth2 token endpoint unavailable",
}


@dataclass(frozen=True)
class ProbeResult:
    """The outcome of one test connection: ok, or the reason and a one-line message."""

    ok: bool
    reason: str
    message: str
    messages: int | None = None

    @property
    def summary(self) -> str:
        if self.ok:
            return f"ok: {self.message}"
        return f"{WHAT_FAILED.get(self.reason, 'connection failed')}: {self.message}"


def probe(account: AccountConfig, password: str, *, timeout: float = 15.0) -> ProbeResult:
    """Connect, log in and open the folder (IMAP) or list the mailbox (POP3).

    `password` is the access token for OAuth2 accounts.
    """
    where = f"{account.host}:{account.port}"
    try:
        if account.protocol == "pop3":
            with PoplibMailbox(account, password, timeout=timeout) as pop:
                count = pop.stat()
            text = f"logged in to {where} (POP3) as {account.username}: {count} messages"
            return ProbeResult(True, "ok", text, count)
        with ImapClientMailbox(account, password, timeout=timeout) as box:
            box.select(account.folder)
            count = len(box.search(["ALL"]))
        text = f"logged in to {where} as {account.username}, {account.folder}: {count} messages"
        return ProbeResult(True, "ok", text, count)
    except MailboxError as exc:
        return ProbeResult(False, exc.reason, str(exc))
