"""`mailintake crm import FILE.json`: load customers, orders, managers and groups."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from pymongo import ReplaceOne

from ops.context import Context
from ops.output import UserError
from shared.mail import normalize_address
from shared.store import bulk_write_in_chunks

COLLECTIONS = ("customers", "orders", "managers", "manager_groups")
REQUIRED = {
    "customers": ("_id", "emails"),
    "orders": ("_id", "number", "customer_id"),
    "managers": ("_id", "name"),
    "manager_groups": ("_id", "manager_ids"),
}


def register(commands: Any) -> None:
    p = commands.add_parser("crm", help="load CRM data (for demos and tests)")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    i = sub.add_parser(
        "import",
        help="upsert customers, orders, managers and manager groups from JSON",
        description='FILE holds {"tenant_id": T, "customers": [...], "orders": [...], '
        '"managers": [...], "manager_groups": [...]}; each document keeps its _id, so '
        "importing twice changes nothing.",
    )
    i.add_argument("file", metavar="FILE.json")
    i.set_defaults(func=cmd_import)


def prepare(kind: str, doc: dict[str, Any], tenant_id: str) -> dict[str, Any]:
    """A CRM document as mailintake stores it: tenant set, addresses normalised."""
    missing = [f for f in REQUIRED[kind] if f not in doc]
    if missing:
        raise UserError(f"{kind} entry {doc.get('_id', '?')} lacks {', '.join(missing)}")
    out = {**doc, "tenant_id": doc.get("tenant_id", tenant_id)}
    if kind == "customers":
        out["emails"] = [a for a in (normalize_address(e) for e in doc["emails"]) if a]
        out.setdefault("manager_id", None)
        out.setdefault("created_at", datetime.now(UTC))
    if kind == "orders":
        out["number"] = str(doc["number"])
        out.setdefault("manager_id", None)
    if kind == "managers":
        out.setdefault("status", "free")
        out.setdefault("online", True)
    return out


def import_data(ctx: Context, data: dict[str, Any]) -> dict[str, int]:
    """Upsert every document by _id; the counts per collection."""
    tenant_id = data.get("tenant_id")
    if not isinstance(tenant_id, str) or not tenant_id:
        raise UserError('the file needs a "tenant_id" string')
    counts: dict[str, int] = {}
    for kind in COLLECTIONS:
        docs = [prepare(kind, d, tenant_id) for d in data.get(kind) or []]
        if docs:
            _refuse_foreign_ids(ctx, kind, docs, tenant_id)
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
    except json.JSONDecodeError as exc:
        raise UserError(f"{args.file}: not JSON ({exc.msg} at line {exc.lineno})") from exc
    counts = import_data(ctx, data)
    print(", ".join(f"{n} {kind}" for kind, n in counts.items()) + " imported")
    return 0
