"""The fetcher's ports on MongoDB and RabbitMQ."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from fetcher.ports import FailureState, Outcome, Position
from shared import mailboxref
from shared.accounts import Account
from shared.contracts import Event
from shared.oauth.tokens import StoredTokens
from shared.store import Doc, Store, insert_many_or_ignore, insert_or_ignore, store_errors
from shared.wire import Outgoing, encode_event

TAKEN_COLLECTION = "fetched_mail"


def _folder_key(folder: str) -> str:
    # Field names must not hold dots or start with "$".
    return folder.replace(".", "\uff0e").replace("$", "\uff04")


class _AccountDoc:
    """Reads and writes fields of one tenant's account documents."""

    def __init__(self, store: Store, tenant_id: str) -> None:
        self._accounts = store.accounts
        self._tenant_id = tenant_id

    def _read(self, account_id: str, field: str) -> Doc:
        query = {"tenant_id": self._tenant_id, "_id": account_id}
        with store_errors(f"read {field}"):
            doc = self._accounts.find_one(query, {field: 1})
        return doc or {}

    def _set(self, account_id: str, what: str, fields: Doc) -> None:
        with store_errors(what):
            self._accounts.update_one(
                {"tenant_id": self._tenant_id, "_id": account_id}, {"$set": fields}
            )


def _position_entry(position: Position) -> Doc:
    return {
        "uidvalidity": position.uidvalidity,
        "last_uid": position.last_uid,
        "first_load_end": position.first_load_end,
    }


class MongoPositionStore(_AccountDoc):
    """Positions and progress in the account document (`sync.<folder>`, `progress`)."""

    def get(self, account_id: str, folder: str) -> Position | None:
        entry = (self._read(account_id, "sync").get("sync") or {}).get(_folder_key(folder))
        if not entry:
            return None
        end = int(entry.get("first_load_end", 0))
        return Position(entry["uidvalidity"], entry["last_uid"], end)

    def save(self, account_id: str, folder: str, position: Position) -> None:
        entry = _position_entry(position)
        self._set(account_id, "save position", {f"sync.{_folder_key(folder)}": entry})

    def begin_progress(self, account_id: str, *, remaining: int, now: datetime) -> int:
        """A load left unfinished by a restart goes on counting where it stopped.

        Mail the run had marked read but not yet counted (it died between the two) is not
        fetched again: it counts as done, so that the load still ends at its total.
        """
        prior = self._read(account_id, "progress").get("progress") or {}
        done, total = int(prior.get("done", 0)), int(prior.get("total", 0))
        base = max(done, total - remaining) if done < total else 0
        progress = {
            "done": base,
            "total": base + remaining,
            "started_at": now,
            "done_at_start": base,
            "updated_at": now,
        }
        self._set(account_id, "save progress", {"progress": progress})
        return base

    def advance(
        self, account_id: str, folder: str, position: Position, *, done: int, now: datetime
    ) -> None:
        """One update: a crash cannot leave the position ahead of the progress it counted."""
        entry = _position_entry(position)
        fields = {f"sync.{_folder_key(folder)}": entry, "progress.done": done}
        self._set(account_id, "save position", {**fields, "progress.updated_at": now})

    def deletes_pending(self, account_id: str, pending: bool) -> None:
        self._set(account_id, "save deletes pending", {"deletes_pending": pending})

    def last_publish(self, account_id: str) -> datetime | None:
        """When a batch of the account's mail was last published (its progress saved)."""
        updated = (self._read(account_id, "progress").get("progress") or {}).get("updated_at")
        if not isinstance(updated, datetime):
            return None
        return updated if updated.tzinfo else updated.replace(tzinfo=UTC)


