"""`mailintake accounts …`: connect mailboxes and look after them."""

from __future__ import annotations

import argparse
import os
import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from ops import oauth
from ops.context import Context
from ops.known import require_tenant
from ops.output import UserError, emit, print_json, read_secret
from shared.accounts import (
    MAX_ACCOUNTS_PER_TENANT,
    STATUS_COLUMNS,
    Account,
    AccountConfig,
    check_credential,
    status_row,
)
from shared.netpolicy import AddressRefusedError, HostNotResolvedError, mailbox_policy
from shared.store import Doc, Store

LIST_COLUMNS = [
    "_id",
    "tenant_id",
    "protocol",
    "host",
    "port",
    "username",
    "folder",
    "enabled",
    "auth",
    "status",
]
HIDDEN = {"password_enc", "oauth_client_secret_enc", "oauth_refresh_token_enc"}
HIDDEN |= {"oauth_access_token_enc"}
PLAINTEXT_PORTS = (110, 143)


def register(commands: Any) -> None:
    p = commands.add_parser(
        "accounts",
        help="add, list and manage mail accounts",
        description="Mail accounts: at most 10 per tenant, IMAP or POP3.",
    )
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    _add_parser(sub)
    oauth.register(sub)
    for name, help_text in (("list", "list the accounts"), ("status", "sync state and progress")):
        q = sub.add_parser(name, help=help_text)
        q.add_argument("--tenant", help="only this tenant's accounts")
        q.add_argument("--json", action="store_true", help="print JSON")
        q.set_defaults(func=cmd_list if name == "list" else cmd_status)
    for name, func, help_text in (
        ("test", cmd_test, "connect, log in and open the folder; say what failed"),
        ("show", cmd_show, "everything stored about an account (never its password)"),
        ("enable", cmd_enable, "start fetching an account"),
        ("disable", cmd_disable, "stop fetching an account (within one lease period)"),
        ("remove", cmd_remove, "delete an account (its mail stays)"),
    ):
        q = sub.add_parser(name, help=help_text)
        q.add_argument("account_id", metavar="ID")
        q.add_argument("--json", action="store_true", help="print JSON")
        q.set_defaults(func=func)


