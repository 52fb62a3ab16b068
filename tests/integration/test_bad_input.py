"""Broken and hostile mail through the real binder process: it stays up, memory stays bounded."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.blobs import GridFsBlobStore
from shared.messaging import Broker
from shared.settings import Settings
from shared.store import Store
from shared.wire import encode_event
from tests.conftest import settings_env, store_accounts
from tests.integration.test_fetcher_imap import drain
from tests.processes import StageProcesses, wait_until
from tests.unit.test_bad_input import HOSTILE, assert_clear_outcome, fetched, mime_mail

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

PEAK_RSS_LIMIT_MB = 600  # a memory bound for a 30 MiB message, not a timing


@pytest.fixture
def binder(
    settings: Settings, store: Store, broker: Broker, tmp_path: Path
) -> Iterator[StageProcesses]:
    """The binder as its own process on the test's queues and database."""
    stages = StageProcesses(settings_env(settings), tmp_path)
    stages.start("binder")
    queue = broker.topology.work_queue("binder")
    wait_until(lambda: broker.queue_counts(queue)[1] == 1, 60, "the binder", stages.logs)
    yield stages
    stages.stop_all()


def send(broker: Broker, store: Store, settings: Settings, raw: bytes) -> str:
    """Publish a fetched mail as the fetcher does (large ones by GridFS reference)."""
    event = fetched(raw)
    store_accounts(store, [event])
    payload: bytes | None = raw
    if len(raw) > settings.inline_body_limit:
        ref = GridFsBlobStore(store).put(
            f"raw/{event.email_id}", raw, tenant_id=event.tenant_id, content_type="message/rfc822"
        )
        event, payload = event.model_copy(update={"raw_ref": ref}), None
    broker.publish([encode_event(event, payload)])
    return event.email_id


def settle(broker: Broker, store: Store, binder: StageProcesses, ids: list[str]) -> None:
    """Every mail has its document and its next event; the binder lives, its DLQ is empty."""
    outputs: dict[str, object] = {}

    def collect() -> bool:
        for stage in ("assigner", "notifier"):
            outputs.update(
                (e.email_id, e) for e in drain(broker, broker.topology.work_queue(stage))
            )
        return set(ids) <= outputs.keys()

    wait_until(collect, 120, "an outcome event for every mail", on_timeout=binder.logs)
    docs = list(store.emails.find({"_id": {"$in": ids}}))
    assert len(docs) == len(ids)
    for doc in docs:
        assert_clear_outcome(doc, outputs[doc["_id"]])
    assert binder.alive() == {"binder": True}, binder.logs()
    dlq = broker.topology.dead_letter_queue(broker.topology.work_queue("binder"))
    assert broker.queue_counts(dlq)[0] == 0, binder.logs()


def peak_rss_mb(binder: StageProcesses) -> float:
    status = Path(f"/proc/{binder.procs['binder'].pid}/status").read_text()
    line = next(x for x in status.splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


@pytest.mark.slow
def test_hostile_messages_end_clearly_and_memory_stays_bounded(
    binder: StageProcesses, broker: Broker, store: Store, settings: Settings
) -> None:
    ids = [send(broker, store, settings, build()) for build in HOSTILE.values()]
    settle(broker, store, binder, ids)
    peak = peak_rss_mb(binder)
    print(f"binder peak RSS after the hostile messages: {peak:.0f} MB")
    assert peak < PEAK_RSS_LIMIT_MB, f"binder peak RSS {peak:.0f} MB after a 30 MiB message"


@settings(
    max_examples=3,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(mime_mail() | st.binary(max_size=2048), min_size=20, max_size=20))
def test_generated_mime_through_the_real_binder_ends_bound_or_skipped(
    binder: StageProcesses, broker: Broker, store: Store, settings: Settings, mails: list[bytes]
) -> None:
    ids = [send(broker, store, settings, raw) for raw in mails]
    settle(broker, store, binder, ids)
