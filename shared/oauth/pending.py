"""Authorizations started for a client and not yet finished: state → PKCE verifier, in the store.

A state is random and single-use; the store keeps only its SHA-256 (as `_id`), with the
tenant, the account, the redirect URI and the verifier (encrypted). Taking it is one atomic
update on that `_id` (`used_at` set only where it was unset), so two finishes with one state
cannot both get the verifier. Used and expired states are removed a day after they expire,
when the tenant next starts one (no TTL index: not every MongoDB-compatible engine has them).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pymongo import ReturnDocument

from shared.accounts import Account
from shared.crypto import SecretBox
from shared.errors import PermanentError
from shared.oauth.authorize import authorization_url
from shared.oauth.pkce import AuthorizationRequest
from shared.store import Doc, Store, store_errors

COLLECTION = "oauth_states"
LIFETIME = timedelta(minutes=10)
KEPT_AFTER_EXPIRY = timedelta(days=1)


class StateRefusedError(PermanentError):
    """Raised when a state is unknown, used, expired or another account's; `reason` says which."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Started:
    """An authorization started: the URL to send the browser to, its state, when it ends."""

    url: str
    state: str = field(repr=False)
    expires_at: datetime


@dataclass(frozen=True)
class Pending:
    """A state taken: what the code's exchange needs."""

    account_id: str
    redirect_uri: str
    verifier: str = field(repr=False)


def state_id(state: str) -> str:
    """Where a state is kept: its SHA-256 (the state itself is never stored)."""
    return hashlib.sha256(state.encode("utf-8")).hexdigest()


def start(
    store: Store, box: SecretBox, account: Account, redirect_uri: str, *, now: datetime
) -> Started:
    """A new state and PKCE verifier for `account`, kept for LIFETIME; the provider's URL."""
    request = AuthorizationRequest(redirect_uri)
    url = authorization_url(account, request)
    ends = now + LIFETIME
    expires_at = ends.replace(microsecond=ends.microsecond // 1000 * 1000)  # as BSON keeps it
    doc = {
        "_id": state_id(request.state),
        "tenant_id": account.tenant_id,
        "account_id": account.id,
        "redirect_uri": redirect_uri,
        "verifier_enc": box.encrypt(request.verifier),
        "created_at": now,
        "expires_at": expires_at,
        "used_at": None,
    }
    states = store[COLLECTION]
    with store_errors("start the authorization"):
        states.delete_many(
            {"tenant_id": account.tenant_id, "expires_at": {"$lt": now - KEPT_AFTER_EXPIRY}}
        )
        states.insert_one(doc)
    return Started(url, request.state, expires_at)


def take(
    store: Store, box: SecretBox, tenant_id: str, account_id: str, state: str, *, now: datetime
) -> Pending:
    """The pending authorization of `state`, used up; StateRefusedError naming what is wrong."""
    key = {"_id": state_id(state), "tenant_id": tenant_id}
    states = store[COLLECTION]
    with store_errors("take the authorization's state"):
        doc = states.find_one_and_update(
            {**key, "account_id": account_id, "used_at": None},
            {"$set": {"used_at": now}},
            return_document=ReturnDocument.BEFORE,
        )
        if doc is None:
            raise _refusal(states.find_one(key), account_id)
    if doc["expires_at"] <= now:
        ended = doc["expires_at"]
        raise StateRefusedError(
            "expired", f"the state expired at {ended:%Y-%m-%d %H:%M:%S} UTC: start again"
        )
    return Pending(account_id, doc["redirect_uri"], box.decrypt(doc["verifier_enc"]))


def _refusal(doc: Doc | None, account_id: str) -> StateRefusedError:
    """Why a state could not be taken (another tenant's looks unknown: nothing is told of it)."""
    if doc is None:
        return StateRefusedError("unknown", "unknown state: start the authorization again")
    if doc["account_id"] != account_id:
        return StateRefusedError(
            "other_account",
            f"the state was issued for account {doc['account_id']!r}, not {account_id!r}",
        )
    used = doc["used_at"]
    return StateRefusedError(
        "used", f"the state was already used at {used:%Y-%m-%d %H:%M:%S} UTC: start again"
    )
