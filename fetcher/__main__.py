"""`python -m fetcher`: fetch every enabled account whose lease this replica holds."""

from __future__ import annotations

import resource
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fetcher.settings import FetcherSettings
from fetcher.supervisor import Supervisor
from shared.checks import check_stage
from shared.errors import ConfigError, StoreUnavailableError
from shared.health import start_endpoints
from shared.logging import configure_logging, get_logger
from shared.metrics import AccountsCollector
from shared.runtime import open_store
from shared.store import Store, store_errors
from shared.worker import install_stop_signals

log = get_logger("mailintake.fetcher")

METRIC_FIELDS = {"enabled": 1, "state": 1, "progress": 1}  # no addresses, no secrets


def now() -> datetime:
    return datetime.now(UTC)


def account_docs(store: Store, supervisor: Supervisor) -> Callable[[], list[dict[str, Any]]]:
    """What the accounts metrics read at scrape time: the accounts this replica holds, so that
    each account is exported by one replica (the sum over replicas counts each once) and a
    scrape reads what the replica holds, not every tenant's accounts. Nothing while the store
    is away."""

    def read() -> list[dict[str, Any]]:
        held = [held.account for held in list(supervisor.runners.values())]
        if not held:
            return []
        query = {
            "tenant_id": {"$in": sorted({a.tenant_id for a in held})},
            "_id": {"$in": [a.id for a in held]},
        }
        try:
            with store_errors("read accounts for metrics"):
                return list(store.accounts.find(query, METRIC_FIELDS))
        except StoreUnavailableError as exc:
            log.warning("metrics_store_unavailable", error=str(exc))
            return []

    return read


def leases_probe(supervisor: Supervisor) -> Callable[[], str | None]:
    """Ready once a lease round reached the store within the last lease period."""

    def probe() -> str | None:
        last, seconds = supervisor.last_tick, supervisor.leases.seconds
        if last is None:
            return "no lease round has reached the store yet"
        age = (now() - last).total_seconds()
        return f"no lease round has reached the store for {age:.0f}s" if age > seconds else None

    return probe


def raise_open_files_limit() -> int:
    """Open files up to the hard limit: each mailbox held is a socket (a soft limit of 1,024
    is common, and a replica holds thousands). The limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("open_files_limit_not_raised", soft=soft, hard=hard, error=str(exc))
    return soft


def main() -> int:
    settings = FetcherSettings()
    configure_logging(settings.log_format, settings.log_level)
    if "--check" in sys.argv[1:]:  # `python -m fetcher --check`: readiness as the exit code
        return check_stage("fetcher", settings)
    log.info("open_files_limit", limit=raise_open_files_limit())
    if settings.secret_key is None:
        raise ConfigError("MAILINTAKE_SECRET_KEY is not set: it decrypts mailbox passwords")
    store = open_store(settings)  # before the handlers: SIGTERM while waiting just ends it
    stop = threading.Event()
    install_stop_signals(stop)
    supervisor = Supervisor(settings, store, stop, clock=now)
    endpoints = start_endpoints(
        settings.metrics_port,
        consuming={},
        store_ping=store.ping,
        collectors=[AccountsCollector(account_docs(store, supervisor))],
        probes={"leases": leases_probe(supervisor)},
        host=settings.metrics_host,
    )
    try:
        supervisor.run()
    finally:
        if endpoints is not None:
            endpoints.shutdown()
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
