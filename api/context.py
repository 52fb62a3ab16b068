"""The command-line Context over the API's own store, for the ops functions that take one."""

from __future__ import annotations

from fastapi import Request

from api.problems import ProblemError
from ops.context import Context
from shared.crypto import SecretBox


def command_context(request: Request) -> Context:
    """A Context sharing the app's settings and store (the caller closes only its broker)."""
    ctx = Context(settings=request.app.state.settings)
    vars(ctx)["store"] = request.app.state.store  # the cached_property's slot: no second client
    return ctx


def secret_box(request: Request) -> SecretBox:
    box: SecretBox | None = request.app.state.secrets
    if box is None:
        raise ProblemError(503, "MAILINTAKE_SECRET_KEY is not set: secrets cannot be stored")
    return box


def close_broker(ctx: Context) -> None:
    if "broker" in vars(ctx):
        ctx.broker.close()
