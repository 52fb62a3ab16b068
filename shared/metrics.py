"""Prometheus metrics of every mailintake process, named `mailintake_*`.

Label values are stage names, outcomes, states and opaque account ids — never an e-mail
address, a subject or any other content of a mail.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from shared.contracts import Event

OUTCOMES = ("ok", "retried", "dead_lettered")
ACCOUNT_STATES = ("new", "syncing", "ok", "error", "disabled")

PROCESSED = Counter(
    "mailintake_messages_processed",
    "Messages a stage finished, by outcome (ok, retried, dead_lettered).",
    ["stage", "outcome"],
)
HANDLING = Histogram(
    "mailintake_handling_seconds",
    "Time a stage spent handling one message, success or failure.",
    ["stage"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
RETRIES = Counter(
    "mailintake_retries", "Messages sent to their `.retry` queue after a failure.", ["stage"]
)
DEAD_LETTERS = Counter(
    "mailintake_dead_letters", "Messages a stage sent to its dead-letter queue.", ["stage"]
)
MAILS_FETCHED = Counter(
    "mailintake_mails_fetched", "Mails the fetcher published, per account.", ["account"]
)
FETCH_LAG = Gauge(
    "mailintake_fetch_lag_seconds",
    "Seconds since the fetcher last completed a sync of the account.",
    ["account"],
)
FETCHER_HELD = Gauge(
    "mailintake_fetcher_accounts_held", "Accounts whose lease this fetcher replica holds."
)
FETCHER_IDLE = Gauge(
    "mailintake_fetcher_mailboxes_idle",
    "Mailboxes this fetcher replica waits on in IDLE now (the others are busy, polled by "
    "POP3, or connecting).",
)
FETCH_BACKLOG = Gauge(
    "mailintake_fetch_backlog", "Mails left to load in the account's first load.", ["account"]
)


def outcome_recorder(stage: str) -> Callable[[str, Event | None, float], None]:
    """A StageWorker `on_outcome` hook that counts outcomes and observes handling time."""

    def record(outcome: str, _event: Event | None, seconds: float) -> None:
        PROCESSED.labels(stage, outcome).inc()
        HANDLING.labels(stage).observe(seconds)
        if outcome == "retried":
            RETRIES.labels(stage).inc()
        elif outcome == "dead_lettered":
            DEAD_LETTERS.labels(stage).inc()

    for outcome in OUTCOMES:  # every series exists from the start, so rate() sees the first one
        PROCESSED.labels(stage, outcome)
    RETRIES.labels(stage)
    DEAD_LETTERS.labels(stage)
    return record


def record_fetch(account_id: str, *, fetched: int, backlog: int | None = None) -> None:
    """For the fetcher: a sync of `account_id` finished now, having published `fetched` mails."""
    MAILS_FETCHED.labels(account_id).inc(fetched)
    FETCH_LAG.labels(account_id).set(0)
    if backlog is not None:
        FETCH_BACKLOG.labels(account_id).set(backlog)


class AccountsCollector(Collector):
    """Account state, fetch lag and first-load backlog, read from the `accounts` collection.

    Reads the store at scrape time: a fetcher replica exports the accounts it holds (a
    disabled account, held by none, is in `mailintake accounts status`, not here).
    """

    def __init__(self, accounts: Callable[[], Iterable[dict[str, Any]]]) -> None:
        self._accounts = accounts

    def collect(self) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            "mailintake_account_state",
            "1 for the account's current state (new, syncing, ok, error, disabled).",
            labels=["account", "state"],
        )
        lag = GaugeMetricFamily(
            "mailintake_account_fetch_lag_seconds",
            "Seconds since the account's last successful fetch.",
            labels=["account"],
        )
        backlog = GaugeMetricFamily(
            "mailintake_account_backlog",
            "Mails not yet loaded in the account's first load.",
            labels=["account"],
        )
        now = datetime.now(UTC)
        for doc in self._accounts():
            account, current = str(doc["_id"]), account_state(doc)
            for name in ACCOUNT_STATES:
                state.add_metric([account, name], 1.0 if name == current else 0.0)
            last = (doc.get("state") or {}).get("last_fetch_at")
            if isinstance(last, datetime):
                last = last if last.tzinfo else last.replace(tzinfo=UTC)
                lag.add_metric([account], max((now - last).total_seconds(), 0.0))
            progress = doc.get("progress") or {}
            if "total" in progress:
                left = int(progress.get("total") or 0) - int(progress.get("done") or 0)
                backlog.add_metric([account], float(max(left, 0)))
        yield from (state, lag, backlog)


def account_state(doc: dict[str, Any]) -> str:
    """One of ACCOUNT_STATES for an `accounts` document."""
    if not doc.get("enabled", True):
        return "disabled"
    status = str((doc.get("state") or {}).get("status") or "new")
    return status if status in ACCOUNT_STATES else "error"
