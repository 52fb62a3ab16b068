"""`mailintake emails list` and `mailintake notifications list` (one mail: ops.letters)."""

from __future__ import annotations

import argparse
from typing import Any

from ops import letters
from ops.context import Context
from ops.known import require_tenant, require_user
from ops.output import emit

EMAIL_COLUMNS = [
    "_id",
    "received_at",
    "from_address",
    "subject",
    "status",
    "matched_by",
    "order_id",
    "customer_id",
    "skip_reason",
]
NOTIFICATION_COLUMNS = ["created_at", "user_id", "kind", "text"]


def register(commands: Any) -> None:
    e = commands.add_parser("emails", help="the mail mailintake took, and what became of it")
    es = e.add_subparsers(dest="action", metavar="ACTION", required=True)
    el = es.add_parser("list", help="a tenant's mail, newest first")
    el.add_argument("--tenant", required=True)
    el.add_argument("--limit", type=int, default=50)
    el.add_argument("--json", action="store_true")
    el.set_defaults(func=cmd_emails)
    letters.register(es)
    n = commands.add_parser("notifications", help="what managers and owners were told")
    ns = n.add_subparsers(dest="action", metavar="ACTION", required=True)
    nl = ns.add_parser("list", help="a tenant's notifications, in the order they were made")
    nl.add_argument("--tenant", required=True)
    nl.add_argument("--user", help="only this user's")
    nl.add_argument("--limit", type=int, default=200)
    nl.add_argument("--json", action="store_true")
    nl.set_defaults(func=cmd_notifications)


def cmd_emails(args: argparse.Namespace, ctx: Context) -> int:
    require_tenant(ctx, args.tenant)
    docs = list(
        ctx.store.emails.find({"tenant_id": args.tenant}, {"attachments": 0, "body": 0})
        .sort([("received_at", -1), ("_id", 1)])
        .limit(args.limit)
    )
    emit(docs, EMAIL_COLUMNS, as_json=args.json)
    return 0


def cmd_notifications(args: argparse.Namespace, ctx: Context) -> int:
    query: dict[str, Any] = {"tenant_id": args.tenant}
    if args.user:
        require_user(ctx, args.tenant, args.user)
    else:
        require_tenant(ctx, args.tenant)
    if args.user:
        query["user_id"] = args.user
    docs = list(
        ctx.store.notifications.find(query).sort([("created_at", 1), ("_id", 1)]).limit(args.limit)
    )
    emit(docs, NOTIFICATION_COLUMNS, as_json=args.json)
    return 0
