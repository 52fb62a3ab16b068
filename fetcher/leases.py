"""Account leases as write-once terms in MongoDB: `_id` uniqueness is the only compare-and-set."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.errors import OperationFailure

from shared.accounts import Account
from shared.logging import get_logger
from shared.store import Store, insert_or_ignore, store_errors

log = get_logger("mailintake.fetcher")

LEASES_COLLECTION = "leases"
EXPIRED = datetime(1970, 1, 1, tzinfo=UTC)
KEEP_TERMS = 8  # older terms are deleted; a claim that lands on a pruned one is caught anyway


def holder_id() -> str:
    """This process's name as a lease holder: host, pid and a random part."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class Term:
    """One grant of an account's lease: to `holder` (None: released) until `until`."""

    account_id: str
    number: int
    holder: str | None
    until: datetime

    def held_by(self, holder: str, now: datetime) -> bool:
        return self.holder == holder and self.until >= now

    def free(self, now: datetime) -> bool:
        return self.holder is None or self.until < now


def _term(doc: dict[str, Any]) -> Term:
    return Term(str(doc["account_id"]), int(doc["term"]), doc.get("holder"), doc["until"])


class MongoLeases:
    """An account is fetched only by the holder of its current lease term.

    Each claim, renewal and release *inserts* the next term, `_id` `<account>:<term>`, and no
    term is ever changed. Replicas racing from the same current term collide on that `_id`:
    exactly one insert wins, on MongoDB and on FerretDB alike (FerretDB does not re-check the
    rest of an update's filter atomically, so conditional updates are no compare-and-set).
    A claim needs the current term expired or released; a renewal and a release need it held
    by us and unexpired. A holder whose renewal fails must stop fetching by its term's end.

    Terms are the fetcher replicas' own bookkeeping over every tenant's accounts (the
    supervisor weighs them all at once), so they are read by account id alone, on purpose:
    an account's `_id` is unique across tenants. A term carries its account's `tenant_id`.
    """

    def __init__(self, store: Store, holder: str, seconds: float) -> None:
        self._leases = store[LEASES_COLLECTION]
        self._accounts = store.accounts
        self.holder = holder
        self.seconds = seconds
        with store_errors("ensure lease index"):
            try:
                self._leases.create_index([("account_id", ASCENDING), ("term", DESCENDING)])
            except OperationFailure as exc:
                log.warning("index_not_created", collection=LEASES_COLLECTION, error=str(exc))

    def current(self, account_id: str) -> Term | None:
        """The account's highest term, or None when it never had a lease."""
        with store_errors("read lease"):
            doc = self._leases.find_one({"account_id": account_id}, sort=[("term", DESCENDING)])
        return _term(doc) if doc else None

    def current_terms(self, account_ids: Iterable[str]) -> dict[str, Term]:
        """The highest term of each account that has one (one query for all of them)."""
        terms: dict[str, Term] = {}
        with store_errors("read leases"):
            for doc in self._leases.find({"account_id": {"$in": list(account_ids)}}):
                term = _term(doc)
                if term.account_id not in terms or term.number > terms[term.account_id].number:
                    terms[term.account_id] = term
        return terms

    def holders(self, account_ids: Iterable[str], *, now: datetime) -> dict[str, str | None]:
        """Who holds each account's lease at `now` (None: nobody)."""
        ids = list(account_ids)
        terms = self.current_terms(ids)
        return {i: None if (t := terms.get(i)) is None or t.free(now) else t.holder for i in ids}

    def claim(self, account: Account, *, now: datetime) -> Account | None:
        """Take the lease if it is free, expired or already ours; the fresh account, or None."""
        fresh = self._enabled(account)
        if fresh is None:
            return None
        current = self.current(account.id)
        if current is not None and not (current.free(now) or current.held_by(self.holder, now)):
            return None
        won = self._grant(account, current, self.holder, now + timedelta(seconds=self.seconds))
        return fresh if won else None

    def renew(self, account: Account, *, now: datetime) -> bool:
        """Extend our unexpired lease; False when it was lost, expired or the account disabled."""
        if self._enabled(account) is None:
            return False
        current = self.current(account.id)
        if current is None or not current.held_by(self.holder, now):
            return False
        return self._grant(account, current, self.holder, now + timedelta(seconds=self.seconds))

    def release(self, account: Account) -> None:
        """Give the lease back at once (a term held by nobody), so another replica may take it."""
        current = self.current(account.id)
        if current is not None and current.holder == self.holder:
            self._grant(account, current, None, EXPIRED)

    def _enabled(self, account: Account) -> Account | None:
        query = {"tenant_id": account.tenant_id, "_id": account.id, "enabled": True}
        with store_errors("read account"):
            doc = self._accounts.find_one(query)
        return Account.model_validate(doc) if doc and doc.get("enabled") is True else None

    def _grant(
        self, account: Account, current: Term | None, holder: str | None, until: datetime
    ) -> bool:
        """Insert the term after `current`; True when ours is now the highest term."""
        number = (current.number if current else 0) + 1
        doc = {
            "_id": f"{account.id}:{number}",
            "tenant_id": account.tenant_id,
            "account_id": account.id,
            "term": number,
            "holder": holder,
            "until": until,
            "granted_at": datetime.now(UTC),
        }
        with store_errors("write lease"):
            if not insert_or_ignore(self._leases, doc):
                return False  # another replica took this term first
            old = {
                "tenant_id": account.tenant_id,
                "account_id": account.id,
                "term": {"$lte": number - KEEP_TERMS},
            }
            self._leases.delete_many(old)
        latest = self.current(account.id)  # a term above ours: we wrote into a pruned gap
        return latest is not None and latest.number == number