class MongoFetchFailures(_AccountDoc):
    """Failed fetch attempts in the account document (`fetch_failures`), beside its position."""

    def load(self, account_id: str) -> FailureState:
        entry = self._read(account_id, "fetch_failures").get("fetch_failures") or {}
        suspect = entry.get("suspect") or {}
        return FailureState(
            {str(k): int(v) for k, v in (entry.get("counts") or {}).items()},
            int(suspect.get("uidvalidity", 0)),
            int(suspect.get("until", 0)),
        )

    def save(self, account_id: str, state: FailureState) -> None:
        suspect = {"uidvalidity": state.suspect_uidvalidity, "until": state.suspect_until}
        entry = {"counts": dict(state.counts), "suspect": suspect}
        self._set(account_id, "save fetch failures", {"fetch_failures": entry})


class MongoFailedMail:
    """A mail that could not be fetched, in `emails` (a document there already is kept)."""

    def __init__(self, store: Store) -> None:
        self._emails = store.emails

    def record_failed(self, document: dict[str, Any]) -> None:
        with store_errors("record a failed mail"):
            insert_or_ignore(self._emails, document)


class MongoOAuthTokens(_AccountDoc):
    """An OAuth2 account's encrypted tokens, in its document (`oauth_*` fields)."""

    def load(self, account_id: str) -> StoredTokens:
        query = {"tenant_id": self._tenant_id, "_id": account_id}
        fields = ("refresh_token_enc", "access_token_enc", "access_issued_at", "access_expires_at")
        with store_errors("read OAuth2 tokens"):
            doc = self._accounts.find_one(query, {f"oauth_{f}": 1 for f in fields}) or {}
        return StoredTokens(*(doc.get(f"oauth_{f}") for f in fields))

    def save_access(
        self, account_id: str, *, access_enc: str, issued_at: datetime, expires_at: datetime
    ) -> None:
        fields = {
            "oauth_access_token_enc": access_enc,
            "oauth_access_issued_at": issued_at,
            "oauth_access_expires_at": expires_at,
        }
        self._set(account_id, "save the access token", fields)

    def consent_ends(self, account_id: str) -> datetime | None:
        """When the provider ends the consent (`oauth_refresh_expires_at`), if it told."""
        ends = self._read(account_id, "oauth_refresh_expires_at").get("oauth_refresh_expires_at")
        return ends if isinstance(ends, datetime) else None

    def rotate_refresh(
        self, account_id: str, *, old_enc: str, new_enc: str, expires_at: datetime | None
    ) -> bool:
        """Compare-and-set: a refresh token stored meanwhile (a new authorization) stays."""
        query = {
            "tenant_id": self._tenant_id,
            "_id": account_id,
            "oauth_refresh_token_enc": old_enc,
        }
        fields = {"oauth_refresh_token_enc": new_enc, "oauth_refresh_expires_at": expires_at}
        with store_errors("save the rotated refresh token"):
            return self._accounts.update_one(query, {"$set": fields}).modified_count == 1


class MongoPop3Positions(_AccountDoc):
    """The UIDLs taken from a POP3 account, in its document (`pop3.taken`, `pop3.oversize`)."""

    def taken(self, account_id: str) -> tuple[set[str], set[str]]:
        entry = self._read(account_id, "pop3").get("pop3") or {}
        return set(entry.get("taken") or []), set(entry.get("oversize") or [])

    def save_taken(self, account_id: str, taken: set[str], oversize: set[str]) -> None:
        fields = {"pop3.taken": sorted(taken), "pop3.oversize": sorted(oversize)}
        self._set(account_id, "save UIDLs", fields)


