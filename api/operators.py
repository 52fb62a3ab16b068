"""/operator/…: queues, dead letters and accounts in error, for operator tokens only.

The dead-letter endpoints run the `mailintake dlq` code (ops/dlq.py) with the token's name as
the actor, recorded in the audit as the command records its user; each request opens its own
broker connection and closes it.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from api.account_models import AccountStatus, status
from api.auth import Operator, StoreDep
from api.context import close_broker, command_context
from api.problems import FieldError, ProblemError, responses
from ops import dlq
from ops.context import Context
from ops.output import UserError
from ops.queues import ManagementUnavailableError, amqp_rows, management_rows
from shared.logging import get_logger
from shared.store import store_errors

log = get_logger("mailintake.api")
router = APIRouter(
    prefix="/operator", tags=["operator"], responses=responses(400, 401, 403, 404, 422, 503)
)
AGE = r"^\d+(\.\d+)?[smhdSMHD]$"
Reason = Annotated[str | None, Query(max_length=500, description="reason contains this text")]
OlderThan = Annotated[str | None, Query(pattern=AGE, description="failed this long ago: 15m, 2h")]


@contextmanager
def operator_context(request: Request) -> Iterator[Context]:
    """The command context of one request; what `ops` refuses (UserError) is a 404 here."""
    ctx = command_context(request)
    try:
        yield ctx
    except UserError as exc:
        raise ProblemError(404, str(exc)) from exc
    finally:
        close_broker(ctx)


class QueueRow(BaseModel):
    model_config = ConfigDict(extra="allow")

    queue: str
    ready: int | str | None = None
    unacked: int | None = None
    consumers: int | None = None
    publish_rate: float | None = None
    deliver_rate: float | None = None


@router.get("/queues")
def queues(who: Operator, request: Request) -> list[QueueRow]:
    """Each work, retry and dead-letter queue: ready, unacked, consumers, rates."""
    with operator_context(request) as ctx:
        url = ctx.settings.rabbitmq_management_url
        if url is not None and url.get_secret_value():
            try:
                return [QueueRow(**r) for r in management_rows(url.get_secret_value(), ctx)]
            except ManagementUnavailableError as exc:
                log.warning("management_api_unavailable", error=str(exc))
        return [QueueRow(**r) for r in amqp_rows(ctx)]


def _args(queue: str, **given: Any) -> argparse.Namespace:
    base = {"queue": queue, "id": None, "limit": 500, "reason": None, "older_than": None}
    return argparse.Namespace(**{**base, **given})


@router.get("/dlq/{queue}")
def dead_letters(
    queue: str,
    who: Operator,
    request: Request,
    reason: Reason = None,
    older_than: OlderThan = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> list[dict[str, Any]]:
    """The dead-lettered messages of a stage or queue (`binder`, `binder.in`, …)."""
    args = _args(queue, reason=reason, older_than=older_than, limit=limit)
    with operator_context(request) as ctx:
        _queue, found = dlq._found(ctx, args)
        return [d.summary() for d in found]


@router.get("/dlq/{queue}/{message_id}")
def dead_letter(queue: str, message_id: str, who: Operator, request: Request) -> dict[str, Any]:
    """Everything about one dead-lettered message: headers, x-death, the event."""
    with operator_context(request) as ctx:
        _queue, found = dlq._found(ctx, _args(queue, id=message_id))
        return dlq._details(found[0])


class Replay(BaseModel):
    """Which messages to send back to their work queue: one `id`, or `all` (matching)."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    all: bool = False
    reason: str | None = Field(default=None, max_length=500)
    older_than: str | None = Field(default=None, pattern=AGE)
    limit: int | None = Field(default=None, ge=1)
    dry_run: bool = False


class Replayed(BaseModel):
    work_queue: str
    dry_run: bool
    ids: list[str]


@router.post("/dlq/{queue}/replay")
def replay(queue: str, body: Replay, who: Operator, request: Request) -> Replayed:
    """Republish the chosen messages (confirmed) and only then drop their dead-letter copy."""
    if body.all == (body.id is not None):
        error = FieldError(field="body.id", value=body.id, message="give an id or all: true")
        raise ProblemError(422, "say which messages: an id, or all: true", [error])
    args = _args(queue, id=body.id, reason=body.reason, older_than=body.older_than)
    with operator_context(request) as ctx:
        target = dlq.dead_letter_queue(ctx, queue)
        work_queue = target.removesuffix(".dlq")
        ids = dlq.replay(
            ctx, target, dlq._selector(args), by=who.name, limit=body.limit,
            dry_run=body.dry_run,
        )  # fmt: skip
        if body.id is not None and not ids:
            raise UserError(f"no message with id {body.id!r} in {target}")
    log.info("dlq_replayed", actor=who.name, queue=target, count=len(ids), dry_run=body.dry_run)
    return Replayed(work_queue=work_queue, dry_run=body.dry_run, ids=ids)


class Purged(BaseModel):
    queue: str
    purged: int


@router.delete("/dlq/{queue}")
def purge(
    queue: str,
    who: Operator,
    request: Request,
    confirm: Annotated[str, Query(description="the queue's name again")],
) -> Purged:
    """Delete every message of a dead-letter queue; `confirm` repeats the queue's name."""
    if confirm != queue:
        error = FieldError(field="query.confirm", value=confirm, message=f"must be {queue!r}")
        raise ProblemError(422, "confirm must repeat the queue's name", [error])
    with operator_context(request) as ctx:
        target = dlq.dead_letter_queue(ctx, queue)
        count = dlq.purge(ctx, target, by=who.name)
    log.info("dlq_purged", actor=who.name, queue=target, count=count)
    return Purged(queue=target, purged=count)


class TenantAccountStatus(AccountStatus):
    tenant_id: str


@router.get("/accounts")
def accounts_in_error(who: Operator, store: StoreDep) -> list[TenantAccountStatus]:
    """Accounts in error across every tenant (on purpose: this is the operators' view)."""
    now = datetime.now(UTC)
    with store_errors("read the accounts"):
        found = list(
            store.accounts.find({"state.status": "error"}).sort([("tenant_id", 1), ("_id", 1)])
        )
    return [
        TenantAccountStatus(**status(d, now=now).model_dump(), tenant_id=d["tenant_id"])
        for d in found
        if d.get("enabled", True)
    ]
