"""Live fetcher replicas (heartbeats in MongoDB) and each one's fair share of the accounts."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from shared.store import Store, store_errors

# The fetcher replicas' heartbeats: no tenant's data (no tenant_id), read and written by
# replica alone.
REPLICAS_COLLECTION = "fetchers"
FORGET_AFTER = 10  # lease periods after which a dead replica's heartbeat is deleted


def fair_share(accounts: int, replicas: int) -> int:
    """How many accounts one replica may hold: ceil(accounts / live replicas)."""
    return math.ceil(accounts / max(replicas, 1))


class MongoReplicas:
    """Each replica keeps `{_id: holder, until}` fresh; one not renewed by `until` is gone.

    The heartbeat is only ever written by its own replica, by `_id`, so it needs no
    compare-and-set; a stale count only delays the spread by a tick.
    """

    def __init__(self, store: Store, holder: str, seconds: float) -> None:
        self._fetchers = store[REPLICAS_COLLECTION]
        self.holder = holder
        self.seconds = seconds

    def beat(self, now: datetime) -> None:
        """Say this replica is alive until a lease period from `now`."""
        until = now + timedelta(seconds=self.seconds)
        forget = now - timedelta(seconds=self.seconds * FORGET_AFTER)
        with store_errors("write heartbeat"):
            self._fetchers.update_one(
                {"_id": self.holder}, {"$set": {"until": until, "seen_at": now}}, upsert=True
            )
            self._fetchers.delete_many({"until": {"$lt": forget}})

    def live(self, now: datetime) -> int:
        """How many replicas are alive at `now`, this one included."""
        with store_errors("count replicas"):
            others = self._fetchers.count_documents(
                {"_id": {"$ne": self.holder}, "until": {"$gte": now}}
            )
        return others + 1

    def leave(self) -> None:
        """Stop counting this replica at once (on SIGTERM)."""
        with store_errors("remove heartbeat"):
            self._fetchers.delete_one({"_id": self.holder})
