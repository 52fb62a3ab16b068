"""The stages as real child processes, for e2e and fault tests."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from tests.services import REPO


@dataclass
class StageProcesses:
    """Starts, kills and stops `python -m <stage>` children; their logs go to files."""

    env: dict[str, str]
    log_dir: Path
    stage_env: dict[str, dict[str, str]] = field(default_factory=dict)  # one stage's own
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _logs: list[IO[bytes]] = field(default_factory=list)

    def start(self, *stages: str) -> None:
        for stage in stages:
            log = (self.log_dir / f"{stage}.log").open("ab")
            self._logs.append(log)
            self.procs[stage] = subprocess.Popen(
                [sys.executable, "-m", stage],
                env=self.env | self.stage_env.get(stage, {}),
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def kill(self, stage: str) -> None:
        """kill -9: the process gets no chance to finish anything."""
        proc = self.procs[stage]
        proc.kill()
        proc.wait(timeout=30)

    def stop(self, stage: str, timeout: float = 60) -> int:
        """SIGTERM, then wait; the exit code."""
        proc = self.procs[stage]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise

    def stop_all(self) -> dict[str, int]:
        codes = {s: self.stop(s) for s in list(self.procs)}
        for log in self._logs:
            log.close()
        return codes

    def alive(self) -> dict[str, bool]:
        return {s: p.poll() is None for s, p in self.procs.items()}

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name} ---\n{p.read_text(errors='replace')[-4000:]}"
            for p in sorted(self.log_dir.glob("*.log"))
        )


def wait_until(
    predicate: Callable[[], object],
    timeout: float,
    what: str,
    on_timeout: Callable[[], str] | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    detail = on_timeout() if on_timeout else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{detail}")
