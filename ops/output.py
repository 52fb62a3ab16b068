"""Human tables by default, JSON with --json; errors as one line."""

from __future__ import annotations

import json
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