class MongoTakenMail:
    """Fingerprints of published mail, one document each, keyed by the fingerprint."""

    def __init__(self, store: Store, tenant_id: str) -> None:
        self._taken = store[TAKEN_COLLECTION]
        self._tenant_id = tenant_id

    def known(self, account_id: str, fingerprints: Sequence[str]) -> set[str]:
        """The fingerprints already taken, with one query (by tenant and `_id`)."""
        if not fingerprints:
            return set()
        with store_errors("read fingerprints"):
            query = {"tenant_id": self._tenant_id, "_id": {"$in": list(fingerprints)}}
            return {str(d["_id"]) for d in self._taken.find(query, {"_id": 1})}

    def remember(self, account_id: str, entries: Sequence[tuple[str, str]]) -> None:
        docs = [
            {"_id": fp, "tenant_id": self._tenant_id, "account_id": account_id, "email_id": eid}
            for fp, eid in entries
        ]
        if not docs:
            return
        with store_errors("save fingerprints"):
            insert_many_or_ignore(self._taken, docs)  # already there after a crash: fine


def _outcome(doc: Doc) -> Outcome:
    place = doc.get(mailboxref.MAILBOX) or {}
    return Outcome(
        str(doc["_id"]),
        bool(doc.get("loaded")),
        folder=place.get("folder"),
        uidvalidity=place.get("uidvalidity"),
        uid=place.get("uid"),
        uidl=place.get("uidl"),
    )


class MongoMailOutcomes:
    """The account's mailbox outcomes (`mailbox_outcomes`): read, and removed once made."""

    DELETE_CHUNK = 100  # ids per delete command

    def __init__(self, store: Store, tenant_id: str) -> None:
        self._outcomes = store[mailboxref.OUTCOMES]
        self._tenant_id = tenant_id

    def pending(self, account_id: str, *, limit: int) -> list[Outcome]:
        query = {"tenant_id": self._tenant_id, "account_id": account_id}
        with store_errors("read the mailbox outcomes"):
            return [_outcome(d) for d in self._outcomes.find(query).limit(limit)]

    def done(self, account_id: str, email_ids: Sequence[str]) -> None:
        ids = list(email_ids)
        with store_errors("remove the mailbox outcomes made"):
            for start in range(0, len(ids), self.DELETE_CHUNK):
                chunk = ids[start : start + self.DELETE_CHUNK]
                self._outcomes.delete_many(
                    {"tenant_id": self._tenant_id, "account_id": account_id, "_id": {"$in": chunk}}
                )


class MessagePublisher(Protocol):
    def publish(self, messages: Sequence[Outgoing]) -> None: ...


class BrokerEventPublisher:
    """Publishes events with publisher confirms (through a Broker or the replica's pool)."""

    def __init__(self, broker: MessagePublisher) -> None:
        self._broker = broker

    def publish(self, events: Sequence[tuple[Event, bytes | None]]) -> None:
        if events:
            self._broker.publish([encode_event(e, payload) for e, payload in events])


MAILBOX_STATE_LEFT_OUT = {"sync": 0, "pop3": 0, "progress": 0, "fetch_failures": 0}


class MongoAccounts:
    """Reading accounts and writing their state."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._seen: dict[str, tuple[Doc, Account]] = {}  # each account as `enabled` last read it

    def enabled(self) -> list[Account]:
        """Every enabled account's config, secrets and state, without what the fetcher keeps
        of its mailbox (positions, the UIDLs taken, progress: each runner reads its own).

        An account whose document is as the last call read it is the same object again: a
        lease round over thousands of accounts validates only those that changed."""
        # Every tenant's, on purpose: the fetchers together serve the accounts of all tenants
        # (each account then read and written by its tenant and _id).
        seen: dict[str, tuple[Doc, Account]] = {}
        with store_errors("list accounts"):
            for doc in self._store.accounts.find({"enabled": True}, MAILBOX_STATE_LEFT_OUT):
                last = self._seen.get(doc["_id"])
                account = last[1] if last and last[0] == doc else Account.model_validate(doc)
                seen[account.id] = (doc, account)
        self._seen = seen
        return [account for _doc, account in seen.values()]

    def save_state(self, account: Account, state: dict[str, Any]) -> None:
        with store_errors("save account state"):
            self._store.accounts.update_one(
                {"tenant_id": account.tenant_id, "_id": account.id}, {"$set": {"state": state}}
            )
