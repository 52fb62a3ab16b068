"""/managers/{id}: a manager's status and log-in state, which decide who gets new customers."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict

from api.auth import StoreDep, Tenant
from api.problems import not_found, responses
from ops.managers import update_manager
from shared.store import Doc, Store, store_errors

router = APIRouter(
    prefix="/managers", tags=["managers"], responses=responses(400, 401, 403, 404, 422)
)


class Manager(BaseModel):
    id: str
    name: str | None = None
    status: str | None = None
    online: bool


class StatusChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["free", "lunch", "busy", "break"]


class OnlineChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    online: bool


def _find(store: Store, tenant: str, manager_id: str) -> Doc:
    with store_errors("read the manager"):
        doc = store.managers.find_one({"_id": manager_id, "tenant_id": tenant})
    if doc is None:
        raise not_found("manager", manager_id)
    return doc


def _view(doc: Doc) -> Manager:
    return Manager(
        id=str(doc["_id"]),
        name=doc.get("name"),
        status=doc.get("status"),
        online=bool(doc.get("online")),
    )


@router.get("/{manager_id}")
def read_manager(manager_id: str, tenant: Tenant, store: StoreDep) -> Manager:
    """A manager's status and whether logged in."""
    return _view(_find(store, tenant, manager_id))


@router.put("/{manager_id}/status")
def set_status(manager_id: str, body: StatusChange, tenant: Tenant, store: StoreDep) -> Manager:
    """Set the status: free, lunch, busy or break (free managers get new customers first)."""
    doc = _find(store, tenant, manager_id)
    with store_errors("update the manager"):
        update_manager(store, doc, {"status": body.status})
    return _view({**doc, "status": body.status})


@router.put("/{manager_id}/online")
def set_online(manager_id: str, body: OnlineChange, tenant: Tenant, store: StoreDep) -> Manager:
    """Mark the manager logged in (true) or out (false)."""
    doc = _find(store, tenant, manager_id)
    with store_errors("update the manager"):
        update_manager(store, doc, {"online": body.online})
    return _view({**doc, "online": body.online})
