"""Tests of data kept outside the repository (the mail corpus): on a clone without it they are
skipped with the reason, and fail with it when `CI` is set."""

from __future__ import annotations

import pytest

from tests.corpus import require_outside_data


def test_present_data_is_simply_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "1")
    require_outside_data(True, "never said")


def test_absent_data_skips_with_the_reason_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no corpus at /nowhere"):
        require_outside_data(False, "no corpus at /nowhere")


def test_absent_data_fails_with_the_reason_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no corpus at /nowhere"):
        require_outside_data(False, "no corpus at /nowhere")
