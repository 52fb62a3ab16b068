"""`mailintake webhooks …`: a tenant's outbound webhook (URL, signing secret, attempts)."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from notifier.adapters import WEBHOOKS
from notifier.webhook import MAX_ATTEMPTS_LIMIT, webhook_id
from ops.context import Context
from ops.output import UserError, emit, print_json, read_secret
from shared.accounts import is_loopback
from shared.netpolicy import AddressRefusedError, HostNotResolvedError, webhook_policy

SHOW_COLUMNS = ["tenant_id", "url", "max_attempts", "timeout_seconds", "updated_at"]


def register(commands: Any) -> None:
    p = commands.add_parser(
        "webhooks",
        help="POST each notification of a tenant to a URL, signed (see README)",
        description="One webhook per tenant. Each notification is POSTed as JSON with an "
        "HMAC-SHA256 signature of the body in X-Mailintake-Signature.",
    )
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    s = sub.add_parser("set", help="configure (or replace) a tenant's webhook")
    s.add_argument("--tenant", required=True)
    s.add_argument("--url", required=True, help="https URL (http only for loopback hosts)")
    secret = s.add_mutually_exclusive_group(required=True)
    secret.add_argument("--secret-stdin", action="store_true", help="read the secret from stdin")
    secret.add_argument("--secret-env", metavar="VAR", help="read the secret from $VAR")
    s.add_argument("--max-attempts", type=int, default=8, help="attempts before giving up (8)")
    s.add_argument("--timeout", type=float, default=10.0, help="seconds per attempt (10)")
    s.add_argument("--allow-http", action="store_true", help="allow http:// to a remote host")
    s.set_defaults(func=cmd_set)
    for name, func, text in (
        ("show", cmd_show, "show a tenant's webhook (never its secret)"),
        ("remove", cmd_remove, "stop sending a tenant's notifications"),
    ):
        q = sub.add_parser(name, help=text)
        q.add_argument("--tenant", required=True)
        q.add_argument("--json", action="store_true", help="print JSON")
        q.set_defaults(func=func)


def _secret(args: argparse.Namespace) -> str:
    return read_secret(args.secret_env, "secret")


def check_url(url: str, *, allow_http: bool) -> str:
    """The URL if it is usable: http(s) with a host; plain http only to loopback or allowed;
    its host resolving to an address the network policy allows (checked again at each send)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"--url {url!r}: give an http(s) URL with a host")
    if parts.scheme == "http" and not (allow_http or is_loopback(parts.hostname)):
        raise UserError("--url: plain http sends notifications in clear; use https or --allow-http")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        webhook_policy().vet(parts.hostname, port, what="--url: the webhook host")
    except ValueError as exc:
        raise UserError(f"--url {url!r}: the port is invalid") from exc
    except (AddressRefusedError, HostNotResolvedError) as exc:
        raise UserError(str(exc)) from exc
    return url


def cmd_set(args: argparse.Namespace, ctx: Context) -> int:
    url = check_url(args.url, allow_http=args.allow_http)
    if not 1 <= args.max_attempts <= MAX_ATTEMPTS_LIMIT:
        raise UserError(f"--max-attempts must be between 1 and {MAX_ATTEMPTS_LIMIT}")
    if not 0.5 <= args.timeout <= 120:
        raise UserError("--timeout must be between 0.5 and 120 seconds")
    doc = {
        "_id": webhook_id(args.tenant),
        "tenant_id": args.tenant,
        "url": url,
        "secret_enc": ctx.secrets.encrypt(_secret(args)),
        "max_attempts": args.max_attempts,
        "timeout_seconds": args.timeout,
        "updated_at": datetime.now(UTC),
    }
    ctx.store[WEBHOOKS].replace_one({"_id": doc["_id"], "tenant_id": args.tenant}, doc, upsert=True)
    print(f"webhook of tenant {args.tenant} set to {url}")
    return 0


def cmd_show(args: argparse.Namespace, ctx: Context) -> int:
    doc = ctx.store[WEBHOOKS].find_one(
        {"tenant_id": args.tenant, "_id": webhook_id(args.tenant)}, {"secret_enc": 0}
    )
    if doc is None:
        raise UserError(f"tenant {args.tenant} has no webhook")
    if args.json:
        print_json({k: v for k, v in doc.items() if k != "_id"})
    else:
        emit([doc], SHOW_COLUMNS, as_json=False)
    return 0


def cmd_remove(args: argparse.Namespace, ctx: Context) -> int:
    done = ctx.store[WEBHOOKS].delete_one(
        {"tenant_id": args.tenant, "_id": webhook_id(args.tenant)}
    )
    if done.deleted_count == 0:
        raise UserError(f"tenant {args.tenant} has no webhook")
    print(f"webhook of tenant {args.tenant} removed")
    return 0
