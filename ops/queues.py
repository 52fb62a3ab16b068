"""`mailintake queues`: each work queue with its retry and dead-letter queue, and how full."""

from __future__ import annotations

import argparse
import base64
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from ops.context import Context
from ops.output import emit
from shared.logging import redact_text

COLUMNS = ["queue", "ready", "unacked", "consumers", "publish_rate", "deliver_rate"]


def register(commands: Any) -> None:
    q = commands.add_parser(
        "queues",
        help="depth, unacked messages, consumers and rates of every queue",
        description="Per stage: its work queue (.in), retry queue (.retry) and dead-letter queue "
        "(.dlq). With MAILINTAKE_RABBITMQ_MANAGEMENT_URL (e.g. http://user:pass@host:15672/) "
        "the management API adds unacked counts and publish/deliver rates (messages per "
        "second); without it, only ready messages and consumers are shown.",
    )
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=cmd_queues)


def cmd_queues(args: argparse.Namespace, ctx: Context) -> int:
    rows = None
    management = ctx.settings.rabbitmq_management_url
    if management is not None and management.get_secret_value():
        try:
            rows = management_rows(management.get_secret_value(), ctx)
        except ManagementUnavailableError as exc:
            print(f"mailintake: note: {exc}; showing depth only", file=sys.stderr)
    if rows is None:
        rows = amqp_rows(ctx)
    emit(rows, COLUMNS, as_json=args.json)
    return 0


def amqp_rows(ctx: Context) -> list[dict[str, Any]]:
    """Ready messages and consumers from a passive declare (no management API needed)."""
    rows: list[dict[str, Any]] = []
    for queue in ctx.topology.all_queues():
        row: dict[str, Any] = {"queue": queue}
        if ctx.broker.queue_exists(queue):
            row["ready"], row["consumers"] = ctx.broker.queue_counts(queue)
        else:
            row["ready"] = "not declared"
        rows.append(row)
    return rows


class ManagementUnavailableError(Exception):
    """Raised when the management API does not answer as expected."""


def management_rows(url: str, ctx: Context) -> list[dict[str, Any]]:
    """Depth, unacked, consumers and rates of each queue from the management API."""
    vhost = urllib.parse.urlsplit(ctx.settings.amqp_url.get_secret_value()).path[1:] or "/"
    found = {q["name"]: q for q in _get(url, f"api/queues/{urllib.parse.quote(vhost, safe='')}")}
    rows: list[dict[str, Any]] = []
    for name in ctx.topology.all_queues():
        q = found.get(name)
        if q is None:
            rows.append({"queue": name, "ready": "not declared"})
            continue
        stats = q.get("message_stats") or {}
        rows.append(
            {
                "queue": name,
                "ready": q.get("messages_ready", 0),
                "unacked": q.get("messages_unacknowledged", 0),
                "consumers": q.get("consumers", 0),
                "publish_rate": _rate(stats, "publish_details"),
                "deliver_rate": _rate(stats, "deliver_get_details"),
            }
        )
    return rows


def _rate(stats: dict[str, Any], key: str) -> float:
    return round(float((stats.get(key) or {}).get("rate", 0.0)), 2)


def _get(base: str, path: str) -> Any:
    parts = urllib.parse.urlsplit(base)
    netloc = parts.hostname or "127.0.0.1"
    netloc += f":{parts.port}" if parts.port else ""
    full_path = parts.path.rstrip("/") + "/" + path
    url = urllib.parse.urlunsplit((parts.scheme, netloc, full_path, "", ""))
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    if parts.username:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        raise ManagementUnavailableError(
            f"the management API at {redact_text(base)} answered HTTP {exc.code}"
        ) from exc
    except (OSError, ValueError) as exc:
        raise ManagementUnavailableError(
            f"the management API at {redact_text(base)} does not answer: {exc}"
        ) from exc
