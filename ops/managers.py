"""`mailintake managers …`: a manager's status and log-in state, which decide assignment."""

from __future__ import annotations

import argparse
from typing import Any

from ops.context import Context
from ops.known import require_tenant
from ops.output import UserError, emit
from shared.store import Doc, Store

STATUSES = ("free", "lunch", "busy", "break")
LIST_COLUMNS = ["_id", "name", "status", "online", "assigned", "groups"]


def register(commands: Any) -> None:
    p = commands.add_parser(
        "managers",
        help="set managers' status and log-in state; list them",
        description="New customers go to logged-in managers whose status is free; when none "
        "is, to everyone else in the group.",
    )
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    s = sub.add_parser("set-status", help="set a manager's status")
    s.add_argument("manager_id", metavar="MANAGER")
    s.add_argument("status", choices=STATUSES)
    s.add_argument("--tenant", help="act only if the manager belongs to this tenant")
    s.set_defaults(func=cmd_set_status)
    for name, online in (("login", True), ("logout", False)):
        q = sub.add_parser(name, help=f"mark a manager as logged {'in' if online else 'out'}")
        q.add_argument("manager_id", metavar="MANAGER")
        q.add_argument("--tenant", help="act only if the manager belongs to this tenant")
        q.set_defaults(func=cmd_login if online else cmd_logout)
    ls = sub.add_parser("list", help="a tenant's managers: status, online, customers assigned")
    ls.add_argument("--tenant", required=True)
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(func=cmd_list)


def _find(ctx: Context, manager_id: str, tenant: str | None) -> Doc:
    query: dict[str, Any] = {"_id": manager_id}  # without --tenant: any tenant's, on purpose
    if tenant:
        query["tenant_id"] = tenant
    found = ctx.store.managers.find_one(query)
    if found is None:
        where = f" in tenant {tenant}" if tenant else ""
        raise UserError(f"no manager {manager_id}{where}")
    return found


def update_manager(store: Store, doc: Doc, changes: dict[str, Any]) -> None:
    """Set a found manager's status or log-in state (within its tenant)."""
    store.managers.update_one({"tenant_id": doc["tenant_id"], "_id": doc["_id"]}, {"$set": changes})


def _update(ctx: Context, args: argparse.Namespace, changes: dict[str, Any]) -> int:
    doc = _find(ctx, args.manager_id, args.tenant)
    update_manager(ctx.store, doc, changes)
    shown = ", ".join(
        f"{k}={'yes' if v is True else 'no' if v is False else v}" for k, v in changes.items()
    )
    print(f"manager {doc['_id']} ({doc['tenant_id']}): {shown}")
    return 0


def cmd_set_status(args: argparse.Namespace, ctx: Context) -> int:
    return _update(ctx, args, {"status": args.status})


def cmd_login(args: argparse.Namespace, ctx: Context) -> int:
    return _update(ctx, args, {"online": True})


def cmd_logout(args: argparse.Namespace, ctx: Context) -> int:
    return _update(ctx, args, {"online": False})


def rows(ctx: Context, tenant: str) -> list[Doc]:
    """The tenant's managers with their groups and how many customers each has."""
    groups: dict[str, list[str]] = {}
    for g in ctx.store.manager_groups.find({"tenant_id": tenant}):
        for m in g.get("manager_ids") or []:
            groups.setdefault(str(m), []).append(str(g["_id"]))
    out = []
    for m in ctx.store.managers.find({"tenant_id": tenant}).sort("_id", 1):
        assigned = ctx.store.customers.count_documents(
            {"tenant_id": tenant, "manager_id": m["_id"]}
        )
        out.append(
            {
                "_id": m["_id"],
                "name": m.get("name"),
                "status": m.get("status"),
                "online": bool(m.get("online")),
                "assigned": assigned,
                "groups": ",".join(groups.get(str(m["_id"]), [])),
            }
        )
    return out


def cmd_list(args: argparse.Namespace, ctx: Context) -> int:
    require_tenant(ctx, args.tenant)
    emit(rows(ctx, args.tenant), LIST_COLUMNS, as_json=args.json)
    return 0
