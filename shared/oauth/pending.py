"""Authorizations started for a client and not yet finished: state → PKCE verifier, in the store.

A state is random and single-use; the store keeps only its SHA-256 (as `_id`), with the
tenant, the account, the redirect URI and the verifier (encrypted). Taking it inserts a mark
keyed `<sha256>:used`: `_id` uniqueness lets exactly one of two finishes with one state get
the verifier, on every MongoDB-compatible engine. States and marks are removed a day after
they expire, when the tenant next starts one (no TTL index: not every engine has them). An
account has at most MAX_STARTED authorizations started in one LIFETIME: a client that starts
them in a loop is refused instead of filling the store.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pymongo.errors import DuplicateKeyError

from shared.accounts import Account
from shared.crypto import SecretBox
from shared.errors import PermanentError
from shared.oauth.authorize import authorization_url
from shared.oauth.pkce import AuthorizationRequest
from shared.store import Doc, Store, store_errors

COLLECTION = "oauth_states"
LIFETIME = timedelta(minutes=10)
KEPT_AFTER_EXPIRY = timedelta(days=1)
MAX_STARTED = 20  # per account and LIFETIME; a person signing in needs one or two


class TooManyStartedError(PermanentError):
    """Raised when an account already has MAX_STARTED authorizations that can still be
    finished; `retry_at` is when the oldest of them ends."""

    def __init__(self, account_id: str, retry_at: datetime) -> None:
        super().__init__(
            f"account {account_id!r} has {MAX_STARTED} authorizations started in the last "
            f"{LIFETIME.seconds // 60} minutes: finish one, or start again after "
            f"{retry_at:%Y-%m-%d %H:%M:%S} UTC"
        )
        self.retry_at = retry_at


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
    }
    states = store[COLLECTION]
    open_states = {
        "tenant_id": account.tenant_id,
        "account_id": account.id,
        "verifier_enc": {"$exists": True},  # states, not their used marks
        "expires_at": {"$gt": now},
    }
    with store_errors("start the authorization"):
        states.delete_many(
            {"tenant_id": account.tenant_id, "expires_at": {"$lt": now - KEPT_AFTER_EXPIRY}}
        )
        oldest = list(states.find(open_states, {"expires_at": 1}).sort("expires_at", 1).limit(1))
        if oldest and states.count_documents(open_states) >= MAX_STARTED:
            raise TooManyStartedError(account.id, oldest[0]["expires_at"])
        states.insert_one(doc)
    return Started(url, request.state, expires_at)


def take(
    store: Store, box: SecretBox, tenant_id: str, account_id: str, state: str, *, now: datetime
) -> Pending:
    """The pending authorization of `state`, used up; StateRefusedError naming what is wrong."""
    states, key = store[COLLECTION], state_id(state)
    with store_errors("take the authorization's state"):
        doc = _takeable(states.find_one({"_id": key, "tenant_id": tenant_id}), account_id, now)
        try:
            states.insert_one(_used_mark(doc, now))
        except DuplicateKeyError:
            mark = states.find_one({"_id": used_id(key), "tenant_id": tenant_id}) or {}
            raise _used(mark.get("used_at", now)) from None
    return Pending(account_id, doc["redirect_uri"], box.decrypt(doc["verifier_enc"]))


def used_id(key: str) -> str:
    """Where a state's use is marked: taking a state is inserting this `_id`, which succeeds
    once on every MongoDB-compatible engine."""
    return f"{key}:used"


def _used_mark(doc: Doc, now: datetime) -> Doc:
    return {
        "_id": used_id(doc["_id"]),
        "tenant_id": doc["tenant_id"],
        "account_id": doc["account_id"],
        "used_at": now,
        "expires_at": doc["expires_at"],  # removed with its state
    }


def _takeable(doc: Doc | None, account_id: str, now: datetime) -> Doc:
    """The state's document, or why it cannot be taken (another tenant's looks unknown)."""
    if doc is None:
        raise StateRefusedError("unknown", "unknown state: start the authorization again")
    if doc["account_id"] != account_id:
        raise StateRefusedError(
            "other_account",
            f"the state was issued for account {doc['account_id']!r}, not {account_id!r}",
        )
    if doc["expires_at"] <= now:
        ended = doc["expires_at"]
        raise StateRefusedError(
            "expired", f"the state expired at {ended:%Y-%m-%d %H:%M:%S} UTC: start again"
        )
    return doc


def _used(at: datetime) -> StateRefusedError:
    return StateRefusedError(
        "used", f"the state was already used at {at:%Y-%m-%d %H:%M:%S} UTC: start again"
    )
