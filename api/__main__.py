"""`python -m api` (`mailintake run api`): serve the HTTP API with uvicorn on MAILINTAKE_API_ADDR.

`--check` asks the running API's /readyz (exit 0 ready, 1 not). SIGTERM ends the requests in
hand, then the process.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType

from api.settings import ApiSettings
from shared.health import probe_ready
from shared.logging import configure_logging, get_logger

log = get_logger("mailintake.api")


def check(settings: ApiSettings) -> int:
    problem = probe_ready(settings.api_port, host=_reachable(settings.api_host))
    if problem:
        print(f"api: not ready: {problem}", file=sys.stderr)
        return 1
    print("api: ready")
    return 0


def _reachable(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "") else host


def run(settings: ApiSettings | None = None) -> int:
    import uvicorn

    from api.app import create_app

    settings = settings or ApiSettings()
    if "--check" in sys.argv[1:]:
        return check(settings)
    configure_logging(settings.log_format, settings.log_level)
    log.info("api_starting", addr=settings.api_addr)
    # uvicorn drains on SIGTERM/SIGINT, then raises the signal again into the handler it found:
    # the drain is done by then, so that handler lets the process end with 0 like the stages.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _drained)
    uvicorn.run(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=30,
    )
    log.info("api_stopped")
    return 0


def _drained(_signum: int, _frame: FrameType | None) -> None:
    """Nothing left to do: uvicorn has finished the requests in hand."""


def main() -> int:
    return run()


if __name__ == "__main__":
    sys.exit(main())
