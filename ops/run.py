"""`mailintake run STAGE|api|all`: run a stage (or the HTTP API) in this process, or all of them
as child processes."""

from __future__ import annotations

import argparse
import importlib
import signal
import subprocess
import sys
import time
from types import FrameType
from typing import Any

from ops.context import Context
from shared.checks import check_stage

STAGES = ("fetcher", "binder", "assigner", "notifier")
PROCESSES = (*STAGES, "api")  # the API serves the CRM; it consumes no queue


def register(commands: Any) -> None:
    r = commands.add_parser(
        "run",
        help="run a pipeline stage, the HTTP API, or all of them",
        description="Run one stage (or the HTTP API) in the foreground, or `all` as child "
        "processes. SIGTERM finishes the message in hand, then exits.",
    )
    r.add_argument("stage", choices=[*PROCESSES, "all"])
    r.add_argument(
        "--check",
        action="store_true",
        help="do not run: exit 0 if the stage is ready, else 1 (asks the running process's "
        "/readyz when MAILINTAKE_METRICS_PORT is set, else checks RabbitMQ and the store)",
    )
    r.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace, ctx: Context) -> int:
    if args.check:
        stages = PROCESSES if args.stage == "all" else (args.stage,)
        return max(_check(stage, ctx) for stage in stages)
    if args.stage != "all":
        module = importlib.import_module(f"{args.stage}.__main__")
        return int(module.main())
    return run_all()


def _check(stage: str, ctx: Context) -> int:
    if stage == "api":
        from api.__main__ import check
        from api.settings import ApiSettings

        return check(ApiSettings())
    return check_stage(stage, ctx.settings)


def run_all() -> int:
    """Start the four stages and the API; stop them all when one dies or on SIGTERM/SIGINT."""
    children = [subprocess.Popen([sys.executable, "-m", s]) for s in PROCESSES]
    stopping = False

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    while not stopping and all(c.poll() is None for c in children):
        time.sleep(0.2)
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    codes = [c.wait(timeout=60) for c in children]
    return 0 if stopping else max(codes, default=1) or 1
