"""Account leases in MongoDB: claim, renew, release — compare-and-set on the account document."""

from __future__ import annotations

import os
import socket
import uuid
from datetime import UTC, datetime, timedelta

from pymongo import ReturnDocument

from shared.accounts import Account
from shared.store import Store, store_errors

EXPIRED = datetime(1970, 1, 1, tzinfo=UTC)


def holder_id() -> str:
    """This process's name as a lease holder: host, pid and a random part."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class MongoLeases:
    """An account is fetched only by the holder of its lease (`lease.holder`, `lease.until`).

    A lease not renewed before `until` may be claimed by any replica. Every change is one
    conditional update on the account document, so two replicas never both win.
    """

    def __init__(self, store: Store, holder: str, seconds: float) -> None:
        self._accounts = store.accounts
        self.holder = holder
        self.seconds = seconds

    def _until(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.seconds)

    def claim(self, account: Account, *, now: datetime) -> Account | None:
        """Take the lease if it is free, expired or already ours; the fresh account, or None."""
        query = {
            "tenant_id": account.tenant_id,
            "_id": account.id,
            "enabled": True,
            "$or": [
                {"lease.holder": self.holder},
                {"lease.until": {"$lt": now}},
                {"lease.until": {"$exists": False}},
            ],
        }
        update = {"$set": {"lease.holder": self.holder, "lease.until": self._until(now)}}
        with store_errors("claim lease"):
            doc = self._accounts.find_one_and_update(
                query, update, return_document=ReturnDocument.AFTER
            )
        return Account.model_validate(doc) if doc else None

    def renew(self, account: Account, *, now: datetime) -> bool:
        """Extend our lease; False when it was lost (taken over, or the account disabled)."""
        query = {
            "tenant_id": account.tenant_id,
            "_id": account.id,
            "enabled": True,
            "lease.holder": self.holder,
        }
        with store_errors("renew lease"):
            result = self._accounts.update_one(query, {"$set": {"lease.until": self._until(now)}})
        return result.matched_count == 1

    def release(self, account: Account) -> None:
        """Give the lease back at once, so another replica can take it without waiting."""
        query = {"tenant_id": account.tenant_id, "_id": account.id, "lease.holder": self.holder}
        with store_errors("release lease"):
            self._accounts.update_one(
                query, {"$set": {"lease.holder": None, "lease.until": EXPIRED}}
            )
