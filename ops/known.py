"""Names given on the command line that must exist: a listing of an unknown tenant or user is
a mistake (a typo lists nothing, silently), so it is refused with a line saying so."""

from __future__ import annotations

from ops.context import Context
from ops.output import UserError

# Where a tenant's id appears: it was named by `accounts add --tenant` or `crm import`.
TENANT_HOLDERS = ("accounts", "customers", "managers", "emails", "notifications")


def require_tenant(ctx: Context, tenant: str) -> None:
    """UserError unless some document of the tenant exists (one indexed read per holder)."""
    for name in TENANT_HOLDERS:
        if ctx.store[name].find_one({"tenant_id": tenant}, {"_id": 1}) is not None:
            return
    raise UserError(
        f"unknown tenant {tenant!r}: no account, CRM data or mail carries it "
        "(a tenant is named by `accounts add --tenant` or `crm import`)"
    )


def require_user(ctx: Context, tenant: str, user: str) -> None:
    """UserError unless `user` is one of the tenant's managers, account owners or recipients."""
    require_tenant(ctx, tenant)
    lookups = (
        ("managers", {"tenant_id": tenant, "_id": user}),
        ("accounts", {"tenant_id": tenant, "owner_id": user}),
        ("notifications", {"tenant_id": tenant, "user_id": user}),
    )
    for name, query in lookups:
        if ctx.store[name].find_one(query, {"_id": 1}) is not None:
            return
    raise UserError(
        f"unknown user {user!r} in tenant {tenant!r}: not a manager, an account owner or the "
        "recipient of any notification"
    )
