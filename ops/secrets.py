"""`mailintake secrets rotate`: re-encrypt every stored secret under the newest key."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

from ops.context import Context
from ops.output import emit
from shared.errors import SecretError

# (collection, field holding the Fernet token); `oauth_states` holds the PKCE verifiers of
# authorizations not yet finished: only those that can still be finished are rotated (an
# expired one is never opened again, and is removed a day later).
ENCRYPTED = (
    ("accounts", "password_enc"),
    ("accounts", "oauth_client_secret_enc"),
    ("accounts", "oauth_refresh_token_enc"),
    ("accounts", "oauth_access_token_enc"),
    ("webhooks", "secret_enc"),
    ("oauth_states", "verifier_enc"),
)
STILL_USABLE = {"oauth_states": "expires_at"}


def register(commands: Any) -> None:
    p = commands.add_parser(
        "secrets",
        help="rotate the key that encrypts mailbox passwords, OAuth tokens and webhook secrets",
        description="Key rotation: set MAILINTAKE_SECRET_KEY=NEW,OLD on every process and here, "
        "run `mailintake secrets rotate`, then set MAILINTAKE_SECRET_KEY=NEW.",
    )
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    r = sub.add_parser(
        "rotate",
        help="re-encrypt each stored secret under the first key of MAILINTAKE_SECRET_KEY",
        description="Decrypts each stored secret with any configured key and stores it "
        "encrypted under the first one. Safe to repeat. Exits 1 if a secret opens with none "
        "of the keys (listed by id; those accounts need their password set again).",
    )
    r.add_argument("--dry-run", action="store_true", help="only check that every secret opens")
    r.add_argument("--json", action="store_true", help="print JSON")
    r.set_defaults(func=cmd_rotate)


def rotate_collection(
    ctx: Context, collection: str, field: str, *, dry_run: bool
) -> dict[str, Any]:
    """Rotate one collection's secrets; counts and the ids that no key opens."""
    done, unreadable = 0, []
    query: dict[str, Any] = {field: {"$exists": True}}
    if collection in STILL_USABLE:
        query[STILL_USABLE[collection]] = {"$gt": datetime.now(UTC)}
    # Every tenant's secrets, on purpose: a key rotation re-encrypts them all (each written
    # back by its _id and tenant).
    for doc in ctx.store[collection].find(query, {field: 1, "tenant_id": 1}):
        token = doc.get(field)
        if not isinstance(token, str):
            continue
        try:
            fresh = ctx.secrets.rotate(token)
        except SecretError:
            unreadable.append(str(doc["_id"]))
            continue
        if not dry_run:
            # Compare-and-set: a secret changed meanwhile (a new password) is not overwritten.
            ctx.store[collection].update_one(
                {"_id": doc["_id"], "tenant_id": doc.get("tenant_id"), field: token},
                {"$set": {field: fresh}},
            )
        done += 1
    return {"collection": collection, "field": field, "rotated": done, "unreadable": unreadable}


def cmd_rotate(args: argparse.Namespace, ctx: Context) -> int:
    rows = [rotate_collection(ctx, c, f, dry_run=args.dry_run) for c, f in ENCRYPTED]
    if args.dry_run:
        for row in rows:
            row["readable"] = row.pop("rotated")
    emit(rows, list(rows[0]), as_json=args.json)
    bad = [i for row in rows for i in row["unreadable"]]
    if bad:
        print(
            f"mailintake: error: {len(bad)} secret(s) open with none of the keys: "
            f"{', '.join(bad[:20])}",
            file=sys.stderr,
        )
        return 1
    return 0
