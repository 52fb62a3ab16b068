"""`mailintake tokens create|list|revoke`: the bearer tokens of the HTTP API, stored hashed.

A token reads `mit_<id>_<secret>`: the id finds its document (`api_tokens`, keyed by it), the
SHA-256 of the whole token is all that is stored of it. A tenant token sees one tenant's data;
an operator token the operators' endpoints (queues, dead letters, accounts in error).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ops.context import Context
from ops.output import UserError, emit
from shared.store import Doc, Store, store_errors

COLLECTION = "api_tokens"
PREFIX = "mit_"
LIST_COLUMNS = ["_id", "kind", "tenant_id", "name", "created_at", "revoked_at"]


@dataclass(frozen=True)
class Principal:
    """Who a valid token speaks for: a tenant (`tenant_id`) or an operator (`tenant_id` None)."""

    token_id: str
    name: str
    tenant_id: str | None

    @property
    def operator(self) -> bool:
        return self.tenant_id is None


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(store: Store, *, tenant_id: str | None, name: str, now: datetime) -> str:
    """Store a new token (hashed) and return it: the only time it is seen in full."""
    token_id = secrets.token_hex(6)
    token = f"{PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
    doc = {
        "_id": token_id,
        "kind": "operator" if tenant_id is None else "tenant",
        "tenant_id": tenant_id,
        "name": name,
        "hash": token_hash(token),
        "created_at": now,
        "revoked_at": None,
    }
    with store_errors("store the token"):
        store[COLLECTION].insert_one(doc)
    return token


def authenticate(store: Store, token: str) -> Principal | None:
    """The principal of a valid, unrevoked token; None for anything else."""
    if not token.startswith(PREFIX) or token.count("_") < 2:
        return None
    token_id = token[len(PREFIX) :].split("_", 1)[0]
    with store_errors("read the token"):
        doc = store[COLLECTION].find_one({"_id": token_id})
    if doc is None or doc.get("revoked_at") is not None:
        return None
    if not hmac.compare_digest(str(doc.get("hash", "")), token_hash(token)):
        return None
    return Principal(token_id=token_id, name=str(doc["name"]), tenant_id=doc.get("tenant_id"))


def _scope(args: argparse.Namespace) -> dict[str, Any]:
    if bool(args.tenant) == bool(args.operator):
        raise UserError("say --tenant T (a tenant's token) or --operator (an operator's token)")
    return {"kind": "operator", "tenant_id": None} if args.operator else {"tenant_id": args.tenant}


def register(commands: Any) -> None:
    p = commands.add_parser(
        "tokens",
        help="create, list and revoke the HTTP API's bearer tokens",
        description="A tenant token (--tenant T) reads and changes that tenant's data only; an "
        "operator token (--operator) reaches the queues and dead letters.",
    )
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, func, text in (
        ("create", cmd_create, "a new token, printed once on the last line (stored hashed)"),
        ("list", cmd_list, "the tokens (never their secret)"),
        ("revoke", cmd_revoke, "revoke a token by its id: it stops working at once"),
    ):
        q = sub.add_parser(name, help=text, description=text)
        q.add_argument("--tenant", help="a tenant's tokens")
        q.add_argument("--operator", action="store_true", help="operators' tokens")
        if name == "create":
            q.add_argument("--name", help="who or what uses it (the actor in logs)")
        if name == "revoke":
            q.add_argument("token_id", metavar="ID")
        if name == "list":
            q.add_argument("--json", action="store_true", help="print JSON")
        q.set_defaults(func=func)


def cmd_create(args: argparse.Namespace, ctx: Context) -> int:
    scope = _scope(args)
    name = args.name or ("operator" if args.operator else f"tenant {args.tenant}")
    token = create_token(ctx.store, tenant_id=scope["tenant_id"], name=name, now=datetime.now(UTC))
    who = "operators" if args.operator else f"tenant {args.tenant}"
    print(f"token {token.split('_')[1]} for {who} ({name}); keep it, it is not shown again:")
    print(token)
    return 0


def _rows(ctx: Context, scope: dict[str, Any]) -> list[Doc]:
    with store_errors("read the tokens"):
        found = ctx.store[COLLECTION].find(scope, {"hash": 0}).sort("created_at", 1)
        return list(found)


def cmd_list(args: argparse.Namespace, ctx: Context) -> int:
    emit(_rows(ctx, _scope(args)), LIST_COLUMNS, as_json=args.json)
    return 0


def cmd_revoke(args: argparse.Namespace, ctx: Context) -> int:
    query = {"_id": args.token_id, **_scope(args)}
    with store_errors("revoke the token"):
        done = ctx.store[COLLECTION].update_one(
            {**query, "revoked_at": None}, {"$set": {"revoked_at": datetime.now(UTC)}}
        )
        if done.matched_count == 0 and ctx.store[COLLECTION].find_one(query) is None:
            who = "the operators" if args.operator else f"tenant {args.tenant}"
            raise UserError(f"no token {args.token_id!r} of {who} (see `mailintake tokens list`)")
    print(f"token {args.token_id} revoked")
    return 0


def print_api_access(ctx: Context, tenant: str) -> None:
    """For `mailintake demo`: a token of the demo tenant and the curl that reads its letters."""
    from api.settings import ApiSettings

    addr = ApiSettings().api_addr
    token = create_token(ctx.store, tenant_id=tenant, name="demo", now=datetime.now(UTC))
    print(
        f"\nThe HTTP API of tenant {tenant}: start it with `.venv/bin/mailintake run api` "
        f"(it listens on {addr}, MAILINTAKE_API_ADDR), then read the demo's letters:"
    )
    print(f"  curl -H 'Authorization: Bearer {token}' http://{addr}/letters")
    print(
        f"  (its documentation: http://{addr}/docs; the token is revoked with "
        f"`mailintake tokens revoke --tenant {tenant} {token.split('_')[1]}`)"
    )