def _add_parser(sub: Any) -> None:
    a = sub.add_parser(
        "add",
        help="connect a mailbox; prints the new account's id",
        description="Connect a mailbox. The password is read from stdin or an "
        "environment variable, never from the command line, and stored encrypted.",
        epilog=oauth.OAUTH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a.add_argument("--tenant", required=True, help="the CRM installation (tenant id)")
    a.add_argument("--owner", required=True, help="user who sets it up (gets skip/error notices)")
    a.add_argument("--protocol", required=True, help="imap (recommended) or pop3")
    a.add_argument("--host", required=True)
    a.add_argument("--port", type=int, default=0, help="default: by protocol and security")
    a.add_argument(
        "--security",
        default=None,
        help="ssl (default), starttls, or none (plaintext: must be said explicitly)",
    )
    a.add_argument("--username", required=True)
    pw = a.add_mutually_exclusive_group()  # one of them unless --auth oauth2
    pw.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    pw.add_argument("--password-env", metavar="VAR", help="read the password from $VAR")
    a.add_argument("--folder", default="INBOX")
    a.add_argument("--shop", help="the shop this mailbox belongs to")
    a.add_argument(
        "--delete-after-import",
        action="store_true",
        help="delete loaded messages from the server (default: mark them read)",
    )
    a.add_argument(
        "--notify-manager",
        action="store_true",
        help="notify the customer's or order's manager of each mail",
    )
    a.add_argument(
        "--create-customer",
        action="store_true",
        help="create a customer when the sender is unknown",
    )
    a.add_argument("--manager-group", help="group whose managers get the created customers")
    a.add_argument(
        "--notify-skipped",
        action="store_true",
        help="tell the owner about each mail that was not loaded",
    )
    a.add_argument(
        "--ignore-auto-replies",
        action="store_true",
        help="never create customers from auto-replies and bounces",
    )
    a.add_argument(
        "--thread-replies",
        action="store_true",
        help="bind untagged replies to the order of the mail they answer",
    )
    a.add_argument(
        "--tag-requires-sender",
        action="store_true",
        help="bind by [#NUMBER] only when the sender is the order's customer",
    )
    a.add_argument(
        "--initial-sync",
        choices=["unseen", "all", "new"],
        default="unseen",
        help="first load: unread mail (default), all mail, or only new mail",
    )
    a.add_argument(
        "--poll-interval",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="poll period when the server has no IDLE (default 60)",
    )
    a.add_argument("--ca-file", metavar="PEM", help="trust this CA for the server certificate")
    a.add_argument(
        "--max-message-bytes",
        type=int,
        default=25 * 1024 * 1024,
        metavar="BYTES",
        help="larger mail is skipped as too large (default 25 MiB)",
    )
    oauth.add_arguments(a)
    a.add_argument("--json", action="store_true", help="print the new account as JSON")
    a.set_defaults(func=cmd_add)


def _password(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    if args.auth == "oauth2":
        return oauth.secret_fields(args, ctx)
    if not (args.password_stdin or args.password_env):
        raise UserError("one of --password-stdin or --password-env is required")
    password = read_secret(args.password_env, "password")
    try:
        check_credential("password", password)
    except ValueError as exc:
        raise UserError(f"--password: {exc} (nothing was added)") from exc
    return {"password_enc": ctx.secrets.encrypt(password)}


def _check_host(config: AccountConfig) -> None:
    try:
        vet_mailbox_host(config, what="--host: the mailbox host")
    except (AddressRefusedError, HostNotResolvedError) as exc:
        raise UserError(f"{exc} (nothing was added)") from exc


def vet_mailbox_host(config: AccountConfig, *, what: str) -> None:
    """With MAILINTAKE_MAILBOX_DENY_PRIVATE, the host must resolve to an allowed address:
    AddressRefusedError or HostNotResolvedError if not."""
    policy = mailbox_policy()
    if policy is not None:
        policy.vet(config.host, config.port, what=what)


def _config(args: argparse.Namespace) -> AccountConfig:
    problems = []
    if args.ca_file and not os.path.isfile(args.ca_file):
        problems.append(f"--ca-file: {args.ca_file}: no such file")
    if args.security is None and args.port in PLAINTEXT_PORTS:
        problems.append(
            f"--port: {args.port} is a plaintext port: say --security starttls, "
            "or --security none to send the password unencrypted"
        )
    try:
        config = AccountConfig(
            tenant_id=args.tenant,
            owner_id=args.owner,
            protocol=args.protocol,
            host=args.host,
            port=args.port,
            security=args.security or "ssl",
            username=args.username,
            folder=args.folder,
            shop_id=args.shop,
            delete_after_import=args.delete_after_import,
            notify_manager=args.notify_manager,
            create_customer=args.create_customer,
            manager_group_id=args.manager_group,
            notify_skipped=args.notify_skipped,
            ignore_auto_replies=args.ignore_auto_replies,
            thread_replies=args.thread_replies,
            tag_requires_sender=args.tag_requires_sender,
            initial_sync=args.initial_sync,
            poll_interval=args.poll_interval,
            ca_file=args.ca_file,
            allow_plaintext=args.security == "none",
            max_message_bytes=args.max_message_bytes,
            **oauth.config_fields(args),
        )
    except ValidationError as exc:
        problems.extend(validation_lines(exc))
        raise UserError("\n".join(problems)) from exc
    if problems:
        raise UserError("\n".join(problems))
    return config


FLAGS = {"tenant_id": "--tenant", "owner_id": "--owner", "shop_id": "--shop"}


def validation_lines(exc: ValidationError) -> list[str]:
    """One line per bad value, named by its command-line flag."""
    lines = []
    for err in exc.errors():
        field = str(err["loc"][0]) if err["loc"] else ""
        flag = FLAGS.get(field, "--" + field.replace("_", "-")) if field else "account"
        message = err["msg"].removeprefix("Value error, ")
        if field and err["type"] != "value_error":
            message = f"{err['input']!r}: {message[0].lower()}{message[1:]}"
        lines.append(f"{flag}: {message}")
    return lines


class AccountLimitError(UserError):
    """Raised when a tenant already has the most accounts it may have."""


def _limit_error(tenant_id: str, count: int) -> AccountLimitError:
    return AccountLimitError(
        f"tenant {tenant_id} already has {count} accounts: "
        f"the limit is {MAX_ACCOUNTS_PER_TENANT} per tenant (nothing was added)"
    )


def _check_group(ctx: Context, config: AccountConfig) -> None:
    """A manager group must exist in the tenant when the account names one."""
    group = config.manager_group_id
    if group is None:
        return
    query = {"_id": group, "tenant_id": config.tenant_id}
    if ctx.store.manager_groups.find_one(query, {"_id": 1}) is None:
        raise UserError(
            f"--manager-group: tenant {config.tenant_id} has no manager group {group!r} "
            "(nothing was added)"
        )


def cmd_add(args: argparse.Namespace, ctx: Context) -> int:
    config = _config(args)
    _check_host(config)
    _check_group(ctx, config)
    doc = insert_account(ctx.store, config, _password(args, ctx), now=datetime.now(UTC))
    if args.json:
        print_json(_public(doc))
    else:
        print(doc["_id"])
    return 0


def insert_account(store: Store, config: AccountConfig, secrets: Doc, *, now: datetime) -> Doc:
    """Store a new account (enabled, state new); AccountLimitError past the tenant's limit."""
    accounts = store.accounts
    count = accounts.count_documents({"tenant_id": config.tenant_id})
    if count >= MAX_ACCOUNTS_PER_TENANT:
        raise _limit_error(config.tenant_id, count)
    doc = {
        **config.model_dump(),
        "_id": uuid.uuid4().hex[:16],
        **secrets,
        "enabled": True,
        "created_at": now,
        "state": {"status": "new"},
        "sync": {},
    }
    accounts.insert_one(doc)
    if accounts.count_documents({"tenant_id": config.tenant_id}) > MAX_ACCOUNTS_PER_TENANT:
        # Another `add` raced this one past the limit: take ours back.
        accounts.delete_one({"tenant_id": config.tenant_id, "_id": doc["_id"]})
        raise _limit_error(config.tenant_id, MAX_ACCOUNTS_PER_TENANT)
    return doc


def _public(doc: Doc) -> Doc:
    return {k: v for k, v in doc.items() if k not in HIDDEN}


def _find(ctx: Context, account_id: str) -> Doc:
    # By id in any tenant, on purpose: the operator names an account by its id (unique across
    # tenants); what follows is done in the tenant this finds.
    doc = ctx.store.accounts.find_one({"_id": account_id})
    if doc is None:
        raise UserError(f"no account with id {account_id!r} (see `mailintake accounts list`)")
    return doc


def _rows(ctx: Context, tenant: str | None) -> list[Doc]:
    if tenant:
        require_tenant(ctx, tenant)
    query = {"tenant_id": tenant} if tenant else {}  # without --tenant: every tenant's, on purpose
    return [_public(d) for d in ctx.store.accounts.find(query).sort([("tenant_id", 1), ("_id", 1)])]


def cmd_list(args: argparse.Namespace, ctx: Context) -> int:
    rows = [
        {**d, "status": (d.get("state") or {}).get("status"), "auth": d.get("auth", "password")}
        for d in _rows(ctx, args.tenant)
    ]
    emit(rows, LIST_COLUMNS, as_json=args.json)
    return 0


def cmd_status(args: argparse.Namespace, ctx: Context) -> int:
    now = datetime.now(UTC)
    rows = [status_row(d, now=now) for d in _rows(ctx, args.tenant)]
    emit(rows, STATUS_COLUMNS, as_json=args.json)
    return 0


def cmd_test(args: argparse.Namespace, ctx: Context) -> int:
    from fetcher.probe import probe  # the mail libraries are loaded only for this command

    doc = _find(ctx, args.account_id)
    account = Account.model_validate(doc)
    result = probe(account, oauth.login_secret(ctx, account))
    if args.json:
        print_json({"ok": result.ok, "reason": result.reason, "message": result.message})
    else:
        print(result.summary)
    return 0 if result.ok else 1


def cmd_show(args: argparse.Namespace, ctx: Context) -> int:
    stored = _find(ctx, args.account_id)
    doc = {**_public(stored), **oauth.show_fields(stored)}
    if doc.get("protocol") == "pop3":
        doc["note"] = "POP3 has no read flag: loaded mail is remembered by its UIDL"
        doc.pop("sync", None)
        taken = (doc.pop("pop3", None) or {}).get("taken") or []
        doc["uidls_taken"] = len(taken)
    if doc.get("deletes_pending"):
        doc["deletes"] = "pending: the server has no UIDPLUS, so loaded mail is only marked read"
    if args.json:
        print_json(doc)
    else:
        for key, value in doc.items():
            print(f"{key:>22}: {value}")
    return 0


def _set_enabled(ctx: Context, account_id: str, enabled: bool) -> None:
    doc = _find(ctx, account_id)
    ctx.store.accounts.update_one(
        {"tenant_id": doc["tenant_id"], "_id": account_id}, {"$set": {"enabled": enabled}}
    )
    print(f"account {account_id} {'enabled' if enabled else 'disabled'}")


def cmd_enable(args: argparse.Namespace, ctx: Context) -> int:
    _set_enabled(ctx, args.account_id, True)
    return 0


def cmd_disable(args: argparse.Namespace, ctx: Context) -> int:
    _set_enabled(ctx, args.account_id, False)
    return 0


def cmd_remove(args: argparse.Namespace, ctx: Context) -> int:
    doc = _find(ctx, args.account_id)
    ctx.store.accounts.delete_one({"tenant_id": doc["tenant_id"], "_id": args.account_id})
    print(f"account {args.account_id} removed")
    return 0
