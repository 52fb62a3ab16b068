"""The mail corpus: real-world and hand-broken messages that nobody here wrote.

It is kept outside the repository: in shared/corpus beside it (`<repo>/../shared/corpus`), or
where MAILINTAKE_CORPUS_DIR points. A test that reads it calls `require_corpus()` first: where
the corpus is absent the test is skipped with the reason, and fails with it when `CI` is set.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

NOT_MAIL = frozenset({"README.md", "LICENSE"})


def corpus_dir() -> Path:
    configured = os.environ.get("MAILINTAKE_CORPUS_DIR")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[2] / "shared" / "corpus"


CORPUS = corpus_dir()
FILES = (
    sorted(p for p in CORPUS.rglob("*") if p.is_file() and p.name not in NOT_MAIL)
    if CORPUS.is_dir()
    else []
)


def file_id(path: Path) -> str:
    return path.relative_to(CORPUS).as_posix()


def corpus_params() -> list[object]:
    """The corpus files as pytest parameters (ids: their paths in the corpus); without a
    corpus, one parameter that skips with the reason (under CI, `test_corpus_is_present`
    fails with it)."""
    if FILES:
        return [pytest.param(path, id=file_id(path)) for path in FILES]
    reason = f"no mail corpus at {CORPUS} (set MAILINTAKE_CORPUS_DIR)"
    return [pytest.param(None, id="no-corpus", marks=pytest.mark.skip(reason=reason))]


def require_outside_data(present: bool, message: str) -> None:
    """Data kept outside the repository: skip without it, or fail under CI (`CI` set)."""
    if present:
        return
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def require_corpus() -> None:
    """The corpus, with at least one message in it (see the module's docstring)."""
    require_outside_data(bool(FILES), f"no mail corpus at {CORPUS} (set MAILINTAKE_CORPUS_DIR)")
