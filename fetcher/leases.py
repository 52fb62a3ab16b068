"""Account leases as write-once terms in MongoDB: `_id` uniqueness is the only compare-and-set."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.errors import OperationFailure

from shared.accounts import Account
from shared.logging import get_logger
from shared.store import Store, insert_many_or_ignore, store_errors

log = get_logger("mailintake.fetcher")

LEASES_COLLECTION = "leases"
EXPIRED = datetime(1970, 1, 1, tzinfo=UTC)
KEEP_TERMS = 3  # older terms are deleted; a claim that lands on a pruned one is caught anyway


def holder_id() -> str:
    """This process's name as a lease holder: host, pid and a random part."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class Term:
    """One grant of an account's lease: to `holder` (None: released) until `until`."""

    account_id: str
    tenant_id: str
    number: int
    holder: str | None
    until: datetime

    def held_by(self, holder: str, now: datetime) -> bool:
        return self.holder == holder and self.until >= now

    def free(self, now: datetime) -> bool:
        return self.holder is None or self.until < now


def _term(doc: dict[str, Any]) -> Term:
    account_id, tenant_id = str(doc["account_id"]), str(doc["tenant_id"])
    return Term(account_id, tenant_id, int(doc["term"]), doc.get("holder"), doc["until"])


class MongoLeases:
    """An account is fetched only by the holder of its current lease term.

    Each claim, renewal and release *inserts* the next term, `_id` `<account>:<term>`, and no
    term is ever changed. Replicas racing from the same current term collide on that `_id`:
    exactly one insert wins, whatever the store (a unique `_id` is the one compare-and-set
    every MongoDB-compatible store keeps). A claim needs the current term expired or released;
    a renewal and a release need it held by us and unexpired. A holder whose renewal fails
    must stop fetching by its term's end.

    All of a replica's leases move together: a round of renewals is one insert of the next
    terms and one delete of the terms they push out of the last KEEP_TERMS, whatever the
    number of leases; a round of claims adds a read of the accounts and of their terms, and
    one of the claimed terms (a claim made from a stale read may land in a pruned gap). A
    renewal needs no read: the replica remembers the terms it was granted, and nobody else
    may write the term after an unexpired one of ours.

    Terms are the fetcher replicas' own bookkeeping over every tenant's accounts (the
    supervisor weighs them all at once), so they are read by account id alone, on purpose:
    an account's `_id` is unique across tenants. A term carries its account's `tenant_id`.
    """

    def __init__(self, store: Store, holder: str, seconds: float) -> None:
        self._leases = store[LEASES_COLLECTION]
        self._accounts = store.accounts
        self.holder = holder
        self.seconds = seconds
        self._mine: dict[str, Term] = {}  # the terms granted to us, by account
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

    def claim_all(self, accounts: Sequence[Account], *, now: datetime) -> list[Account]:
        """Take the leases of those still enabled that are free, expired or ours: the fresh
        accounts whose lease we now hold."""
        fresh = self._enabled(accounts)
        terms = self.current_terms(fresh)
        free = [
            (a.id, a.tenant_id, t.number if t else 0)
            for a in fresh.values()
            if (t := terms.get(a.id)) is None or t.free(now) or t.held_by(self.holder, now)
        ]
        written = self._grant(free, self.holder, now + timedelta(seconds=self.seconds))
        latest = self.current_terms(t.account_id for t in written)
        won = [  # not written into a gap that pruning left below a higher term
            t for t in written if (x := latest.get(t.account_id)) and x.number == t.number
        ]
        self._mine.update((t.account_id, t) for t in won)
        return [fresh[t.account_id] for t in won]

    def renew_all(self, account_ids: Iterable[str], *, now: datetime) -> set[str]:
        """Extend those of our leases that are unexpired at `now`: the ids renewed."""
        held = [self._mine[i] for i in account_ids if i in self._mine]
        live = [(t.account_id, t.tenant_id, t.number) for t in held if t.held_by(self.holder, now)]
        won = self._grant(live, self.holder, now + timedelta(seconds=self.seconds))
        self._forget(t.account_id for t in held)
        self._mine.update((t.account_id, t) for t in won)
        return {t.account_id for t in won}

    def release_all(self, account_ids: Iterable[str]) -> None:
        """Give our leases back at once (terms held by nobody), so others may take them."""
        held = [self._mine[i] for i in account_ids if i in self._mine]
        self._forget(t.account_id for t in held)
        self._grant([(t.account_id, t.tenant_id, t.number) for t in held], None, EXPIRED)

    def claim(self, account: Account, *, now: datetime) -> Account | None:
        """`claim_all` of one account."""
        return next(iter(self.claim_all([account], now=now)), None)

    def renew(self, account: Account, *, now: datetime) -> bool:
        """`renew_all` of one account."""
        return account.id in self.renew_all([account.id], now=now)

    def release(self, account: Account) -> None:
        """`release_all` of one account."""
        self.release_all([account.id])

    def _forget(self, account_ids: Iterable[str]) -> None:
        for account_id in list(account_ids):
            self._mine.pop(account_id, None)

    def _enabled(self, accounts: Sequence[Account]) -> dict[str, Account]:
        ids = [a.id for a in accounts]
        tenants = sorted({a.tenant_id for a in accounts})
        query = {"tenant_id": {"$in": tenants}, "_id": {"$in": ids}, "enabled": True}
        with store_errors("read accounts"):
            docs = list(self._accounts.find(query)) if ids else []
        fresh = (Account.model_validate(d) for d in docs if d.get("enabled") is True)
        return {a.id: a for a in fresh}

    def _grant(
        self, heads: Sequence[tuple[str, str, int]], holder: str | None, until: datetime
    ) -> list[Term]:
        """Insert the term after each (account, tenant, current term) with one command: the
        terms we wrote (another replica wrote the others first)."""
        terms = [Term(a, tenant, number + 1, holder, until) for a, tenant, number in heads]
        if not terms:
            return []
        docs = [
            {"_id": f"{t.account_id}:{t.number}", "tenant_id": t.tenant_id,
             "account_id": t.account_id, "term": t.number, "holder": holder, "until": until,
             "granted_at": datetime.now(UTC)}
            for t in terms
        ]  # fmt: skip
        with store_errors("write leases"):
            existed = insert_many_or_ignore(self._leases, docs)
            written = [t for t, d in zip(terms, docs, strict=True) if d["_id"] not in existed]
            old = [f"{t.account_id}:{t.number - KEEP_TERMS}" for t in written]
            if old:
                self._leases.delete_many({"_id": {"$in": old}})
        return written
