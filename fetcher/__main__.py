"""`python -m fetcher`: pull mail from every enabled account into the pipeline."""

from __future__ import annotations

import sys
import threading
from datetime import UTC, datetime

from fetcher.adapters import BrokerEventPublisher, MongoAccounts, MongoPositionStore
from fetcher.imap import ImapClientMailbox
from fetcher.sync import ImapSync
from shared.accounts import Account
from shared.blobs import GridFsBlobStore
from shared.crypto import SecretBox
from shared.errors import BrokerUnavailableError, ConfigError, MailboxError, StoreUnavailableError
from shared.logging import configure_logging, get_logger
from shared.runtime import open_broker, open_store
from shared.settings import Settings
from shared.store import Store
from shared.worker import install_stop_signals

log = get_logger("mailintake.fetcher")


def now() -> datetime:
    return datetime.now(UTC)


class Fetcher:
    """Polls every enabled IMAP account in turn."""

    def __init__(self, settings: Settings, store: Store, stop: threading.Event) -> None:
        if settings.secret_key is None:
            raise ConfigError("MAILINTAKE_SECRET_KEY is not set: it decrypts mailbox passwords")
        self.settings = settings
        self.store = store
        self.stop = stop
        self.box = SecretBox(settings.secret_key.get_secret_value())
        self.broker = open_broker(settings)
        self.accounts = MongoAccounts(store)
        self.blobs = GridFsBlobStore(store)

    def run(self) -> None:
        self.broker.connect()
        self.broker.declare()
        while not self.stop.is_set():
            accounts = [a for a in self.accounts.enabled() if a.protocol == "imap"]
            for account in accounts:
                if self.stop.is_set():
                    break
                self.sync(account)
            interval = min((a.poll_interval for a in accounts), default=5.0)
            self.stop.wait(min(interval, 5.0))
        self.broker.close()

    def sync(self, account: Account) -> None:
        sync = ImapSync(
            account,
            publisher=BrokerEventPublisher(self.broker),
            positions=MongoPositionStore(self.store, account.tenant_id),
            blobs=self.blobs,
            clock=now,
            inline_limit=self.settings.inline_body_limit,
        )
        try:
            with ImapClientMailbox(account, self.box.decrypt(account.password_enc)) as mailbox:
                result = sync.run(mailbox)
            self.accounts.set_state(account, "ok", now=now(), last_fetch_at=now(), message=None)
            if result.fetched:
                log.info("mail_fetched", account_id=account.id, count=result.fetched)
        except MailboxError as exc:
            log.warning("account_failed", account_id=account.id, reason=exc.reason, error=str(exc))
            self.accounts.set_state(
                account, "error", now=now(), message=str(exc), reason=exc.reason
            )
        except (BrokerUnavailableError, StoreUnavailableError) as exc:
            log.warning("sync_interrupted", account_id=account.id, error=str(exc))


def main() -> int:
    settings = Settings()
    configure_logging(settings.log_format, settings.log_level)
    stop = threading.Event()
    install_stop_signals(stop)
    store = open_store(settings)
    try:
        Fetcher(settings, store, stop).run()
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
