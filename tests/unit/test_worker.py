"""Where failed messages go: retry with a growing delay, or the dead-letter queue."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime

import pytest

from shared.contracts import AccountFailed, Event
from shared.errors import PermanentError, StoreUnavailableError, TransientError
from shared.logging import configure_logging, debug_enabled, get_logger, message_context
from shared.messaging import Broker
from shared.topology import Topology
from shared.wire import H_ATTEMPT, H_ERROR, H_ERROR_CLASS, H_QUEUE, Incoming, encode_event
from shared.worker import EventHandler, RetryPolicy, StageWorker, settle_failure
from tests.fakes import FakeUnitOfWork

POLICY = RetryPolicy(max_retries=3, base_seconds=1.0, max_seconds=5.0)
TOPOLOGY = Topology("mi")


def message(attempt: int = 0) -> Incoming:
    headers: dict[str, object] = {"x-death": [{"count": 1}], "mailintake-tenant": "t1"}
    if attempt:
        headers[H_ATTEMPT] = attempt
    return Incoming(
        queue="mi.binder.in",
        routing_key="mail.fetched.a",
        exchange="mi.events",
        body=b"raw",
        content_type="message/rfc822",
        message_id="m1",
        correlation_id="e1",
        type="mail.fetched",
        headers=headers,
    )


def test_permanent_error_goes_to_the_dlq_at_once_with_its_reason() -> None:
    [out] = settle_failure(message(), PermanentError("bad mail"), POLICY, TOPOLOGY)
    assert out.exchange == "mi.failures" and out.routing_key == "mi.binder.in.dlq"
    assert out.headers[H_ERROR] == "bad mail"
    assert out.headers[H_ERROR_CLASS] == "PermanentError"
    assert out.headers[H_QUEUE] == "mi.binder.in"
    assert out.expiration_ms is None
    assert "x-death" not in out.headers
    assert out.body == b"raw" and out.type == "mail.fetched" and out.message_id == "m1"


@pytest.mark.parametrize(("attempt", "delay_ms"), [(0, 1000), (1, 2000), (2, 4000)])
def test_transient_error_is_retried_later_with_growing_delay(attempt: int, delay_ms: int) -> None:
    [out] = settle_failure(message(attempt), TransientError("store down"), POLICY, TOPOLOGY)
    assert out.exchange == "mi.failures" and out.routing_key == "mi.binder.in.retry"
    assert out.expiration_ms == delay_ms
    assert out.headers[H_ATTEMPT] == attempt + 1


def test_delay_is_capped() -> None:
    assert RetryPolicy(10, 1.0, 5.0).delay_ms(9) == 5000


def test_unknown_error_is_retried_like_a_transient_one() -> None:
    [out] = settle_failure(message(), KeyError("x"), POLICY, TOPOLOGY)
    assert out.routing_key == "mi.binder.in.retry"


def test_exhausted_retries_end_in_the_dlq() -> None:
    [out] = settle_failure(message(3), TransientError("still down"), POLICY, TOPOLOGY)
    assert out.routing_key == "mi.binder.in.dlq"
    assert out.headers[H_ERROR].startswith("retries exhausted (3): still down")


def test_topology_names_and_resolution() -> None:
    t = Topology("mi")
    assert t.exchange == "mi.events"
    assert t.failures_exchange == "mi.failures"
    assert t.failure_queues("webhook") == ("mi.webhook.in.retry", "mi.webhook.in.dlq")
    assert t.work_queue("binder") == "mi.binder.in"
    assert t.resolve("binder") == "mi.binder.in"
    assert t.resolve("binder.in.dlq") == "mi.binder.in.dlq"
    assert t.resolve("mi.notifier.in.retry") == "mi.notifier.in.retry"
    with pytest.raises(ValueError, match="unknown"):
        t.resolve("bogus.in")


def handled(event: Event, _payload: bytes | None) -> list[Event]:
    """A stage handler that has nothing to publish."""
    return []


def refused(event: Event, _payload: bytes | None) -> list[Event]:
    """A stage handler that dead-letters every message."""
    raise PermanentError("no")


def delivered(n: int) -> Incoming:
    event = AccountFailed(
        event_id=f"ev{n}", tenant_id="t1", account_id="a1", occurred_at=datetime.now(UTC),
        owner_id="u1", incident_id=f"i{n}", reason="login_rejected", message="no",
    )  # fmt: skip
    out = encode_event(event)
    return Incoming(
        queue="mi.notifier.in",
        routing_key=out.routing_key,
        exchange=out.exchange,
        body=out.body,
        content_type=out.content_type,
        message_id=out.message_id,
        correlation_id=out.correlation_id,
        type=out.type,
        headers=dict(out.headers or {}),
    )


def batch_worker(
    unit_of_work: FakeUnitOfWork, outcomes: list[str], handler: EventHandler = handled
) -> StageWorker:
    broker = Broker("amqp://127.0.0.1:1/", Topology("mi"))  # never connected here
    return StageWorker(
        "notifier",
        broker,
        handler,
        policy=POLICY,
        on_outcome=lambda o, *_: outcomes.append(o),
        unit_of_work=unit_of_work,
    )


@pytest.mark.parametrize("fail_commit", [False, True], ids=["stored", "commit-failed"])
def test_a_batch_counts_as_handled_only_once_its_unit_of_work_commits(
    fail_commit: bool,
) -> None:
    outcomes: list[str] = []
    failure = StoreUnavailableError("the store went away") if fail_commit else None
    unit_of_work = FakeUnitOfWork(fail_commit=failure)
    outputs = batch_worker(unit_of_work, outcomes).handle_batch([delivered(1), delivered(2)])
    assert [[e.event_id for e in batch] for batch in unit_of_work.begun] == [["ev1", "ev2"]]
    assert unit_of_work.commits == (0 if fail_commit else 1)
    if fail_commit:
        assert outcomes == ["retried", "retried"]
        assert [o.routing_key for o in outputs] == ["mi.notifier.in.retry"] * 2
    else:
        assert outcomes == ["ok", "ok"] and outputs == []


def test_the_unit_of_work_begins_with_the_events_that_could_be_decoded() -> None:
    unreadable = dataclasses.replace(delivered(2), body=b"not an event")
    outcomes: list[str] = []
    unit_of_work = FakeUnitOfWork()
    outputs = batch_worker(unit_of_work, outcomes).handle_batch(
        [delivered(1), unreadable, delivered(3)]
    )
    assert [[e.event_id for e in batch] for batch in unit_of_work.begun] == [["ev1", "ev3"]]
    assert unit_of_work.commits == 1
    assert [o.routing_key for o in outputs] == ["mi.notifier.in.dlq"]
    assert sorted(outcomes) == ["dead_lettered", "ok", "ok"]


def test_a_unit_of_work_that_cannot_begin_still_has_its_batch_handled_and_committed() -> None:
    outcomes: list[str] = []
    unit_of_work = FakeUnitOfWork(fail_begin=StoreUnavailableError("slow to answer"))
    outputs = batch_worker(unit_of_work, outcomes).handle_batch([delivered(1)])
    assert unit_of_work.commits == 1 and outcomes == ["ok"] and outputs == []


def test_nothing_is_committed_when_no_message_of_the_batch_was_handled() -> None:
    outcomes: list[str] = []
    unit_of_work = FakeUnitOfWork()
    outputs = batch_worker(unit_of_work, outcomes, refused).handle_batch([delivered(1)])
    assert len(unit_of_work.begun) == 1 and unit_of_work.commits == 0
    assert [o.routing_key for o in outputs] == ["mi.notifier.in.dlq"]


class LoggingHandler:
    """A stage handler that writes a log line, nested in ids of its own."""

    def __call__(self, event: Event, _payload: bytes | None) -> list[Event]:
        with message_context(step="inner"):
            get_logger("test").info("handling", queue="own-queue")
        return []


def log_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_log_lines_of_a_message_carry_its_ids_and_only_while_it_is_handled(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("json", "INFO")
    broker = Broker("amqp://127.0.0.1:1/", Topology("mi"))  # never connected here
    worker = StageWorker("notifier", broker, LoggingHandler(), policy=POLICY)
    worker.handle_batch([delivered(1)])
    get_logger("test").info("after")
    handling, after = log_lines(capsys.readouterr().err)
    assert handling["event"] == "handling"
    assert (handling["tenant_id"], handling["account_id"]) == ("t1", "a1")
    assert (handling["event_id"], handling["step"]) == ("ev1", "inner")
    assert handling["queue"] == "own-queue"  # a line's own value wins over the context's
    assert "event_id" not in after and "step" not in after


@pytest.mark.parametrize(("level", "written"), [("DEBUG", True), ("INFO", False)])
def test_the_per_message_debug_line_follows_the_level(
    level: str, written: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("json", level)
    assert debug_enabled() is written
    worker = StageWorker("notifier", Broker("amqp://127.0.0.1:1/", Topology("mi")), handled)
    worker.handle_batch([delivered(1)])
    events = [line["event"] for line in log_lines(capsys.readouterr().err)]
    assert ("event_handled" in events) is written
    configure_logging("json", "INFO")


@pytest.fixture
def plain_logs() -> None:
    """Logs to the stream of the moment (an earlier test's capture may be closed)."""
    configure_logging("console", "INFO")


@pytest.mark.usefixtures("plain_logs")
@pytest.mark.parametrize(
    ("error", "poisoned_to"),
    [(PermanentError, "mi.notifier.in.dlq"), (ValueError, "mi.notifier.in.retry")],
    ids=["permanent", "unknown"],
)
def test_a_commit_failing_for_one_message_settles_that_message_alone(
    error: type[Exception], poisoned_to: str
) -> None:
    outcomes: list[str] = []
    unit_of_work = FakeUnitOfWork(poison=frozenset({"ev5"}), poison_error=error)
    worker = batch_worker(unit_of_work, outcomes)
    outputs = worker.handle_batch([delivered(n) for n in range(1, 9)])
    assert [o.routing_key for o in outputs] == [poisoned_to]
    assert outputs[0].message_id == "ev5"
    assert outputs[0].headers[H_ERROR] == "cannot store ['ev5']"
    assert outcomes.count("ok") == 7 and len(outcomes) == 8
    # halves down to the poisonous message: [1-8] -> [1-4] [5-8] -> [5-6] -> [5] [6]; [7-8]
    assert [len(b) for b in unit_of_work.begun] == [8, 4, 4, 2, 1, 1, 2]
    assert unit_of_work.commits == 3  # [1-4], [6], [7-8]; nothing of [5]


@pytest.mark.usefixtures("plain_logs")
def test_a_store_that_is_away_retries_the_unit_without_halving_it() -> None:
    outcomes: list[str] = []
    unit_of_work = FakeUnitOfWork(fail_commit=StoreUnavailableError("the store went away"))
    outputs = batch_worker(unit_of_work, outcomes).handle_batch([delivered(n) for n in range(4)])
    assert len(unit_of_work.begun) == 1
    assert [o.routing_key for o in outputs] == ["mi.notifier.in.retry"] * 4


def sized(n: int, size: int) -> Incoming:
    return dataclasses.replace(delivered(n), body=delivered(n).body + b" " * size)


def test_a_delivered_batch_is_cut_into_units_of_work_by_bytes() -> None:
    unit_of_work = FakeUnitOfWork()
    broker = Broker("amqp://127.0.0.1:1/", Topology("mi"))  # never connected here
    worker = StageWorker(
        "notifier", broker, handled, unit_of_work=unit_of_work, batch_max_bytes=10_000
    )
    batch = [sized(1, 4000), sized(2, 4000), sized(3, 4000), sized(4, 20_000), sized(5, 10)]
    assert worker.handle_batch(batch) == []
    assert [[e.event_id for e in b] for b in unit_of_work.begun] == [
        ["ev1", "ev2"],
        ["ev3"],
        ["ev4"],  # larger than the budget: alone
        ["ev5"],
    ]
    assert unit_of_work.commits == 4


def test_logs_go_to_the_stderr_of_the_moment_not_a_closed_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stream that stderr was when logging was set up, closed since (a test's captured
    output), is never written to again: each line goes to stderr as it is now."""
    import io
    import logging

    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr("sys.stderr", first)
    configure_logging("json", "INFO")
    get_logger("mailintake.test").info("one")
    logging.getLogger("some.library").warning("two")
    first.close()
    monkeypatch.setattr("sys.stderr", second)
    get_logger("mailintake.test").info("three")  # raised "I/O operation on closed file"
    logging.getLogger("some.library").warning("four")
    lines = [json.loads(line) for line in second.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["three", "four"]
