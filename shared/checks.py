"""`--check`: a stage's readiness as an exit code, for container health checks."""

from __future__ import annotations

import sys
from collections.abc import Callable

from shared.health import connectivity_problems, probe_ready
from shared.messaging import Broker
from shared.settings import Settings
from shared.store import Store
from shared.topology import Topology

EXIT_READY, EXIT_NOT_READY = 0, 1


def check_stage(stage: str, settings: Settings) -> int:
    """0 when `stage` is ready, else 1 with one line saying why.

    With a metrics port, ask the running process's /readyz (is it consuming?); without one,
    check that RabbitMQ, the stage's queue and the store answer from here.
    """
    if settings.metrics_port:
        problem = probe_ready(settings.metrics_port)
        problems = [problem] if problem else []
    else:
        problems = connectivity_problems(_checks(stage, settings))
    if problems:
        print(f"{stage}: not ready: {'; '.join(problems)}", file=sys.stderr)
        return EXIT_NOT_READY
    print(f"{stage}: ready")
    return EXIT_READY


def _checks(stage: str, settings: Settings) -> dict[str, Callable[[], object]]:
    def store() -> None:
        s = Store(settings.mongo_url.get_secret_value(), settings.mongo_database, timeout_ms=3000)
        try:
            s.ping()
        finally:
            s.close()

    def broker() -> None:
        topology = Topology(settings.namespace, settings.delivery_limit)
        b = Broker(settings.amqp_url.get_secret_value(), topology, connect_timeout=3.0)
        try:
            b.connect()
            if stage != "fetcher":  # a consuming stage also needs its work queue
                b.queue_counts(topology.work_queue(stage))
        finally:
            b.close()

    return {"RabbitMQ": broker, "store": store}
