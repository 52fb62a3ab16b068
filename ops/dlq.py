"""`mailintake dlq list|show|replay|purge QUEUE`: look after dead-lettered messages."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from ops import audit
from ops.context import Context
from ops.deadletters import DeadLetter, parse_age
from ops.output import Progress, UserError, emit, print_json
from shared.wire import JSON

LIST_COLUMNS = ["id", "failed_at", "type", "tenant", "account", "email", "replays", "reason"]
AUDIT_COLUMNS = ["at", "action", "queue", "count", "actor", "message_ids"]
BY_HELP = "who is acting, for the audit trail (default: the operating-system user)"
QUEUE_HELP = "the stage or queue: binder, binder.in, mailintake.binder.in.dlq, ..."


def register(commands: Any) -> None:
    p = commands.add_parser(
        "dlq",
        help="list, show, replay or purge dead-lettered messages",
        description="Messages that kept failing wait in <queue>.dlq with the reason. Fix the "
        "cause, then replay them: every stage is idempotent, so a replay is safe to repeat.",
    )
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, func, text in (
        ("list", cmd_list, "one line per dead-lettered message: id, when, ids, reason"),
        ("show", cmd_show, "everything about the messages (headers, x-death, event)"),
    ):
        q = sub.add_parser(name, help=text, description=text)
        _common(q)
        q.add_argument("--id", help="only the message with this id")
        q.add_argument("--limit", type=int, default=500, help="look at most at N (default 500)")
        q.add_argument("--json", action="store_true", help="print JSON")
        q.set_defaults(func=func)
    _replay_parser(sub)
    g = sub.add_parser("purge", help="delete every message of a dead-letter queue")
    g.add_argument("queue", metavar="QUEUE", help=QUEUE_HELP)
    g.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    g.add_argument("--by", metavar="NAME", help=BY_HELP)
    g.set_defaults(func=cmd_purge)
    a = sub.add_parser(
        "audit",
        help="who replayed or purged dead letters, and when (newest first)",
        description="Every replay and purge is recorded in the `audit` collection: action, "
        "queue, message ids and count, who (the OS user or --by) and when.",
    )
    a.add_argument("--limit", type=int, default=100, help="show at most N records (default 100)")
    a.add_argument("--json", action="store_true", help="print JSON")
    a.set_defaults(func=cmd_audit)


def _common(q: argparse.ArgumentParser) -> None:
    q.add_argument("queue", metavar="QUEUE", help=QUEUE_HELP)
    q.add_argument("--reason", help="only messages whose reason contains this text")
    q.add_argument("--older-than", metavar="AGE", help="only messages that failed AGE ago: 15m, 2h")


def _replay_parser(sub: Any) -> None:
    r = sub.add_parser(
        "replay",
        help="send dead-lettered messages back to their work queue",
        description="Republishes each chosen message to its work queue (publisher confirms), "
        "marked with mailintake-replayed-at and mailintake-replay-count, and removes the "
        "dead-letter copy only once RabbitMQ confirmed the new one.",
    )
    _common(r)
    which = r.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", help="replay the message with this id")
    which.add_argument("--all", action="store_true", help="replay every (matching) message")
    r.add_argument("--dry-run", action="store_true", help="say what would be replayed, do nothing")
    r.add_argument("--limit", type=int, help="replay at most N messages")
    r.add_argument("--rate", type=float, help="at most R messages per second")
    r.add_argument("--by", metavar="NAME", help=BY_HELP)
    r.set_defaults(func=cmd_replay)


def dead_letter_queue(ctx: Context, name: str) -> str:
    """The DLQ named by a stage or queue name; UserError if unknown or not declared."""
    try:
        queue = ctx.topology.resolve(name)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    if queue.endswith(".retry"):
        raise UserError(f"{queue} is a retry queue; name its stage or its .dlq")
    dlq = queue if queue.endswith(".dlq") else ctx.topology.dead_letter_queue(queue)
    if not ctx.broker.queue_exists(dlq):
        raise UserError(f"queue {dlq} does not exist yet (no stage has declared it)")
    return dlq


RETURN_WAIT_SECONDS = 5.0


class Held:
    """The DLQ's messages taken so far (unacked); `ack` settles one for good."""

    def __init__(self, ctx: Context, dlq: str, count: int) -> None:
        self._ctx, self._dlq, self._count = ctx, dlq, count
        self.acked = 0

    def __iter__(self) -> Iterator[DeadLetter]:
        for _ in range(self._count):
            got = self._ctx.broker.get(self._dlq)
            if got is None:
                return
            yield DeadLetter(*got)

    def ack(self, d: DeadLetter) -> None:
        self._ctx.broker.ack(d.delivery_tag)
        self.acked += 1


@contextmanager
def taken(ctx: Context, dlq: str, limit: int | None = None) -> Iterator[Held]:
    """The DLQ's messages, held unacked; whatever is not acked goes back, in order, at the end.

    Bounded by the depth at the start, so messages dead-lettered meanwhile are not taken. A
    quorum queue takes back what was held a moment after it is given back: the end waits
    (RETURN_WAIT_SECONDS at most) until the queue counts it again, so that the next command
    (a purge above all) sees every message.
    """
    depth, _consumers = ctx.broker.queue_counts(dlq)
    held = Held(ctx, dlq, depth if limit is None else min(depth, limit))
    try:
        yield held
    finally:
        ctx.broker.requeue_all()
        _wait_returned(ctx, dlq, depth - held.acked)


def _wait_returned(ctx: Context, dlq: str, expected: int) -> None:
    deadline = time.monotonic() + RETURN_WAIT_SECONDS
    while ctx.broker.queue_counts(dlq)[0] < expected and time.monotonic() < deadline:
        time.sleep(0.02)  # another reader of the DLQ may hold some: never longer than this


