"""`mailintake emails show|attachment|prune-raw`: a mail's whole letter, its parts, its source."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from ops.context import Context
from ops.output import UserError, print_json
from shared.blobs import BlobStream, GridFsBlobStore
from shared.errors import MailintakeError
from shared.letter import (
    BodyField,
    body_text,
    part_ref,
    prunable_raw,
    pruned_raw,
)
from shared.store import Doc, store_errors

_PRUNE_BATCH = 500
T = TypeVar("T")


def register(actions: Any) -> None:
    """The commands on one mail, under `mailintake emails`."""
    s = actions.add_parser(
        "show",
        help="a mail's whole letter: headers, recipients, binding, parts, text",
        description="Prints a loaded mail's letter; --text its text alone, --html its "
        "sanitised HTML, --raw its source as the server held it (bytes, to stdout).",
    )
    s.add_argument("email_id", metavar="ID")
    s.add_argument("--tenant", required=True)
    which = s.add_mutually_exclusive_group()
    for flag, what in (("--text", "text"), ("--html", "html"), ("--raw", "raw")):
        which.add_argument(flag, dest="what", action="store_const", const=what)
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=cmd_show, what=None)
    a = actions.add_parser("attachment", help="write one part of a mail (by its index) to a file")
    a.add_argument("email_id", metavar="ID")
    a.add_argument("index", metavar="INDEX", help="the part's index, as `emails show` lists it")
    a.add_argument("-o", "--output", required=True, metavar="FILE")
    a.add_argument("--tenant", required=True)
    a.set_defaults(func=cmd_attachment)
    p = actions.add_parser(
        "prune-raw",
        help="drop the raw source of mail loaded more than N days ago (the letter stays)",
        description="Without --older-than-days, MAILINTAKE_RAW_RETENTION_DAYS says how long.",
    )
    p.add_argument("--older-than-days", type=int, metavar="N")
    p.add_argument("--tenant", help="only this tenant's mail (default: every tenant's)")
    p.add_argument("--dry-run", action="store_true", help="only count what would be dropped")
    p.set_defaults(func=cmd_prune_raw)


def _email(ctx: Context, tenant: str, email_id: str) -> Doc:
    with store_errors("read the e-mail"):
        doc = ctx.store.emails.find_one({"_id": email_id, "tenant_id": tenant})
    if doc is None:
        raise UserError(f"no e-mail {email_id!r} in tenant {tenant!r}")
    return doc


def _blob(what: str, read: Callable[[], T]) -> T:
    """What `read` reads from the blob store; a document naming a missing blob fails (1)."""
    try:
        return read()
    except KeyError as exc:
        raise MailintakeError(f"{what} is missing from the blob store ({exc})") from exc


def _body(doc: Doc, name: BodyField, blobs: GridFsBlobStore) -> str | None:
    return _blob(f"the {name} of {doc['_id']}", lambda: body_text(doc, name, blobs))


def cmd_show(args: argparse.Namespace, ctx: Context) -> int:
    doc = _email(ctx, args.tenant, args.email_id)
    blobs = GridFsBlobStore(ctx.store)
    if args.what == "raw":
        if args.json:
            raise UserError("--raw writes the source as it is: it takes no --json")
        for piece in _raw(doc, blobs).pieces:  # written as read: never whole in memory
            sys.stdout.buffer.write(piece)
        sys.stdout.buffer.flush()
    elif args.what is not None:
        _show_body(doc, "text" if args.what == "text" else "html_safe", blobs, as_json=args.json)
    elif args.json:
        print_json(_letter(doc, blobs))
    else:
        _print_letter(_letter(doc, blobs))
    return 0


def _show_body(doc: Doc, name: BodyField, blobs: GridFsBlobStore, *, as_json: bool) -> None:
    if "body" not in doc:
        reason = doc.get("skip_reason") or doc.get("status")
        raise UserError(f"e-mail {doc['_id']} was not loaded ({reason}): no letter is kept")
    text = _body(doc, name, blobs)
    if text is None:
        raise UserError(f"e-mail {doc['_id']} has no {'text' if name == 'text' else 'HTML'} body")
    if as_json:
        print_json({name: text})
    else:
        sys.stdout.write(_ended(text))


def _raw(doc: Doc, blobs: GridFsBlobStore) -> BlobStream:
    ref = doc.get("raw_ref")
    if ref is not None:
        return _blob(
            f"the raw source of {doc['_id']}", lambda: blobs.open_own(doc["tenant_id"], ref)
        )
    if doc.get("raw_pruned_at") is not None:
        raise UserError(f"e-mail {doc['_id']}'s raw source was pruned on {doc['raw_pruned_at']}")
    raise UserError(f"e-mail {doc['_id']}'s raw source is not kept (status {doc.get('status')})")


def _letter(doc: Doc, blobs: GridFsBlobStore) -> dict[str, Any]:
    """What `show` prints: the document's fields, with its bodies read."""
    letter = {key: value for key, value in doc.items() if key not in ("body", "event_id")}
    if "body" in doc:
        body = doc["body"]
        letter["text_source"] = body.get("text_source")
        letter["text"] = _body(doc, "text", blobs)
        letter["html_safe"] = _body(doc, "html_safe", blobs)
        letter["has_html"] = body.get("html") is not None or body.get("html_ref") is not None
    return letter


