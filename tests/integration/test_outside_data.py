"""A clone without the data kept outside the repository (the mail corpus): its tests, unit and
integration, are skipped with the reason, and fail with it when `CI` is set."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.services import REPO

pytestmark = pytest.mark.integration


def corpus_tests(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The corpus tests of a clone that has no corpus beside it."""
    environ = {k: v for k, v in os.environ.items() if k != "CI"}
    environ.update(MAILINTAKE_CORPUS_DIR=str(tmp_path / "absent"), **env)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "corpus", *args],
        cwd=REPO, env=environ, text=True, capture_output=True, timeout=120, check=False,
    )  # fmt: skip


def test_a_clone_without_the_corpus_passes_and_says_why_it_skipped(tmp_path: Path) -> None:
    result = corpus_tests(
        tmp_path, "tests/unit/test_mail_corpus.py", "tests/integration/test_binder_stage.py"
    )
    assert result.returncode == 0, result.stdout
    assert f"no mail corpus at {tmp_path / 'absent'}" in result.stdout
    assert "failed" not in result.stdout


def test_a_clone_without_the_corpus_fails_loudly_under_ci(tmp_path: Path) -> None:
    # Without the suite's conftest: under CI it sweeps every test namespace, other runs' too.
    args = ("--noconftest", "tests/unit/test_mail_corpus.py")
    result = corpus_tests(tmp_path, *args, CI="1")
    assert result.returncode == 1, result.stdout
    assert f"Failed: no mail corpus at {tmp_path / 'absent'}" in result.stdout
