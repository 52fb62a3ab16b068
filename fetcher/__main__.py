"""`python -m fetcher`: fetch every enabled account whose lease this replica holds."""

from __future__ import annotations

import sys
import threading
from datetime import UTC, datetime

from fetcher.settings import FetcherSettings
from fetcher.supervisor import Supervisor
from shared.errors import ConfigError
from shared.logging import configure_logging
from shared.runtime import open_store
from shared.worker import install_stop_signals


def now() -> datetime:
    return datetime.now(UTC)


def main() -> int:
    settings = FetcherSettings()
    configure_logging(settings.log_format, settings.log_level)
    if settings.secret_key is None:
        raise ConfigError("MAILINTAKE_SECRET_KEY is not set: it decrypts mailbox passwords")
    stop = threading.Event()
    install_stop_signals(stop)
    store = open_store(settings)
    try:
        Supervisor(settings, store, stop, clock=now).run()
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
