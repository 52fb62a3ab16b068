"""`mailintake crm import FILE.json`: load customers, orders, managers and groups.

The file is checked whole before anything is written: its shape by pydantic models (one line
per bad value, naming where it is and what it was), ids that are plain strings or integers
(never a query operator such as `{"$gt": ""}`), and no field name that MongoDB would read as an
operator or a path.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)
from pymongo import ReplaceOne

from ops.context import Context
from ops.output import UserError
from shared.mail import normalize_address
from shared.store import bulk_write_in_chunks

COLLECTIONS = ("customers", "orders", "managers", "manager_groups")
SHOWN_ERRORS = 20  # lines printed for a bad file; the rest are counted

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


def _plain_id(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError("expected a string or an integer")
    if isinstance(value, str) and not value.strip():
        raise ValueError("expected a non-empty string")
    return value


# An _id or a reference to one: a plain string or integer, so that it can only ever match itself.
Id = Annotated[str | int, BeforeValidator(_plain_id)]


class _Doc(BaseModel):
    """A CRM document: the fields mailintake reads are checked, the others kept as they are."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, strict=True)

    id: Id = Field(alias="_id")
    tenant_id: Name | None = None


class Customer(_Doc):
    emails: list[str]
    manager_id: Id | None = None
    shop_id: Id | None = None


class Order(_Doc):
    number: Id
    customer_id: Id
    manager_id: Id | None = None
    shop_id: Id | None = None


class Manager(_Doc):
    name: Name
    status: Literal["free", "lunch", "busy", "break"] = "free"
    online: bool = True


class ManagerGroup(_Doc):
    name: Name | None = None
    manager_ids: list[Id]


class CrmFile(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    tenant_id: Name
    customers: list[Customer] = []
    orders: list[Order] = []
    managers: list[Manager] = []
    manager_groups: list[ManagerGroup] = []


FILE_FORMAT = (
    'FILE is one JSON object: {"tenant_id": "T", "customers": [...], "orders": [...], '
    '"managers": [...], "manager_groups": [...]}. A customer is {"_id", "emails": [addresses], '
    '"manager_id"?, "shop_id"?}; an order {"_id", "number", "customer_id", "manager_id"?, '
    '"shop_id"?}; a manager {"_id", "name", "status"?: free|lunch|busy|break, "online"?}; a '
    'group {"_id", "name"?, "manager_ids": [...]}. Ids are strings or integers; other fields '
    "are kept. Each document keeps its _id, so importing twice changes nothing."
)


def register(commands: Any) -> None:
    p = commands.add_parser("crm", help="load CRM data (for demos and tests)")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    i = sub.add_parser(
        "import",
        help="upsert customers, orders, managers and manager groups from JSON",
        description=FILE_FORMAT + " The whole file is checked first: a bad value is reported "
        "with where it is, and nothing is written.",
    )
    i.add_argument("file", metavar="FILE.json")
    i.set_defaults(func=cmd_import)


def parse(data: Any) -> CrmFile:
    """The file's content as checked models; UserError listing every bad value."""
    if not isinstance(data, dict):
        raise UserError(f"the file must hold one JSON object, not {_json_kind(data)}")
    problems = [*_operator_keys(data, "")]
    try:
        crm = CrmFile.model_validate(data)
    except ValidationError as exc:
        problems += [_describe(error) for error in exc.errors()]
        crm = None
    if crm is not None:
        problems += _bad_addresses(crm)
        problems += _foreign_tenant_ids(crm)
    if problems:
        shown = [f"  {line}" for line in problems[:SHOWN_ERRORS]]
        more = len(problems) - len(shown)
        tail = [f"  ... and {more} more"] if more else []
        head = f"{len(problems)} bad value{'s' if len(problems) > 1 else ''}, nothing imported:"
        raise UserError("\n".join([head, *shown, *tail]))
    assert crm is not None
    return crm


def _json_kind(value: Any) -> str:
    kinds = {
        dict: "an object",
        list: "a list",
        str: "a string",
        int: "a number",
        float: "a number",
        bool: "a boolean",
    }
    return "null" if value is None else kinds.get(type(value), type(value).__name__)


def _where(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(the file)"


def _describe(error: Any) -> str:
    """One line: where, what was wrong, the value given (shortened)."""
    loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and "[" in p))
    given = error.get("input")
    shown = json.dumps(given, ensure_ascii=False, default=str)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    if error["type"] == "missing":
        return f"{_where(loc)}: missing"
    if error["type"] == "extra_forbidden":
        return f"{_where(loc)}: unknown key (the file holds {', '.join(COLLECTIONS)}, tenant_id)"
    if error["type"] == "value_error":
        expected = str(error["ctx"]["error"])
    else:
        expected = _EXPECTED.get(error["type"], error["msg"].lower())
    got = "null" if given is None else f"{_json_kind(given)} {shown}"
    return f"{_where(loc)}: {expected}, got {got}"


