"""The fetcher's ports on MongoDB and RabbitMQ."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from fetcher.sync import Position
from shared.accounts import Account
from shared.contracts import Event
from shared.messaging import Broker
from shared.store import Store, store_errors
from shared.wire import encode_event


def _folder_key(folder: str) -> str:
    # Field names must not hold dots or start with "$".
    return folder.replace(".", "\uff0e").replace("$", "\uff04")


class MongoPositionStore:
    """Positions and progress in the account document (`sync.<folder>`, `progress`)."""

    def __init__(self, store: Store, tenant_id: str) -> None:
        self._accounts = store.accounts
        self._tenant_id = tenant_id

    def get(self, account_id: str, folder: str) -> Position | None:
        with store_errors("read position"):
            doc = self._accounts.find_one(
                {"tenant_id": self._tenant_id, "_id": account_id}, {"sync": 1}
            )
        entry = ((doc or {}).get("sync") or {}).get(_folder_key(folder))
        return Position(entry["uidvalidity"], entry["last_uid"]) if entry else None

    def save(self, account_id: str, folder: str, position: Position) -> None:
        with store_errors("save position"):
            self._accounts.update_one(
                {"tenant_id": self._tenant_id, "_id": account_id},
                {
                    "$set": {
                        f"sync.{_folder_key(folder)}": {
                            "uidvalidity": position.uidvalidity,
                            "last_uid": position.last_uid,
                        }
                    }
                },
            )

    def progress(self, account_id: str, *, done: int, total: int, now: datetime) -> None:
        with store_errors("save progress"):
            self._accounts.update_one(
                {"tenant_id": self._tenant_id, "_id": account_id},
                {
                    "$set": {
                        "progress.done": done,
                        "progress.total": total,
                        "progress.updated_at": now,
                    }
                },
            )


class BrokerEventPublisher:
    """Publishes events with publisher confirms."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker

    def publish(self, events: Sequence[tuple[Event, bytes | None]]) -> None:
        self._broker.publish([encode_event(e, payload) for e, payload in events])


class MongoAccounts:
    """Reading accounts and writing their state."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def enabled(self) -> list[Account]:
        with store_errors("list accounts"):
            return [Account.model_validate(d) for d in self._store.accounts.find({"enabled": True})]

    def set_state(self, account: Account, status: str, *, now: datetime, **fields: Any) -> None:
        with store_errors("save account state"):
            self._store.accounts.update_one(
                {"tenant_id": account.tenant_id, "_id": account.id},
                {
                    "$set": {
                        "state.status": status,
                        "state.updated_at": now,
                        **{f"state.{k}": v for k, v in fields.items()},
                    }
                },
            )