def _print_letter(letter: dict[str, Any]) -> None:
    sender = {"address": letter.get("from_address"), "name": letter.get("from_name")}
    rows = [("ID", letter["_id"]), ("From", _mailbox(sender))]
    for label, key in (("To", "to"), ("Cc", "cc"), ("Reply-To", "reply_to")):
        rows.append((label, ", ".join(map(_mailbox, letter.get(key) or [])) or "-"))
    rows += [
        ("Subject", letter.get("subject") or ""),
        ("Date", letter.get("sent_at") or "-"),
        ("Received", letter.get("received_at") or "-"),
        ("Message-ID", letter.get("message_id") or "-"),
        ("Status", _binding(letter)),
        ("Raw", _raw_state(letter)),
    ]
    rows += [("Part", _part(part)) for part in letter.get("attachments") or []]
    for label, value in rows:
        print(f"{label + ':':<12}{value}")
    if "text" not in letter:
        print(f"\n(no letter kept: the mail was not loaded)\n{letter.get('preview') or ''}")
        return
    source = " (rendered from its HTML)" if letter.get("text_source") == "html" else ""
    print(f"\n--- text{source} ---")
    sys.stdout.write(_ended(letter.get("text") or ""))


def _mailbox(box: dict[str, Any]) -> str:
    if not box.get("address"):
        return "-"
    return f"{box['name']} <{box['address']}>" if box.get("name") else str(box["address"])


def _binding(letter: dict[str, Any]) -> str:
    if letter.get("status") != "bound":
        return f"{letter.get('status')} ({letter.get('skip_reason')})"
    found = [f"{key} {letter[key]}" for key in ("order_id", "customer_id", "manager_id")
             if letter.get(key)]  # fmt: skip
    return " ".join([f"bound by {letter.get('matched_by')}", *found])


def _raw_state(letter: dict[str, Any]) -> str:
    if letter.get("raw_ref"):
        return f"kept ({letter.get('size')} bytes; --raw prints it)"
    if letter.get("raw_pruned_at"):
        return f"pruned on {letter['raw_pruned_at']}"
    return "not kept"


def _part(part: dict[str, Any]) -> str:
    cid = f" cid:{part['content_id']}" if part.get("content_id") else ""
    return (
        f"{part.get('index')}  {part.get('filename') or '(no name)'}  {part.get('content_type')}"
        f"  {part.get('size')} bytes  {part.get('disposition') or '-'}{cid}"
    )


def _ended(text: str) -> str:
    return text if text.endswith("\n") or not text else text + "\n"


def cmd_attachment(args: argparse.Namespace, ctx: Context) -> int:
    doc = _email(ctx, args.tenant, args.email_id)
    count = len(doc.get("attachments") or [])
    try:
        index = int(args.index)
    except ValueError:
        raise UserError(f"part index {args.index!r} is not a number") from None
    if not 0 <= index < count:
        has = f"its parts are 0 to {count - 1}" if count else "it has none"
        raise UserError(f"e-mail {args.email_id} has no part {index} ({has})")
    what = f"part {index} of {args.email_id}"
    blobs = GridFsBlobStore(ctx.store)
    blob = _blob(what, lambda: blobs.open_own(doc["tenant_id"], part_ref(doc, index)))
    try:
        with open(args.output, "wb") as out:
            for piece in blob.pieces:  # written as read: never whole in memory
                out.write(piece)
    except OSError as exc:
        raise UserError(f"cannot write {args.output}: {exc.strerror}") from exc
    print(f"wrote {what} ({blob.length} bytes) to {args.output}")
    return 0


def cmd_prune_raw(args: argparse.Namespace, ctx: Context) -> int:
    days = args.older_than_days
    if days is None:
        days = ctx.settings.raw_retention_days
    if days is None:
        raise UserError("give --older-than-days N or set MAILINTAKE_RAW_RETENTION_DAYS")
    if days < 0:
        raise UserError(f"--older-than-days {days}: must be 0 or more")
    now = datetime.now(UTC)
    with store_errors("read the tenants"):  # every tenant's, on purpose: then one by one
        tenants = [args.tenant] if args.tenant else sorted(ctx.store.emails.distinct("tenant_id"))
    blobs = GridFsBlobStore(ctx.store)
    count = size = 0
    before = now - timedelta(days=days)
    for tenant in tenants:
        pruned, pruned_size = _prune_tenant(ctx, blobs, tenant, before, now, dry_run=args.dry_run)
        count, size = count + pruned, size + pruned_size
    verb = "would prune" if args.dry_run else "pruned"
    print(f"{verb} the raw source of {count} mail(s), {size} bytes, loaded over {days} day(s) ago")
    return 0


def _prune_tenant(
    ctx: Context,
    blobs: GridFsBlobStore,
    tenant: str,
    before: datetime,
    now: datetime,
    *,
    dry_run: bool,
) -> tuple[int, int]:
    """Drop one tenant's raw sources stored before `before`, a batch at a time: each blob
    first, then its document's reference (a run that dies in between is repeated)."""
    query = prunable_raw(tenant, before)
    emails = ctx.store.emails
    with store_errors("prune raw sources"):
        if dry_run:
            sizes = [doc.get("size") or 0 for doc in emails.find(query, {"size": 1})]
            return len(sizes), sum(sizes)
        count = size = 0
        while batch := list(emails.find(query, {"raw_ref": 1, "size": 1}).limit(_PRUNE_BATCH)):
            for doc in batch:
                blobs.delete_own(tenant, doc["raw_ref"])
            ids = [doc["_id"] for doc in batch]
            done = emails.update_many(
                {"tenant_id": tenant, "_id": {"$in": ids}}, {"$set": pruned_raw(now)}
            )
            count, size = count + len(batch), size + sum(doc.get("size") or 0 for doc in batch)
            if done.modified_count == 0:
                break  # changed meanwhile: nothing left to do here
    return count, size