_EXPECTED = {
    "list_type": "expected a list",
    "string_type": "expected a string",
    "int_type": "expected an integer",
    "bool_type": "expected true or false",
    "literal_error": "expected one of free, lunch, busy, break",
    "model_type": "expected an object",
    "dict_type": "expected an object",
    "string_too_short": "expected a non-empty string",
    "string_too_long": "expected at most 200 characters",
}


def _operator_keys(value: Any, where: str) -> list[str]:
    """Field names MongoDB would take as an operator ($…) or a path (a.b), at any depth."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{where}.{key}" if where else str(key)
            if isinstance(key, str) and (key.startswith("$") or "." in key):
                found.append(f"{here}: field names may not start with $ or contain a dot")
            found += _operator_keys(item, here)
    elif isinstance(value, list):
        for n, item in enumerate(value):
            found += _operator_keys(item, f"{where}[{n}]")
    return found


def _bad_addresses(crm: CrmFile) -> list[str]:
    return [
        f"customers[{n}].emails[{k}]: not an e-mail address, got {json.dumps(address)}"
        for n, customer in enumerate(crm.customers)
        for k, address in enumerate(customer.emails)
        if not normalize_address(address)
    ]


def _foreign_tenant_ids(crm: CrmFile) -> list[str]:
    return [
        f"{kind}[{n}].tenant_id: the file is tenant {crm.tenant_id}'s, got {doc.tenant_id!r}"
        for kind in COLLECTIONS
        for n, doc in enumerate(getattr(crm, kind))
        if doc.tenant_id not in (None, crm.tenant_id)
    ]


def prepare(kind: str, doc: _Doc, tenant_id: str) -> dict[str, Any]:
    """A checked CRM document as mailintake stores it: tenant set, addresses normalised."""
    out = doc.model_dump(by_alias=True, exclude_unset=True)
    out["tenant_id"] = tenant_id
    if isinstance(doc, Customer):
        out["emails"] = list(dict.fromkeys(a for a in map(normalize_address, doc.emails) if a))
        out.setdefault("manager_id", None)
        out.setdefault("created_at", datetime.now(UTC))
    if isinstance(doc, Order):
        out["number"] = str(doc.number)
        out.setdefault("manager_id", None)
    if isinstance(doc, Manager):
        out.update(status=doc.status, online=doc.online)
    return out


def import_data(ctx: Context, data: Any) -> dict[str, int]:
    """Check the whole file, then upsert every document by _id; the counts per collection."""
    crm = parse(data)
    counts: dict[str, int] = {}
    for kind in COLLECTIONS:
        docs = [prepare(kind, d, crm.tenant_id) for d in getattr(crm, kind)]
        if docs:
            _refuse_foreign_ids(ctx, kind, docs, crm.tenant_id)
    for kind in COLLECTIONS:
        docs = [prepare(kind, d, crm.tenant_id) for d in getattr(crm, kind)]
        if docs:
            bulk_write_in_chunks(
                ctx.store[kind],
                [
                    ReplaceOne({"_id": d["_id"], "tenant_id": d["tenant_id"]}, d, upsert=True)
                    for d in docs
                ],
                ordered=True,
            )
        counts[kind] = len(docs)
    return counts


def _refuse_foreign_ids(
    ctx: Context, kind: str, docs: list[dict[str, Any]], tenant_id: str
) -> None:
    """An _id is unique across tenants: one held by another tenant cannot be imported.

    On purpose a query into other tenants' documents (`tenant_id: {$ne: ...}`): which of
    these _ids they hold, reading the _id only.
    """
    ids = [d["_id"] for d in docs]
    held = ctx.store[kind].find({"tenant_id": {"$ne": tenant_id}, "_id": {"$in": ids}}, {"_id": 1})
    foreign = sorted(str(d["_id"]) for d in held)
    if foreign:
        shown = ", ".join(foreign[:5]) + (
            f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        )
        raise UserError(
            f"{kind}: _id {shown} already belong(s) to another tenant; _ids are unique across "
            f"tenants, so give {tenant_id}'s documents their own"
        )


def cmd_import(args: argparse.Namespace, ctx: Context) -> int:
    try:
        with open(args.file, encoding="utf-8") as fh:
            data = json.load(fh)
    except OSError as exc:
        raise UserError(f"{args.file}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise UserError(f"{args.file}: not UTF-8 text (byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise UserError(f"{args.file}: not JSON ({exc.msg} at line {exc.lineno})") from exc
    counts = import_data(ctx, data)
    print(", ".join(f"{n} {kind}" for kind, n in counts.items()) + " imported")
    return 0
