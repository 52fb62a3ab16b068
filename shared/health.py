"""The HTTP endpoints of every process: /metrics, /healthz (alive), /readyz (ready to work)."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import REGISTRY, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from shared.errors import MailintakeError
from shared.logging import get_logger

log = get_logger("mailintake.health")

Probe = Callable[[], str | None]  # None when fine, else what is wrong
DEFAULT_HOST = "0.0.0.0"  # probed from outside the container (MAILINTAKE_METRICS_HOST)


@dataclass
class Readiness:
    """Named probes; ready when all pass. Results are cached briefly so probes stay cheap."""

    probes: dict[str, Probe] = field(default_factory=dict)
    cache_seconds: float = 2.0
    _cached: tuple[float, list[str]] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def problems(self) -> list[str]:
        """What keeps the process from being ready (empty when ready)."""
        with self._lock:
            now = time.monotonic()
            if self._cached is not None and now - self._cached[0] < self.cache_seconds:
                return self._cached[1]
            found = []
            for name, probe in self.probes.items():
                try:
                    problem = probe()
                except Exception as exc:  # a probe must never take the endpoint down
                    problem = f"{type(exc).__name__}: {exc}"
                if problem:
                    found.append(f"{name}: {problem}")
            self._cached = (now, found)
            return found


def _handler(readiness: Readiness) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            if path == "/metrics":
                self._send(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                self._send(200, b"ok\n")
            elif path == "/readyz":
                problems = readiness.problems()
                body = ("\n".join(problems) or "ready") + "\n"
                self._send(503 if problems else 200, body.encode())
            else:
                self._send(404, b"not found: /metrics, /healthz or /readyz\n")

        def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Probes every few seconds would flood the logs; stay quiet."""

    return Handler


def serve(
    port: int,
    readiness: Readiness,
    collectors: Sequence[Collector] = (),
    host: str = DEFAULT_HOST,
) -> ThreadingHTTPServer:
    """Start the endpoints on `host`:`port` (0: any free port) in a daemon thread; the server."""
    for collector in collectors:
        REGISTRY.register(collector)
    server = ThreadingHTTPServer((host, port), _handler(readiness))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="health", daemon=True)
    thread.start()
    log.info("health_endpoints", host=host, port=server.server_address[1])
    return server


def probe_ready(port: int, host: str = "127.0.0.1", timeout: float = 5.0) -> str | None:
    """Ask a running process's /readyz: None when ready, else what it says is wrong."""
    url = f"http://{host}:{port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return None if response.status == 200 else response.read().decode().strip()
    except urllib.error.HTTPError as exc:
        return exc.read().decode(errors="replace").strip() or f"HTTP {exc.code}"
    except OSError as exc:
        return f"nothing answers at {url}: {exc}"


def connectivity_problems(checks: dict[str, Callable[[], object]]) -> list[str]:
    """Run each check; one line for each that raised a mailintake error."""
    problems = []
    for name, check in checks.items():
        try:
            check()
        except MailintakeError as exc:
            problems.append(f"{name}: {exc}")
    return problems


def process_readiness(
    consuming: dict[str, threading.Event], store_ping: Callable[[], object]
) -> Readiness:
    """Ready when each consumer (queue -> its `consuming` event) consumes and the store answers."""

    def consumers() -> str | None:
        idle = [queue for queue, event in consuming.items() if not event.is_set()]
        return f"not consuming {', '.join(idle)} (RabbitMQ unreachable?)" if idle else None

    def store() -> str | None:
        problems = connectivity_problems({"ping": store_ping})
        return problems[0] if problems else None

    return Readiness({"broker": consumers, "store": store})


def start_endpoints(
    port: int | None,
    *,
    consuming: dict[str, threading.Event],
    store_ping: Callable[[], object],
    collectors: Sequence[Collector] = (),
    probes: dict[str, Probe] | None = None,
    host: str = DEFAULT_HOST,
) -> ThreadingHTTPServer | None:
    """For any process: serve /metrics, /healthz, /readyz on `host`:`port` (None: nothing).

    A consuming stage passes {queue: worker.consuming}; the fetcher passes {} and
    `AccountsCollector` for the per-account metrics. `probes` adds readiness checks of its own.
    """
    if port is None:
        return None
    readiness = process_readiness(consuming, store_ping)
    readiness.probes.update(probes or {})
    return serve(port, readiness, collectors, host)
