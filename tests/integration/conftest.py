"""Fixtures shared by the integration tests: the `mailintake` command run as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from shared.settings import Settings
from shared.store import Store
from tests.apiclient import Api, open_api
from tests.conftest import settings_env
from tests.services import REPO

Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli(settings: Settings) -> Cli:
    """`mailintake ARGS` in a child process with the test's settings; asserts its exit code."""
    env = settings_env(settings)

    def run(*args: str, expect: int = 0, **extra: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "ops.cli", *args],
            cwd=REPO,
            env={**env, **extra},
            stdin=subprocess.DEVNULL,
            text=True,
            capture_output=True,
            timeout=60,
        )
        assert result.returncode == expect, f"mailintake {' '.join(args)}: {result.stderr}"
        return result

    return run


@pytest.fixture
def api(settings: Settings, store: Store) -> Iterator[Api]:
    """The HTTP API on the test's store (the same app uvicorn serves), through TestClient."""
    yield from open_api(settings, store)
