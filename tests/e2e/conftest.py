"""Fixtures for tests that run the stages as separate processes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.settings import Settings
from tests.conftest import settings_env
from tests.processes import StageProcesses
from tests.services import REPO


@pytest.fixture
def stage_env(settings: Settings) -> dict[str, str]:
    env = settings_env(settings)
    env["MAILINTAKE_LOG_LEVEL"] = "DEBUG"
    return env


@pytest.fixture
def stages(
    stage_env: dict[str, str], tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[StageProcesses]:
    procs = StageProcesses(stage_env, tmp_path)
    yield procs
    procs.stop_all()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(procs.logs())


@pytest.fixture
def cli(stage_env: dict[str, str]) -> object:
    def run(
        *args: str, stdin: str | None = None, env: dict[str, str] | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "ops.cli", *args],
            cwd=REPO,
            env={**stage_env, **(env or {})},
            input=stdin,
            text=True,
            capture_output=True,
            timeout=60,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"mailintake {' '.join(args)} failed: {result.stderr}")
        return result

    return run
