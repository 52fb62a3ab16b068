"""Process start-up shared by the stages: settings → logging → store → broker → worker."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable

from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

from shared.errors import StoreUnavailableError
from shared.health import start_endpoints
from shared.logging import configure_logging, get_logger
from shared.messaging import Broker
from shared.metrics import outcome_recorder
from shared.settings import Settings
from shared.store import Store
from shared.topology import Topology
from shared.worker import (
    DeadLetterRecorder,
    RetryPolicy,
    StageHandler,
    StageWorker,
    install_stop_signals,
)

log = get_logger("mailintake.runtime")


def open_store(settings: Settings, *, wait_seconds: float = 60.0) -> Store:
    """Connect to the store and ensure the indexes, waiting for it to come up."""
    store = Store(settings.mongo_url.get_secret_value(), settings.mongo_database)
    for attempt in Retrying(
        retry=retry_if_exception_type(StoreUnavailableError),
        wait=wait_exponential(multiplier=0.2, max=5),
        stop=stop_after_delay(wait_seconds),
        reraise=True,
        before_sleep=lambda s: log.warning(
            "store_connect_retry", address=store.address, attempt=s.attempt_number
        ),
    ):
        with attempt:
            store.ping()
    store.ensure_indexes()
    return store


def open_broker(settings: Settings, stage: str | None = None) -> Broker:
    """A broker for `stage`, as its own RabbitMQ user when one is set (stage_amqp_url)."""
    topology = Topology(settings.namespace, settings.delivery_limit)
    url = settings.stage_amqp_url(stage) if stage else settings.amqp_url.get_secret_value()
    return Broker(url, topology, prefetch=settings.prefetch)


def retry_policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(
        settings.max_retries, settings.retry_base_seconds, settings.retry_max_seconds
    )


def run_stage(
    stage: str,
    build_handler: Callable[[Settings, Store], StageHandler],
    settings: Settings | None = None,
    stop: threading.Event | None = None,
    *,
    build_dead_letters: Callable[[Settings, Store], DeadLetterRecorder] | None = None,
) -> int:
    """Run one consuming stage (binder, assigner, notifier) until SIGTERM; the exit code.

    `build_handler`: the stage's handler and the unit of work of its batches;
    `build_dead_letters`: what records the messages the stage dead-letters, if anything.
    """
    settings = settings or Settings()
    configure_logging(settings.log_format, settings.log_level)
    if "--check" in sys.argv[1:]:  # `python -m binder --check`: readiness as the exit code
        from shared.checks import check_stage

        return check_stage(stage, settings)
    store = open_store(settings)
    handler = build_handler(settings, store)
    worker = StageWorker(
        stage,
        open_broker(settings, stage),
        handler.handle,
        policy=retry_policy(settings),
        on_outcome=outcome_recorder(stage),
        unit_of_work=handler.unit_of_work,
        dead_letters=build_dead_letters(settings, store) if build_dead_letters else None,
        batch_max_bytes=settings.batch_max_bytes,
    )
    endpoints = start_endpoints(
        settings.metrics_port,
        consuming={worker.queue: worker.consuming},
        store_ping=store.ping,
        host=settings.metrics_host,
    )
    if stop is None:
        install_stop_signals(worker.stop)
    else:
        worker.stop = stop
    log.info("stage_starting", stage=stage, namespace=settings.namespace)
    try:
        worker.run()
    finally:
        if endpoints is not None:
            endpoints.shutdown()
        store.close()
    return 0
