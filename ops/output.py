"""Human tables by default, JSON with --json; errors as one line."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any


class UserError(Exception):
    """Raised for a mistake the user can fix: printed as one line, exit code 2."""


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, bool):
        return "yes" if value else "no"
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, default=_default, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


def print_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """A plain aligned table; `(none)` when there are no rows."""
    if not rows:
        print("(none)")
        return
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def emit(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], *, as_json: bool) -> None:
    if as_json:
        print_json(list(rows))
    else:
        print_table(rows, columns)


class Progress:
    """A progress line on stderr for long work: redrawn on a terminal, every 100 steps if not."""

    def __init__(self, what: str, total: int | None) -> None:
        self.what, self.total, self.done = what, total, 0
        self._tty = sys.stderr.isatty()

    def step(self, n: int = 1) -> None:
        self.done += n
        if self._tty:
            of = f"/{self.total}" if self.total else ""
            print(f"\r  {self.what} {self.done}{of}", end="", file=sys.stderr, flush=True)
        elif self.done % 100 == 0:
            print(f"  {self.what} {self.done}", file=sys.stderr, flush=True)

    def finish(self) -> None:
        if self._tty and self.done:
            print(file=sys.stderr)


def read_secret(env_var: str | None, what: str) -> str:
    """A secret from the named environment variable, else one line of stdin; never argv."""
    if env_var:
        value = os.environ.get(env_var)
        if not value:
            raise UserError(f"environment variable {env_var} is not set or empty")
        return value
    value = sys.stdin.readline().rstrip("\r\n")
    if not value:
        raise UserError(f"no {what} on stdin")
    return value