def _selector(args: argparse.Namespace) -> Callable[[DeadLetter], bool]:
    age, now = parse_age(args.older_than), datetime.now(UTC)

    def selected(d: DeadLetter) -> bool:
        if args.id and d.id != args.id:
            return False
        return d.matches(args.reason, age, now)

    return selected


def _found(ctx: Context, args: argparse.Namespace) -> tuple[str, list[DeadLetter]]:
    dlq = dead_letter_queue(ctx, args.queue)
    selected = _selector(args)
    with taken(ctx, dlq, args.limit) as messages:
        found = [d for d in messages if selected(d)]
    if args.id and not found:
        raise UserError(f"no message with id {args.id!r} in {dlq} (see `mailintake dlq list`)")
    return dlq, found


def cmd_list(args: argparse.Namespace, ctx: Context) -> int:
    _dlq, found = _found(ctx, args)
    emit([d.summary() for d in found], LIST_COLUMNS, as_json=args.json)
    return 0


def _details(d: DeadLetter) -> dict[str, Any]:
    m = d.message
    event: Any = f"({len(m.body)} bytes of {m.content_type})"
    if m.content_type == JSON:
        event = m.body.decode(errors="replace")
    headers = {k: v for k, v in m.headers.items() if k != "x-death"}
    return {**d.summary(), "routing_key": m.routing_key, "headers": headers, "body": event}


def cmd_show(args: argparse.Namespace, ctx: Context) -> int:
    _dlq, found = _found(ctx, args)
    if args.json:
        print_json([_details(d) for d in found])
        return 0
    for d in found:
        for key, value in _details(d).items():
            print(f"{key:>12}: {value}")
        print()
    if not found:
        print("(none)")
    return 0


def replay(
    ctx: Context,
    dlq: str,
    selected: Callable[[DeadLetter], bool],
    *,
    by: str,
    limit: int | None = None,
    dry_run: bool = False,
    each: Callable[[DeadLetter], None] = lambda d: None,
) -> list[str]:
    """Republish the chosen dead letters to their work queue; the ids done, in order.

    Each copy is confirmed before its dead letter is acked. What was replayed is recorded in
    the audit (by `by`), also when the run is cut short; a dry run changes and records nothing.
    """
    work_queue = dlq.removesuffix(".dlq")
    done: list[str] = []
    try:
        with taken(ctx, dlq) as messages:
            for d in messages:
                if limit is not None and len(done) >= limit:
                    break
                if not selected(d):
                    continue
                if not dry_run:
                    ctx.broker.publish([d.replay_copy(work_queue, datetime.now(UTC), by)])
                    messages.ack(d)  # only now: the copy is confirmed
                each(d)
                done.append(d.id)
    finally:
        if done and not dry_run:
            _audit(ctx, "replay", dlq, done, len(done), by)
    return done


def cmd_replay(args: argparse.Namespace, ctx: Context) -> int:
    dlq = dead_letter_queue(ctx, args.queue)
    work_queue = dlq.removesuffix(".dlq")
    progress = Progress("replayed", 1 if args.id else ctx.broker.queue_counts(dlq)[0])

    def each(d: DeadLetter) -> None:
        if args.dry_run:
            print(f"would replay {d.id} to {work_queue}: {d.reason}")
            return
        progress.step()
        if args.rate:
            time.sleep(1.0 / args.rate)

    done = replay(
        ctx, dlq, _selector(args), by=audit.actor(args.by), limit=args.limit,
        dry_run=args.dry_run, each=each,
    )  # fmt: skip
    progress.finish()
    if args.id and not done:
        raise UserError(f"no message with id {args.id!r} in {dlq} (see `mailintake dlq list`)")
    verb = "would replay" if args.dry_run else "replayed"
    print(f"{verb} {len(done)} message(s) from {dlq} to {work_queue}")
    return 0


def _audit(ctx: Context, action: str, dlq: str, ids: list[str], count: int, by: str) -> None:
    audit.record(
        ctx.store, action=action, queue=dlq, message_ids=ids, count=count, by=by,
        at=datetime.now(UTC),
    )  # fmt: skip


def purge(ctx: Context, dlq: str, *, by: str) -> int:
    """Delete every message of `dlq`; the number deleted, recorded in the audit with `by`."""
    with taken(ctx, dlq, audit.MAX_IDS) as messages:  # the ids, as far as the record keeps them
        ids = [d.id for d in messages]
    purged = ctx.broker.purge(dlq)
    _audit(ctx, "purge", dlq, ids[:purged], purged, by)
    return purged


def cmd_purge(args: argparse.Namespace, ctx: Context) -> int:
    dlq = dead_letter_queue(ctx, args.queue)
    depth, _consumers = ctx.broker.queue_counts(dlq)
    if not args.yes:
        if not sys.stdin.isatty():
            raise UserError(f"purging {dlq} needs confirmation: run it in a terminal or add --yes")
        answer = input(f"Delete all {depth} message(s) of {dlq}? Type the queue name: ")
        if answer.strip() != dlq:
            raise UserError("not confirmed; nothing was deleted")
    purged = purge(ctx, dlq, by=audit.actor(args.by))
    print(f"purged {purged} message(s) from {dlq}")
    return 0


def cmd_audit(args: argparse.Namespace, ctx: Context) -> int:
    rows = audit.newest(ctx.store, args.limit)
    if not args.json:
        for row in rows:
            ids = row["message_ids"]
            more = f" (+{len(ids) - 3})" if len(ids) > 3 else ""
            row["message_ids"] = ", ".join(ids[:3]) + more
    emit(rows, AUDIT_COLUMNS, as_json=args.json)
    return 0
