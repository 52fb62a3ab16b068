"""Metrics, readiness and dead-letter descriptions, without any service."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from ops.deadletters import H_REPLAY_COUNT, DeadLetter, parse_age
from ops.output import UserError
from shared.health import Readiness
from shared.metrics import PROCESSED, AccountsCollector, outcome_recorder
from shared.wire import H_ATTEMPT, H_ERROR, H_FAILED_AT, H_REPLAYED_AT, H_TENANT, Incoming

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def incoming(**headers: object) -> Incoming:
    return Incoming(
        queue="mi.binder.in.dlq",
        routing_key="mi.binder.in.dlq",
        exchange="",
        body=b"{}",
        content_type="application/json",
        message_id="ev-1",
        correlation_id="mail-1",
        type="mail.bound",
        headers=dict(headers),
    )


def test_outcomes_are_counted_per_stage_and_outcome() -> None:
    record = outcome_recorder("unit-stage")
    before = PROCESSED.labels("unit-stage", "retried")._value.get()
    record("retried", None, 0.02)
    record("ok", None, 0.01)
    assert PROCESSED.labels("unit-stage", "retried")._value.get() == before + 1


def test_account_metrics_carry_opaque_ids_and_no_addresses() -> None:
    accounts = [
        {
            "_id": "a1",
            "username": "orders@shop.example",
            "enabled": True,
            "state": {"status": "error", "last_fetch_at": datetime.now(UTC) - timedelta(minutes=5)},
            "progress": {"done": 40, "total": 100},
        },
        {"_id": "a2", "enabled": False, "state": {"status": "ok"}},
    ]
    registry = CollectorRegistry()
    registry.register(AccountsCollector(lambda: accounts))
    text = generate_latest(registry).decode()
    assert 'mailintake_account_state{account="a1",state="error"} 1.0' in text
    assert 'mailintake_account_state{account="a2",state="disabled"} 1.0' in text
    assert 'mailintake_account_backlog{account="a1"} 60.0' in text
    lag = registry.get_sample_value("mailintake_account_fetch_lag_seconds", {"account": "a1"})
    assert lag is not None and 299 < lag < 600
    assert "@" not in text


def test_readiness_lists_every_failing_probe() -> None:
    ready = Readiness({"broker": lambda: None, "store": lambda: "down"}, cache_seconds=0)
    assert ready.problems() == ["store: down"]
    assert Readiness({"ok": lambda: None}).problems() == []


def test_a_dead_letter_reports_reason_ids_and_age() -> None:
    d = DeadLetter(incoming(**{H_ERROR: "boom", H_TENANT: "t1", H_FAILED_AT: NOW.isoformat()}), 7)
    row = d.summary()
    assert (row["id"], row["reason"], row["tenant"]) == ("ev-1", "boom", "t1")
    assert row["email"] == "mail-1"
    assert d.matches("BOO", parse_age("1h"), NOW + timedelta(hours=2))
    assert not d.matches("nope", None, NOW)
    assert not d.matches(None, parse_age("1h"), NOW)


def test_a_broker_dead_lettered_message_takes_its_reason_from_x_death() -> None:
    death = {"queue": "mi.binder.in", "reason": "delivery_limit", "count": 5, "time": NOW}
    d = DeadLetter(incoming(**{"x-death": [death]}), 1)
    assert d.reason == "delivery_limit in mi.binder.in (5x)"
    assert d.failed_at == NOW
    assert d.matches("delivery_limit", None, NOW)


def test_the_replayed_copy_is_marked_and_loses_failure_headers() -> None:
    d = DeadLetter(incoming(**{H_ERROR: "boom", H_ATTEMPT: 3, H_TENANT: "t1", "x-death": []}), 1)
    copy = d.replay_copy("mi.binder.in", NOW)
    assert (copy.exchange, copy.routing_key, copy.message_id) == ("", "mi.binder.in", "ev-1")
    assert copy.headers == {H_TENANT: "t1", H_REPLAYED_AT: NOW.isoformat(), H_REPLAY_COUNT: 1}
    again = DeadLetter(incoming(**copy.headers), 2).replay_copy("mi.binder.in", NOW)
    assert again.headers[H_REPLAY_COUNT] == 2


def test_ages_are_a_number_and_a_unit() -> None:
    assert parse_age("90s") == timedelta(seconds=90)
    assert parse_age("2h") == timedelta(hours=2)
    with pytest.raises(UserError, match="--older-than"):
        parse_age("soon")
